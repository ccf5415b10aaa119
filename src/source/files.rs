//! PEM files on disk that rotate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use spiffe::TrustDomain;

use crate::error::{ConfigError, Location};
use crate::reload::{Contents, FileError, FileWatch};
use crate::source::{
    CredentialSource, Credentials, Svid, TrustBundle, TrustBundles, check_own_chain,
    parse_certificates, parse_private_key,
};

/// Builds a [`CredentialSource`] that reads PEM files and follows their changes.
///
/// The files are polled (every second by default) and compared by content, which catches every
/// way of replacing them: write-then-rename, and the Kubernetes secret-volume `..data` symlink
/// swap that file-watch events often miss. A change is applied only when the whole set validates
/// (the key matches the certificate, the certificate is an SVID, every bundle is sound and holds
/// CA certificates only, and the SVID's chain validates against the bundle of its own trust
/// domain, which must be given); otherwise
/// the last good credentials stay in use, a warning says why, and
/// [`CredentialSource::failed_reloads`] counts it. A half-written rotation (new certificate, old
/// key) is therefore skipped until the second file lands.
///
/// A file being written in place is not read half written: changed content is used only once
/// two reads a short wait apart (the poll interval, at most 100 ms) agree; at start, files that
/// keep changing are refused with [`ConfigError::Unstable`]. The next recovery after refused reloads
/// is logged.
#[derive(Debug, Clone)]
#[must_use]
pub struct FileSourceBuilder {
    cert: PathBuf,
    key: PathBuf,
    bundles: Vec<(BundleFor, PathBuf)>,
    poll_interval: Duration,
}

/// Which trust domain a bundle file is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BundleFor {
    /// The trust domain of the SVID in the certificate file, whatever it is at each load.
    Own,
    Named(TrustDomain),
}

impl CredentialSource {
    /// Credentials from PEM files: `cert` holds the SVID chain (leaf first), `key` its private key
    /// (PKCS#8, SEC1 or PKCS#1). Add one bundle file per trust domain with
    /// [`FileSourceBuilder::bundle`].
    pub fn from_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> FileSourceBuilder {
        FileSourceBuilder {
            cert: cert.into(),
            key: key.into(),
            bundles: Vec::new(),
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl FileSourceBuilder {
    /// Adds the PEM bundle (CA certificates) of `trust_domain`: the workload's own, or a
    /// federated one.
    pub fn bundle(mut self, trust_domain: TrustDomain, path: impl Into<PathBuf>) -> Self {
        self.bundles
            .push((BundleFor::Named(trust_domain), path.into()));
        self
    }

    /// Adds the PEM bundle of the trust domain of the SVID in the certificate file.
    pub fn own_bundle(mut self, path: impl Into<PathBuf>) -> Self {
        self.bundles.push((BundleFor::Own, path.into()));
        self
    }

    /// How often the files are checked for changes (default 1 s, at least 10 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Loads the files now (any problem is an error naming the file) and starts following them.
    pub fn start(self) -> Result<CredentialSource, ConfigError> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.bundles.iter().map(|(_, path)| path.clone()));
        FileWatch::new(paths, self.poll_interval).start(
            "secure-channel-files",
            move |contents| parse(contents, &self.cert, &self.key, &self.bundles),
            |credentials| CredentialSource::new("files", credentials),
        )
    }
}

impl FileError for ConfigError {
    fn unstable(path: &Path) -> Self {
        ConfigError::Unstable {
            location: Location::File(path.to_owned()),
        }
    }

    fn no_thread(error: std::io::Error) -> Self {
        ConfigError::Background {
            what: "file watcher thread",
            error,
        }
    }
}

fn parse(
    contents: &Contents,
    cert: &Path,
    key: &Path,
    bundles: &[(BundleFor, PathBuf)],
) -> Result<Credentials, ConfigError> {
    let [cert_pem, key_pem, bundle_pems @ ..] = contents.as_slice() else {
        return Err(ConfigError::NotPem {
            location: Location::File(cert.to_owned()),
            problem: "missing".into(),
        });
    };
    let cert_location = Location::File(cert.to_owned());
    let key_location = Location::File(key.to_owned());
    let chain = parse_certificates(cert_pem, &cert_location)?;
    let private_key = parse_private_key(key_pem, &key_location)?;
    let svid = Svid::load(chain, private_key, &cert_location, &key_location)?;
    let mut set = TrustBundles::new();
    for ((domain, path), pem) in bundles.iter().zip(bundle_pems) {
        let location = Location::File(path.clone());
        let certs = parse_certificates(pem, &location)?;
        let td = match domain {
            BundleFor::Own => svid.spiffe_id().trust_domain().clone(),
            BundleFor::Named(td) => td.clone(),
        };
        set.insert(TrustBundle::load(td, certs, &location)?);
    }
    // A set that can never complete a handshake is refused now, not at the first connection.
    check_own_chain(&svid, &set, &cert_location)?;
    Ok(Credentials::new(svid, set))
}
