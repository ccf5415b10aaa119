//! `svid inspect`: what an SVID says and whether the crate would accept it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secure_channel::identity::check_svid_leaf;
use secure_channel::testkit::DevCa;
use secure_channel::{
    Credentials, IdMatcher, MemorySource, SecureChannel, TrustBundle, TrustBundles,
};
use serde_json::json;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::cli::{SvidCommand, SvidInspect};
use crate::failure::{Failure, Outcome};
use crate::text::{human_duration, unix_rfc3339};

/// Runs `svid ...`.
pub(crate) fn run(command: SvidCommand) -> Outcome {
    match command {
        SvidCommand::Inspect(args) => inspect(&args),
    }
}

/// One certificate of the chain, as shown.
struct CertSummary {
    subject: String,
    issuer: String,
    serial: String,
    not_before: i64,
    not_after: i64,
    is_ca: bool,
    uris: Vec<String>,
}

fn inspect(args: &SvidInspect) -> Outcome {
    let chain = read_chain(&args.cert)?;
    let summaries = chain
        .iter()
        .enumerate()
        .map(|(index, cert)| {
            summarize(cert).map_err(|e| {
                Failure::invalid(
                    args.cert.display(),
                    format!("certificate {index} cannot be parsed: {e}"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let Some(leaf) = summaries.first() else {
        return Err(Failure::invalid(args.cert.display(), "no certificate"));
    };

    let now = SystemTime::now();
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    // The SVID rules on the leaf, then its validity period.
    let leaf_check = check_svid_leaf(chain[0].as_ref());
    let time_problem = if now_secs < leaf.not_before {
        Some(format!(
            "not valid yet: valid from {}",
            unix_rfc3339(leaf.not_before)
        ))
    } else if now_secs > leaf.not_after {
        Some(format!("expired at {}", unix_rfc3339(leaf.not_after)))
    } else {
        None
    };
    let svid_problem = match (&leaf_check, &time_problem) {
        (Err(rule), _) => Some(rule.to_string()),
        (Ok(_), Some(problem)) => Some(problem.clone()),
        (Ok(_), None) => None,
    };
    // The chain against the bundle, as a handshake checks it.
    let chains = match (&args.bundle, &leaf_check) {
        (None, _) => None,
        (Some(bundle), Ok(id)) => Some(check_chain(&chain, id, bundle)?),
        (Some(_), Err(_)) => Some(Err(
            "not checked: the leaf is not an SVID, so it names no trust domain".to_owned(),
        )),
    };

    let valid = svid_problem.is_none() && chains.as_ref().is_none_or(Result::is_ok);
    if args.json {
        let certificates: Vec<_> = summaries
            .iter()
            .map(|c| {
                json!({
                    "subject": c.subject,
                    "issuer": c.issuer,
                    "serial": c.serial,
                    "not_before": unix_rfc3339(c.not_before),
                    "not_after": unix_rfc3339(c.not_after),
                    "is_ca": c.is_ca,
                    "uris": c.uris,
                })
            })
            .collect();
        let out = json!({
            "file": args.cert.display().to_string(),
            "spiffe_id": leaf_check.as_ref().ok().map(ToString::to_string),
            "not_before": unix_rfc3339(leaf.not_before),
            "not_after": unix_rfc3339(leaf.not_after),
            "valid_svid": svid_problem.is_none(),
            "svid_problem": svid_problem,
            "chains_to_bundle": chains.as_ref().map(Result::is_ok),
            "chain_problem": chains.as_ref().and_then(|c| c.as_ref().err()),
            "bundle": args.bundle.as_ref().map(|b| b.display().to_string()),
            "valid": valid,
            "chain": certificates,
        });
        println!("{out:#}");
    } else {
        match &leaf_check {
            Ok(id) => println!("SPIFFE ID:   {id}"),
            Err(_) => println!("SPIFFE ID:   (none)"),
        }
        let remaining = u64::try_from(leaf.not_after.saturating_sub(now_secs)).unwrap_or(0);
        println!(
            "validity:    {} to {}{}",
            unix_rfc3339(leaf.not_before),
            unix_rfc3339(leaf.not_after),
            if time_problem.is_none() {
                format!(" ({} left)", human_duration(Duration::from_secs(remaining)))
            } else {
                String::new()
            }
        );
        match &svid_problem {
            None => println!("X.509-SVID:  valid"),
            Some(problem) => println!("X.509-SVID:  INVALID: {problem}"),
        }
        match (&chains, &args.bundle) {
            (Some(Ok(())), Some(bundle)) => {
                println!("bundle:      chains to {}", bundle.display());
            }
            (Some(Err(problem)), Some(bundle)) => {
                println!(
                    "bundle:      DOES NOT CHAIN to {}: {problem}",
                    bundle.display()
                );
            }
            _ => println!("bundle:      not checked (--bundle PEM checks the chain)"),
        }
        println!("chain:");
        for (index, c) in summaries.iter().enumerate() {
            println!(
                "  [{index}] subject {}{}",
                c.subject,
                if c.is_ca { " (CA)" } else { "" }
            );
            println!("      issuer  {}", c.issuer);
            println!("      serial  {}", c.serial);
            println!(
                "      valid   {} to {}",
                unix_rfc3339(c.not_before),
                unix_rfc3339(c.not_after)
            );
            for uri in &c.uris {
                println!("      URI SAN {uri}");
            }
        }
    }
    if valid {
        Ok(())
    } else {
        Err(Failure::Negative)
    }
}

/// The certificates of `path`: PEM blocks, or one DER certificate.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, Failure> {
    let bytes = std::fs::read(path).map_err(|e| Failure::invalid(path.display(), e))?;
    let pem: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match pem {
        Ok(chain) if !chain.is_empty() => Ok(chain),
        Ok(_) if X509Certificate::from_der(&bytes).is_ok() => Ok(vec![CertificateDer::from(bytes)]),
        Ok(_) => Err(Failure::invalid(
            path.display(),
            "no PEM CERTIFICATE block, and not a DER certificate",
        )),
        Err(e) => Err(Failure::invalid(path.display(), format!("bad PEM: {e}"))),
    }
}

fn summarize(cert: &CertificateDer<'_>) -> Result<CertSummary, String> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).map_err(|e| e.to_string())?;
    let uris = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some((*uri).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertSummary {
        subject: parsed.subject().to_string(),
        issuer: parsed.issuer().to_string(),
        serial: parsed.raw_serial_as_string(),
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
        is_ca: parsed.is_ca(),
        uris,
    })
}

/// The trust domain of the throwaway identity that the inspection channel presents (it never
/// connects anywhere): `.invalid` is reserved, so no real trust domain is shadowed.
const INSPECTOR_TRUST_DOMAIN: &str = "secure-channel-inspect.invalid";

/// Whether `chain` validates against the bundle at `path` for `id`'s trust domain, checked by
/// the crate's own verifier (a channel's, without a connection). `Err(Failure)` for a bundle
/// file that cannot be used; `Ok(Err(why))` for a chain that does not validate.
fn check_chain(
    chain: &[CertificateDer<'static>],
    id: &secure_channel::SpiffeId,
    path: &Path,
) -> Result<Result<(), String>, Failure> {
    let pem = std::fs::read(path).map_err(|e| Failure::invalid(path.display(), e))?;
    let bundle = TrustBundle::from_pem(id.trust_domain().clone(), &pem)
        .map_err(|e| Failure::invalid(format!("--bundle {}", path.display()), e))?;
    let setup = || -> Result<SecureChannel, String> {
        let ca = DevCa::new(INSPECTOR_TRUST_DOMAIN).map_err(|e| e.to_string())?;
        let own = ca
            .svid(&format!("spiffe://{INSPECTOR_TRUST_DOMAIN}/inspector"))
            .issue()
            .and_then(|issued| Ok(issued.to_svid()?))
            .map_err(|e| e.to_string())?;
        let bundles = TrustBundles::new()
            .with(ca.bundle().map_err(|e| e.to_string())?)
            .with(bundle);
        let source = MemorySource::new(Credentials::new(own, bundles));
        let everyone =
            IdMatcher::parse(&id.trust_domain().id_string()).map_err(|e| e.to_string())?;
        SecureChannel::builder(&source)
            .allow_client(everyone)
            .build()
            .map_err(|e| e.to_string())
    };
    let channel = setup().map_err(|e| Failure::Invalid(format!("cannot set up the check: {e}")))?;
    Ok(channel
        .verify_client_chain(chain)
        .map(drop)
        .map_err(|rejection| rejection.to_string()))
}
