//! Why a peer was refused in the handshake.

use std::cell::RefCell;
use std::future::Future;

use spiffe::SpiffeId;

use crate::identity::{AllowList, SvidError};

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
    #[error("certificate expired")]
    Expired,
    /// A certificate of the chain is not valid yet.
    #[error("certificate not valid yet")]
    NotValidYet,
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

impl From<webpki::Error> for ChainError {
    fn from(e: webpki::Error) -> Self {
        use webpki::Error as E;
        match e {
            E::UnknownIssuer => Self::UnknownIssuer,
            E::CertExpired { .. } => Self::Expired,
            E::CertNotValidYet { .. } => Self::NotValidYet,
            E::InvalidSignatureForPublicKey => Self::BadSignature,
            E::UnsupportedSignatureAlgorithmContext(_)
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => Self::UnsupportedAlgorithm,
            E::CaUsedAsEndEntity => Self::CaUsedAsEndEntity,
            E::RequiredEkuNotFoundContext(_) => Self::ExtendedKeyUsage,
            #[allow(deprecated)]
            E::UnsupportedSignatureAlgorithm | E::UnsupportedSignatureAlgorithmForPublicKey => {
                Self::UnsupportedAlgorithm
            }
            #[allow(deprecated)]
            E::RequiredEkuNotFound => Self::ExtendedKeyUsage,
            other => Self::Other(other.to_string()),
        }
    }
}

tokio::task_local! {
    /// The rejection of the handshake running in this task (see [`capture`]).
    static CAPTURED: RefCell<Option<PeerRejection>>;
}

/// Runs a handshake and returns, with its result, the rejection the verifier made in it.
///
/// The TLS error a verifier returns chooses the alert the peer receives, and only
/// `CertificateError::Other` (which becomes certificate_unknown) could carry the rejection: so
/// the verifier returns the error for the right alert and leaves the rejection here.
pub(crate) async fn capture<F: Future>(handshake: F) -> (F::Output, Option<PeerRejection>) {
    CAPTURED
        .scope(RefCell::new(None), async move {
            let output = handshake.await;
            let rejection = CAPTURED.with(|slot| slot.borrow_mut().take());
            (output, rejection)
        })
        .await
}

impl PeerRejection {
    /// Finds a rejection inside a handshake error returned by tokio-rustls.
    pub(crate) fn from_io(error: &std::io::Error) -> Option<Self> {
        let rustls_error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
        Self::from_rustls(rustls_error)
    }

    pub(crate) fn from_rustls(error: &rustls::Error) -> Option<Self> {
        match error {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                other.0.downcast_ref::<Self>().cloned()
            }
            rustls::Error::NoCertificatesPresented => Some(Self::NoCertificate),
            _ => None,
        }
    }

    /// The error a verifier returns to rustls, which chooses the alert the peer receives:
    /// `access_denied` for an authenticated ID that is not allowed, `unknown_ca` for a chain
    /// (or trust domain) no bundle vouches for, `bad_certificate` for anything else wrong with
    /// the certificate. The rejection itself is kept for the handshake's task ([`capture`]).
    pub(crate) fn into_rustls(self) -> rustls::Error {
        use rustls::CertificateError as E;
        let error = match &self {
            Self::NotAllowed { .. } => E::ApplicationVerificationFailure,
            Self::UnknownTrustDomain { .. }
            | Self::InvalidChain {
                reason: ChainError::UnknownIssuer,
                ..
            } => E::UnknownIssuer,
            _ => E::BadEncoding,
        };
        // Outside `capture` (the configuration used by another TLS stack) only the alert goes.
        let _ = CAPTURED.try_with(|slot| *slot.borrow_mut() = Some(self));
        rustls::Error::InvalidCertificate(error)
    }
}

/// The TLS name of an alert about a certificate and what a refused client should check, for
/// [`Error::RefusedByServer`](crate::Error::RefusedByServer).
pub(crate) fn refusal_advice(alert: rustls::AlertDescription) -> (&'static str, &'static str) {
    use rustls::AlertDescription as A;
    let name = match alert {
        A::AccessDenied => "access_denied",
        A::UnknownCA => "unknown_ca",
        A::BadCertificate => "bad_certificate",
        A::CertificateUnknown => "certificate_unknown",
        A::CertificateExpired => "certificate_expired",
        A::CertificateRevoked => "certificate_revoked",
        A::UnsupportedCertificate => "unsupported_certificate",
        A::CertificateRequired => "certificate_required",
        _ => "about its certificate",
    };
    let advice = match alert {
        A::AccessDenied => {
            "the server verified this ID and does not allow it: check that the server's allow-list (allow_client, or its admission policy) includes this SPIFFE ID"
        }
        A::UnknownCA => {
            "the server does not trust its issuer: check that the server has the trust bundle of this ID's trust domain (federation included)"
        }
        _ => CHECK_TRUST,
    };
    (name, advice)
}

const CHECK_TRUST: &str = "the server could not validate it: check that this SVID is current and chains to the bundle the server has for its trust domain";

/// Whether a TLS alert received by a client says the server refused the client's certificate.
pub(crate) fn refuses_certificate(alert: rustls::AlertDescription) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        alert,
        A::AccessDenied
            | A::UnknownCA
            | A::BadCertificate
            | A::CertificateUnknown
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::UnsupportedCertificate
            | A::CertificateRequired
    )
}

#[cfg(test)]
mod tests {
    use rustls::AlertDescription as A;

    use super::*;

    /// The certificate alerts a client reads as the server refusing its SVID, each with its TLS
    /// name; `access_denied` and `unknown_ca` have their own advice, the others say to check the
    /// SVID and the bundle. Other alerts are not refusals of the certificate.
    #[test]
    fn certificate_alerts_are_refusals_with_their_names_and_advice() {
        for (alert, name) in [
            (A::AccessDenied, "access_denied"),
            (A::UnknownCA, "unknown_ca"),
            (A::BadCertificate, "bad_certificate"),
            (A::CertificateUnknown, "certificate_unknown"),
            (A::CertificateExpired, "certificate_expired"),
            (A::CertificateRevoked, "certificate_revoked"),
            (A::UnsupportedCertificate, "unsupported_certificate"),
            (A::CertificateRequired, "certificate_required"),
        ] {
            assert!(refuses_certificate(alert), "{alert:?}");
            let (shown, advice) = refusal_advice(alert);
            assert_eq!(shown, name);
            let expected = match alert {
                A::AccessDenied => "allow-list",
                A::UnknownCA => "trust bundle of this ID's trust domain",
                _ => CHECK_TRUST,
            };
            assert!(advice.contains(expected), "{alert:?}: {advice}");
        }
        for alert in [A::HandshakeFailure, A::DecodeError, A::ProtocolVersion] {
            assert!(!refuses_certificate(alert), "{alert:?}");
            assert_eq!(
                refusal_advice(alert),
                ("about its certificate", CHECK_TRUST)
            );
        }
    }
}
