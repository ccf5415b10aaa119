//! How a [`PeerRejection`] meets rustls: the alert it chooses, the task-local capture that
//! carries it out of the verifier, and what a refused client is told.

use std::cell::RefCell;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::UnixTime;

use crate::identity::{ChainError, PeerRejection};

impl From<webpki::Error> for ChainError {
    fn from(e: webpki::Error) -> Self {
        use webpki::Error as E;
        match e {
            E::UnknownIssuer => Self::UnknownIssuer,
            E::CertExpired { time, not_after } => Self::Expired {
                now: system_time(time),
                not_after: system_time(not_after),
            },
            E::CertNotValidYet { time, not_before } => Self::NotValidYet {
                now: system_time(time),
                not_before: system_time(not_before),
            },
            E::InvalidSignatureForPublicKey => Self::BadSignature,
            E::UnsupportedSignatureAlgorithmContext(_)
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => Self::UnsupportedAlgorithm,
            E::CaUsedAsEndEntity => Self::CaUsedAsEndEntity,
            E::RequiredEkuNotFoundContext(_) => Self::ExtendedKeyUsage,
            E::CertRevoked => Self::Revoked,
            E::CrlExpired { time, next_update } => Self::RevocationListExpired {
                now: system_time(time),
                next_update: system_time(next_update),
            },
            E::InvalidCrlSignatureForPublicKey => {
                Self::RevocationList("its signature does not verify with the issuer's key".into())
            }
            E::IssuerNotCrlSigner => {
                Self::RevocationList("its issuer lacks keyUsage cRLSign".into())
            }
            other @ (E::UnsupportedCrlSignatureAlgorithmContext(_)
            | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)
            | E::UnsupportedCrlIssuingDistributionPoint
            | E::UnsupportedIndirectCrl
            | E::UnsupportedDeltaCrl
            | E::UnsupportedRevocationReasonsPartitioning
            | E::UnsupportedRevocationReason
            | E::UnsupportedCrlVersion
            | E::InvalidCrlNumber
            | E::UnknownRevocationStatus) => Self::RevocationList(other.to_string()),
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

fn system_time(time: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(time.as_secs())
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
    /// `access_denied` for an authenticated ID that is not allowed or is denied, `unknown_ca`
    /// for a chain (or trust domain) no bundle vouches for, `certificate_revoked` for a
    /// certificate on a revocation list, `bad_certificate` for anything else wrong with the
    /// certificate (an expired or unusable revocation list included: the fault is the
    /// verifier's stale list, not the peer's certificate, so not `unknown_ca`). The rejection
    /// itself is kept for the handshake's task ([`capture`]).
    pub(crate) fn into_rustls(self) -> rustls::Error {
        use rustls::CertificateError as E;
        let error = match &self {
            // A deny-list entry is an authorization decision on an authenticated peer, like the
            // allow-list, so the same `access_denied`: it tells the holder of a stolen or
            // compromised credential no more than a peer that is merely not allowed learns.
            Self::NotAllowed { .. } | Self::Denied { .. } => E::ApplicationVerificationFailure,
            Self::InvalidChain {
                reason: ChainError::Revoked,
                ..
            } => E::Revoked,
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
/// [`ConnectionError::RefusedByServer`](crate::ConnectionError::RefusedByServer).
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
        A::CertificateRevoked => {
            "the server found this certificate, or a CA certificate of its chain, on a revocation list: obtain a new SVID from a CA that is not revoked"
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
                A::CertificateRevoked => "revocation list",
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
