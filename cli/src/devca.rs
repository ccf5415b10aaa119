//! `dev-ca init` and `dev-ca issue`: a development CA on disk. NOT FOR PRODUCTION: the CA key
//! lies in a plain file next to what it signs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use secure_channel::testkit::DevCa;

use crate::cli::{DevCaCommand, DevCaInit, DevCaIssue};
use crate::failure::{Failure, Outcome};

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const WARNING: &str = "NOT FOR PRODUCTION: a development CA whose key is a plain file.";

/// Runs `dev-ca ...`.
pub(crate) fn run(command: DevCaCommand) -> Outcome {
    match command {
        DevCaCommand::Init(args) => init(&args),
        DevCaCommand::Issue(args) => issue(&args),
    }
}

fn init(args: &DevCaInit) -> Outcome {
    let key_path = args.dir.join(CA_KEY);
    if key_path.exists() && !args.force {
        return Err(Failure::invalid(
            key_path.display(),
            "a CA already exists here (--force replaces it)",
        ));
    }
    let ca = DevCa::new(&args.trust_domain)
        .map_err(|e| Failure::invalid(format!("--trust-domain {}", args.trust_domain), e))?;
    std::fs::create_dir_all(&args.dir).map_err(|e| Failure::invalid(args.dir.display(), e))?;
    write_file(&key_path, &ca.key_pem(), true)?;
    let cert_path = args.dir.join(CA_CERT);
    write_file(&cert_path, &ca.certificate_pem(), false)?;
    eprintln!("secure-channel: {WARNING}");
    println!(
        "development CA for trust domain {} (bundle {}, key {})",
        ca.trust_domain(),
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

fn issue(args: &DevCaIssue) -> Outcome {
    let cert_path = args.dir.join(CA_CERT);
    let key_path = args.dir.join(CA_KEY);
    let cert = std::fs::read_to_string(&cert_path)
        .map_err(|e| Failure::invalid(cert_path.display(), e))?;
    let key =
        std::fs::read_to_string(&key_path).map_err(|e| Failure::invalid(key_path.display(), e))?;
    let ca = DevCa::from_pem(&cert, &key).map_err(|e| Failure::invalid(args.dir.display(), e))?;
    if args.id.trust_domain() != ca.trust_domain() {
        return Err(Failure::Invalid(format!(
            "{} is not in the CA's trust domain {}",
            args.id,
            ca.trust_domain()
        )));
    }
    let name = match &args.name {
        Some(name) => name.clone(),
        None => args.id.path().trim_start_matches('/').replace('/', "-"),
    };
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) || name == "ca" {
        return Err(Failure::Usage(format!(
            "{name:?} cannot name the SVID's files (--name NAME, without / and not \"ca\")"
        )));
    }
    let now = SystemTime::now();
    let mut builder = ca.svid(&args.id.to_string()).validity(
        now - Duration::from_secs(60),
        now + Duration::from_secs(args.ttl),
    );
    for dns in &args.dns_names {
        builder = builder.dns_name(dns);
    }
    let issued = builder
        .issue()
        .map_err(|e| Failure::invalid(args.id.to_string(), e))?;
    let svid_cert: PathBuf = args.dir.join(format!("{name}.pem"));
    let svid_key: PathBuf = args.dir.join(format!("{name}.key"));
    write_file(&svid_key, &issued.key_pem(), true)?;
    write_file(&svid_cert, &issued.chain_pem(), false)?;
    eprintln!("secure-channel: {WARNING}");
    println!(
        "{} (valid {}s): certificate {}, key {}",
        args.id,
        args.ttl,
        svid_cert.display(),
        svid_key.display()
    );
    Ok(())
}

/// Writes `content` to `path` by a rename (a watching proxy never reads half a file); keys are
/// readable by their owner only.
fn write_file(path: &Path, content: &str, secret: bool) -> Outcome {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        // A file left by an earlier failure might be readable by others: start afresh.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = secret;
        let mut file = options.open(&tmp)?;
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| Failure::invalid(path.display(), e))
}
