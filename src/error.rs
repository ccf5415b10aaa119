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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A credential file could not be read (missing, unreadable).
    #[error("{location}: cannot be read: {source}")]
    Read {
        /// The file.
        location: Location,
        /// The I/O error.
        #[source]
        source: io::Error,
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
        #[source]
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
    /// rustls refused the TLS configuration.
    #[error("TLS configuration refused: {0}")]
    TlsConfig(#[source] rustls::Error),
    /// The SPIFFE Workload API could not be used.
    #[error("SPIFFE Workload API: {0}")]
    WorkloadApi(String),
    /// The peer was refused during the handshake, or after a resumed handshake.
    #[error("peer refused: {0}")]
    PeerRejected(#[from] PeerRejection),
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
    Handshake(#[source] io::Error),
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
