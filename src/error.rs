//! The crate's error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

use spiffe::TrustDomain;

use crate::identity::{IdMatcherError, SvidError};
use crate::tls::PeerRejection;

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

/// Everything that can go wrong in this crate.
///
/// Configuration problems name the file or field they come from ([`Location`]); handshake
/// rejections carry a [`PeerRejection`] saying what the peer presented and what was expected.
///
/// Each message already includes its cause, so the variants return no further
/// [`source`](std::error::Error::source) (printing a chain shows every cause once); the cause
/// stays reachable through the variant's fields.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A credential file could not be read (missing, unreadable).
    #[error("{location}: cannot be read: {error}")]
    Read {
        /// The file.
        location: Location,
        /// The I/O error (printed in this error's message, so not also its `source()`).
        error: io::Error,
    },
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
    /// No rustls crypto provider is available.
    #[error(
        "no rustls crypto provider: enable the `aws-lc-rs` or `ring` feature, or install a process-wide default"
    )]
    NoCryptoProvider,
    /// The key exchange choice (`SecureChannelBuilder::key_exchange`) cannot be met: the crypto
    /// provider lacks the groups, or another setting contradicts it.
    #[error("key_exchange({choice:?}) cannot be used: {reason}")]
    KeyExchange {
        /// The choice made.
        choice: crate::tls::KeyExchange,
        /// What stands in the way, and what to change.
        reason: &'static str,
    },
    /// rustls refused the TLS configuration.
    #[error("TLS configuration refused: {0}")]
    TlsConfig(rustls::Error),
    /// The SPIFFE Workload API could not be used.
    #[error("SPIFFE Workload API: {0}")]
    WorkloadApi(String),
    /// This workload refused the peer's certificate, during the handshake or after a resumed
    /// one (on a client: the server's; on a server: the client's).
    #[error("peer's certificate refused: {0}")]
    PeerRejected(PeerRejection),
    /// No TCP connection could be made (the address does not resolve, nobody listens, the
    /// network is unreachable): no TLS was spoken.
    #[error("cannot connect to {address}: {error}")]
    Connect {
        /// The address as given (`host:port`).
        address: String,
        /// The I/O error.
        error: io::Error,
    },
    /// The server refused this workload's SVID: it answered with a TLS alert about the client's
    /// certificate (`access_denied`: authenticated but not allowed; `unknown_ca`: not trusted;
    /// `bad_certificate` and others: not valid). In TLS 1.3 that alert comes just after the
    /// handshake; the client waits briefly for the server's first record to report it here.
    #[error(
        "the server refused this workload's SVID {own_id} with TLS alert {}: {}",
        crate::tls::refusal_advice(*alert).0,
        crate::tls::refusal_advice(*alert).1
    )]
    RefusedByServer {
        /// This workload's own SPIFFE ID, the one it presented.
        own_id: spiffe::SpiffeId,
        /// The alert the server sent.
        alert: rustls::AlertDescription,
    },
    /// The TLS handshake failed for another reason (I/O error, alert from the peer, protocol
    /// mismatch such as a TLS 1.2-only peer).
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    /// The channel's own SVID has expired: no handshake is made with expired credentials until
    /// the source delivers valid ones.
    #[error(
        "own SVID {spiffe_id} expired at {not_after:?}: refusing new handshakes until valid credentials arrive"
    )]
    CredentialsExpired {
        /// The SVID's SPIFFE ID.
        spiffe_id: spiffe::SpiffeId,
        /// When it expired.
        not_after: std::time::SystemTime,
    },
    /// The handshake did not finish in time.
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
}

impl From<PeerRejection> for Error {
    fn from(rejection: PeerRejection) -> Self {
        Self::PeerRejected(rejection)
    }
}
