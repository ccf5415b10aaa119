//! Configuration errors: building a channel and loading its material. What goes wrong on a
//! connection is a [`ConnectionError`](crate::ConnectionError), in the transport room.

use std::fmt;
use std::io;
use std::path::PathBuf;

use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

use spiffe::TrustDomain;

use crate::identity::{IdMatcherError, SvidError};

/// Where a piece of credential material came from, so errors can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A file on disk.
    File(PathBuf),
    /// A value handed to a builder or constructor, named by its parameter.
    Field(&'static str),
    /// A response of the SPIFFE Workload API.
    WorkloadApi,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Field(name) => write!(f, "field `{name}`"),
            Self::WorkloadApi => f.write_str("Workload API response"),
        }
    }
}

/// A channel, credential source or connector that cannot be built or loaded as configured.
///
/// Each names the file or field it comes from ([`Location`]).
///
/// Each message already includes its cause, so the variants return no further
/// [`source`](std::error::Error::source) (printing a chain shows every cause once); the cause
/// stays reachable through the variant's fields.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A credential file could not be read (missing, unreadable).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A credential file kept changing while being read at start: it is being written. Write
    /// the new file beside the old one and rename it over it.
    #[error("{location}: kept changing while being read (is it being written?)")]
    Unstable {
        /// The file.
        location: Location,
    },
    /// The input holds no PEM block of the expected kind, or a PEM block is malformed.
    #[error("{location}: not PEM: {problem}")]
    NotPem {
        /// Where the input came from.
        location: Location,
        /// What was expected or what is wrong.
        problem: String,
    },
    /// The private key cannot be loaded (unsupported or malformed).
    #[error("{location}: private key cannot be used: {reason}")]
    InvalidKey {
        /// Where the key came from.
        location: Location,
        /// Why it was refused.
        reason: String,
    },
    /// The private key does not belong to the SVID's leaf certificate.
    #[error("{location}: private key does not match the SVID certificate")]
    KeyMismatch {
        /// Where the key came from.
        location: Location,
    },
    /// The certificate is not an X.509-SVID.
    #[error("{location}: certificate is not an X.509-SVID: {reason}")]
    NotSvid {
        /// Where the certificate came from.
        location: Location,
        /// What disqualifies it.
        reason: SvidError,
    },
    /// A trust bundle holds no certificates.
    #[error("{location}: bundle for trust domain {trust_domain} is empty")]
    EmptyBundle {
        /// Where the bundle came from.
        location: Location,
        /// The trust domain it was declared for.
        trust_domain: TrustDomain,
    },
    /// A bundle declared for one trust domain holds a CA that names another trust domain.
    #[error(
        "{location}: bundle declared for trust domain {expected} holds a CA of trust domain {found}"
    )]
    BundleTrustDomainMismatch {
        /// Where the bundle came from.
        location: Location,
        /// The trust domain the bundle was declared for.
        expected: TrustDomain,
        /// The trust domain the CA's URI SAN names.
        found: String,
    },
    /// A bundle holds a certificate that is not a CA: often an SVID or server certificate passed
    /// where the CA certificate belongs (the `tls.crt`/`ca.crt` mix-up).
    #[error(
        "{location}: certificate #{index} is not a CA certificate (basicConstraints cA is not set): a bundle holds the trust domain's CA certificates; was a leaf certificate (such as tls.crt) given instead of the CA (ca.crt)?"
    )]
    NotCa {
        /// Where the bundle came from.
        location: Location,
        /// The certificate's position in the bundle, from 0.
        index: usize,
    },
    /// No bundle was given for the trust domain of the workload's own SVID.
    #[error(
        "{location}: no trust bundle for the SVID's own trust domain {trust_domain}: add its CA certificates (for files, `.own_bundle(path)` or `.bundle(trust_domain, path)`)"
    )]
    MissingOwnBundle {
        /// Where the SVID came from.
        location: Location,
        /// The SVID's trust domain.
        trust_domain: TrustDomain,
    },
    /// The workload's own SVID does not validate against the bundle of its trust domain, so no
    /// peer of that domain would accept it.
    #[error(
        "{location}: the SVID does not validate against the bundle of its trust domain {trust_domain} ({reason}): check that the bundle holds the CA that issued it, and that the certificate file carries the intermediates after the leaf"
    )]
    SvidNotTrusted {
        /// Where the SVID came from.
        location: Location,
        /// The SVID's trust domain.
        trust_domain: TrustDomain,
        /// What chain validation reported.
        reason: String,
    },
    /// A bundle certificate cannot serve as a trust anchor.
    #[error("{location}: CA certificate #{index} cannot be used as a trust anchor: {reason}")]
    InvalidTrustAnchor {
        /// Where the bundle came from.
        location: Location,
        /// The certificate's position in the bundle, from 0.
        index: usize,
        /// Why webpki refused it.
        reason: String,
    },
    /// A SPIFFE ID matcher is malformed or unsafe.
    #[error(transparent)]
    InvalidMatcher(#[from] IdMatcherError),
    /// An authority given to a connector (`expect_server_at`) is not `host:port`.
    #[error("authority {authority:?}: {problem}")]
    InvalidAuthority {
        /// The text given.
        authority: String,
        /// What is wrong with it.
        problem: String,
    },
    /// No rustls crypto provider is available.
    #[error(
        "no rustls crypto provider: enable the `aws-lc-rs` or `ring` feature, or install a process-wide default"
    )]
    NoCryptoProvider,
    /// The key exchange choice (`SecureChannelBuilder::key_exchange`) cannot be met: the crypto
    /// provider lacks the groups, or another setting contradicts it.
    #[error("key_exchange({choice}) cannot be used: {reason}")]
    KeyExchange {
        /// The choice made, as the name of its [`KeyExchange`](crate::tls::KeyExchange) variant.
        choice: &'static str,
        /// What stands in the way, and what to change.
        reason: &'static str,
    },
    /// rustls refused the TLS configuration.
    #[error("TLS configuration refused: {0}")]
    TlsConfig(rustls::Error),
    /// A background task or thread (a file watcher) could not be started.
    #[error("{what}: cannot be started: {error}")]
    Background {
        /// What was to be started.
        what: &'static str,
        /// Why not.
        error: io::Error,
    },
    /// The SPIFFE Workload API gave no usable X.509 credentials.
    #[error("Workload API at {endpoint}: {problem}")]
    WorkloadApi {
        /// The endpoint, as configured or as `SPIFFE_ENDPOINT_SOCKET` named it.
        endpoint: String,
        /// What went wrong.
        problem: WorkloadApiProblem,
    },
}

impl From<Infallible> for ConfigError {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

/// What went wrong with the SPIFFE Workload API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadApiProblem {
    /// No X.509-SVID arrived in time (no agent at the endpoint, or no registration entry for
    /// this workload).
    #[error("no X.509-SVID received within {timeout:?}")]
    InitialTimeout {
        /// How long was waited.
        timeout: Duration,
    },
    /// The Workload API client failed (the endpoint is malformed, the agent refused or the
    /// stream broke), as the `spiffe` crate describes it.
    #[error("{message}")]
    Client {
        /// The client's description.
        message: String,
    },
    /// The agent sent no bundle for the SVID's own trust domain.
    #[error("no bundle for the SVID's own trust domain {trust_domain}")]
    MissingOwnBundle {
        /// The SVID's trust domain.
        trust_domain: TrustDomain,
    },
}

/// The Workload API endpoint as errors name it: the one configured, or what
/// `SPIFFE_ENDPOINT_SOCKET` says.
#[cfg(feature = "workload-api")]
pub(crate) fn workload_api_endpoint(configured: Option<&str>) -> String {
    match configured {
        Some(endpoint) => endpoint.to_owned(),
        None => format!(
            "SPIFFE_ENDPOINT_SOCKET={}",
            std::env::var("SPIFFE_ENDPOINT_SOCKET").unwrap_or_default()
        ),
    }
}

/// A file could not be read (missing, unreadable): the one shape of this error in the crate,
/// whether the file holds credentials, a JWK set or a policy.
#[derive(Debug, thiserror::Error)]
#[error("file {}: cannot be read: {error}", path.display())]
#[non_exhaustive]
pub struct ReadError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error (printed in this error's message, so not also its `source()`).
    pub error: io::Error,
}

/// Reads a whole file, naming it on failure.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    std::fs::read(path).map_err(|error| ReadError {
        path: path.to_owned(),
        error,
    })
}
