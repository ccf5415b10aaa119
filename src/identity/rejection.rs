//! Why a peer was refused: pure types, filled in by the TLS verifiers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spiffe::SpiffeId;

use crate::identity::{AllowList, DenyEntry, SvidError};

/// Why a peer's certificate was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PeerRejection {
    /// The peer presented no certificate.
    #[error("no certificate presented")]
    NoCertificate,
    /// The peer's leaf certificate is not an X.509-SVID.
    #[error("certificate is not an X.509-SVID: {0}")]
    NotSvid(SvidError),
    /// There is no bundle for the trust domain named in the peer's SPIFFE ID.
    #[error("{presented}: no trust bundle for trust domain {}", .presented.trust_domain())]
    UnknownTrustDomain {
        /// The SPIFFE ID the peer presented (not authenticated).
        presented: SpiffeId,
    },
    /// The chain does not validate against the bundle of the peer's trust domain.
    #[error("{presented}: chain does not validate against the bundle of {}: {reason}", .presented.trust_domain())]
    InvalidChain {
        /// The SPIFFE ID the peer presented (not authenticated).
        presented: SpiffeId,
        /// What failed.
        reason: ChainError,
    },
    /// The peer is authenticated, but a deny-list names its ID or its leaf certificate.
    /// Deny-lists are consulted before the allow-list, so a denied peer is refused whatever
    /// the allow-list says.
    #[error("{presented} is denied by deny-list entry {entry}")]
    Denied {
        /// The peer's (authenticated) SPIFFE ID.
        presented: SpiffeId,
        /// The entry that denies it.
        entry: DenyEntry,
    },
    /// The peer is authenticated, but its ID is not among those expected.
    #[error("{presented} is not allowed; {}", expectation(.expected))]
    NotAllowed {
        /// The peer's (authenticated) SPIFFE ID.
        presented: SpiffeId,
        /// What would have been accepted.
        expected: AllowList,
    },
    /// A resumed session was refused because its stored peer certificate no longer validates.
    #[error("resumed session refused: {0}")]
    ResumedSessionInvalid(Box<PeerRejection>),
}

impl PeerRejection {
    /// A short, bounded label for metrics and logs.
    pub(crate) fn metric_reason(&self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::NotSvid(_) => "not_svid",
            Self::UnknownTrustDomain { .. } => "unknown_trust_domain",
            Self::InvalidChain { .. } => "invalid_chain",
            Self::Denied { .. } => "denied",
            Self::NotAllowed { .. } => "not_allowed",
            Self::ResumedSessionInvalid(_) => "resumed_session_invalid",
        }
    }
}

/// What a refusal says was expected: the list, or which call is missing when it is empty.
fn expectation(expected: &AllowList) -> String {
    if expected.is_empty() {
        "no peer ID is expected at all: a client names its server with `expect_server` or \
         `expect_server_at`, a server its clients with `allow_client` or `allow_clients_by_policy`"
            .to_owned()
    } else {
        format!("expected one of {expected}")
    }
}

/// Why a certificate chain did not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// No path to a CA of the bundle.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// A certificate of the chain has expired.
    #[error(
        "certificate expired: not valid after {} (Unix time), checked at {} ({}s later)",
        unix(*.not_after), unix(*.now), seconds_between(*.not_after, *.now)
    )]
    Expired {
        /// The time of the check.
        now: SystemTime,
        /// The end of the certificate's validity.
        not_after: SystemTime,
    },
    /// A certificate of the chain is not valid yet.
    #[error(
        "certificate not valid yet: not valid before {} (Unix time), checked at {} ({}s earlier)",
        unix(*.not_before), unix(*.now), seconds_between(*.now, *.not_before)
    )]
    NotValidYet {
        /// The time of the check.
        now: SystemTime,
        /// The start of the certificate's validity.
        not_before: SystemTime,
    },
    /// A signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A signature algorithm or key is not accepted (for example SHA-1, or RSA under 2048 bits).
    #[error("unsupported signature algorithm or key")]
    UnsupportedAlgorithm,
    /// The leaf is a CA certificate.
    #[error("CA certificate used as end entity")]
    CaUsedAsEndEntity,
    /// The extended key usage does not allow this use.
    #[error("extended key usage does not allow this use")]
    ExtendedKeyUsage,
    /// A CA certificate on the validated path does not assert keyUsage keyCertSign (or has no
    /// key usage extension): it may not sign certificates (X509-SVID 4.3, RFC 5280 6.1.4 (n)).
    /// rustls-webpki does not check this; the verifier does, on the path webpki used.
    #[error(
        "intermediate CA at depth {depth} of the validated path (1 = the leaf's issuer) lacks keyUsage keyCertSign"
    )]
    MissingKeyCertSign {
        /// The intermediate's position on the path: 1 for the leaf's issuer, then upwards.
        depth: usize,
    },
    /// A certificate of the chain (the leaf or an intermediate) is on the revocation list
    /// (CRL) of its issuer.
    #[error("certificate revoked: its serial number is on its issuer's revocation list")]
    Revoked,
    /// The revocation list (CRL) of an issuer on the chain is past its nextUpdate time: whether
    /// the certificate was revoked since is unknown, so the chain is refused (fail closed) until
    /// a current list arrives, unless the lists were configured to ignore nextUpdate.
    #[error(
        "revocation list expired: its nextUpdate is {} (Unix time), checked at {} ({}s later); load a current CRL",
        unix(*.next_update), unix(*.now), seconds_between(*.next_update, *.now)
    )]
    RevocationListExpired {
        /// The time of the check.
        now: SystemTime,
        /// The nextUpdate time of the list.
        next_update: SystemTime,
    },
    /// The revocation list (CRL) of an issuer on the chain cannot be used: its signature does not
    /// verify with the issuer's key, the issuer lacks keyUsage cRLSign, or it uses a feature
    /// rustls-webpki does not support. The chain is refused (fail closed).
    #[error("revocation list cannot be used: {0}")]
    RevocationList(String),
    /// The peer presented more intermediate certificates than the verifier examines.
    #[error("{presented} intermediate certificates presented; at most {limit} are accepted")]
    TooManyIntermediates {
        /// How many intermediates the peer sent (the leaf not counted).
        presented: usize,
        /// The most accepted.
        limit: usize,
    },
    /// Any other failure, as webpki describes it.
    #[error("{0}")]
    Other(String),
}

/// Whole seconds since the Unix epoch (0 for earlier times).
fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whole seconds from `earlier` to `later` (0 if they are the other way round).
fn seconds_between(earlier: SystemTime, later: SystemTime) -> u64 {
    later
        .duration_since(earlier)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A denied peer has its own bounded metric label, and the message names the entry.
    #[test]
    fn a_denied_peer_has_its_own_metric_reason_and_names_the_entry() {
        let presented = SpiffeId::new("spiffe://example.org/web").unwrap();
        let denied = PeerRejection::Denied {
            presented: presented.clone(),
            entry: DenyEntry::CertificateSha256([0xab; 32]),
        };
        assert_eq!(denied.metric_reason(), "denied");
        assert_eq!(
            denied.to_string(),
            format!(
                "spiffe://example.org/web is denied by deny-list entry sha256:{}",
                "ab".repeat(32)
            )
        );
        let revoked = PeerRejection::InvalidChain {
            presented,
            reason: ChainError::Revoked,
        };
        assert_eq!(revoked.metric_reason(), "invalid_chain");
    }
}
