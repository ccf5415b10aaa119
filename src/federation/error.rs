//! Why a bundle was refused, why a fetch failed, why a client or server could not be built.

use std::time::Duration;

use spiffe::{SpiffeId, TrustDomain};

use crate::identity::PeerRejection;

/// Why a bundle document was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The document is larger than accepted.
    #[error("the bundle is {size} bytes or more, more than the {limit} accepted")]
    TooLarge {
        /// Its size (at least this much was received).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The document is not JSON.
    #[error("the bundle is not JSON: {reason}")]
    NotJson {
        /// The parser's complaint.
        reason: String,
    },
    /// The document is JSON, but not a SPIFFE bundle.
    #[error("not a SPIFFE bundle: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// An X.509 authority is unusable (not exactly one certificate, not a CA, unparsable).
    #[error("an X.509 authority is unusable: {reason}")]
    X509Authority {
        /// What is wrong.
        reason: String,
    },
    /// A CA certificate of the bundle names another trust domain in its SPIFFE ID.
    #[error("the bundle is for trust domain {expected}, but a CA certificate names {found}")]
    TrustDomainMismatch {
        /// The trust domain the bundle was fetched for.
        expected: TrustDomain,
        /// The trust domain the certificate names.
        found: String,
    },
    /// The bundle holds no X.509 authority.
    #[error("the bundle holds no X.509 authority")]
    NoX509Authority,
    /// The JWT authorities do not parse, or none of several is usable.
    #[error("the JWT authorities are unusable: {reason}")]
    JwtAuthorities {
        /// What is wrong.
        reason: String,
    },
}

/// Why fetching a bundle from a bundle endpoint failed. The last good bundle stays in use.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No connection, or TLS failed for a reason other than the server's identity.
    #[error("{url}: cannot fetch: {reason}")]
    Connect {
        /// The endpoint URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server's certificate was refused: for `https_spiffe`, not an SVID of the expected
    /// endpoint SPIFFE ID that validates against the endpoint trust domain's current bundle.
    #[error("{url}: the endpoint was not authenticated: {rejection}")]
    EndpointRefused {
        /// The endpoint URL.
        url: String,
        /// Why the server's SVID was refused.
        rejection: PeerRejection,
    },
    /// The server answered with another status than 200.
    #[error("{url}: answered HTTP {status}")]
    Status {
        /// The endpoint URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// No complete answer within the fetch timeout.
    #[error("{url}: no complete answer within {timeout:?}")]
    Timeout {
        /// The endpoint URL.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The answer is not an acceptable bundle (too large, garbage, another trust domain's).
    #[error("{url}: bundle refused: {error}")]
    Bundle {
        /// The endpoint URL.
        url: String,
        /// Why.
        error: BundleError,
    },
    /// The bundle's `spiffe_sequence` is lower than the last applied one's (or absent after
    /// one was given): an old bundle replayed, or a publisher that lost its state.
    #[error("{url}: spiffe_sequence went backwards: {presented:?} after {last}")]
    SequenceBackwards {
        /// The endpoint URL.
        url: String,
        /// The sequence of the last bundle applied.
        last: u64,
        /// The sequence presented.
        presented: Option<u64>,
    },
}

impl FetchError {
    /// A short, bounded label for metrics.
    pub(crate) fn metric_reason(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::EndpointRefused { .. } => "endpoint_refused",
            Self::Status { .. } => "status",
            Self::Timeout { .. } => "timeout",
            Self::Bundle {
                error: BundleError::TooLarge { .. },
                ..
            } => "too_large",
            Self::Bundle {
                error: BundleError::TrustDomainMismatch { .. },
                ..
            } => "trust_domain_mismatch",
            Self::Bundle { .. } => "invalid_bundle",
            Self::SequenceBackwards { .. } => "sequence_backwards",
        }
    }
}

/// Why a bundle endpoint client or server could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FederationError {
    /// The endpoint URL is not an `https` URL with a host.
    #[error("bundle endpoint URL {url:?}: {problem}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// The endpoint SPIFFE ID is not in the trust domain of the bootstrap bundle.
    #[error(
        "endpoint SPIFFE ID {endpoint_id} is not in trust domain {trust_domain}, whose bundle the endpoint serves"
    )]
    EndpointOutsideTrustDomain {
        /// The endpoint SPIFFE ID.
        endpoint_id: SpiffeId,
        /// The trust domain of the bootstrap bundle.
        trust_domain: TrustDomain,
    },
    /// A setting is out of range.
    #[error("{field}: {problem}")]
    InvalidSetting {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The first fetch failed.
    #[error("first fetch of the bundle of {trust_domain}: {error}")]
    FirstFetch {
        /// The remote trust domain.
        trust_domain: TrustDomain,
        /// Why it failed.
        error: Box<FetchError>,
    },
    /// TLS could not be configured.
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    /// The background refresh needs a tokio runtime.
    #[error("no tokio runtime to run the bundle refresh in: {reason}")]
    NoRuntime {
        /// Why.
        reason: String,
    },
}
