//! X.509-SVID leaf inspection per the SPIFFE X509-SVID specification.
//!
//! Chain validation (signatures, validity, path to a trust anchor) is done by rustls-webpki in
//! the `tls` room; this module checks what webpki does not: the one URI SAN holding a canonical
//! SPIFFE ID, and the leaf's basic constraints, key usage and extended key usage.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spiffe::SpiffeId;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why a certificate is not an acceptable X.509-SVID leaf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// The certificate is not well-formed DER X.509 (or has malformed or duplicate extensions).
    #[error("certificate cannot be parsed: {0}")]
    Malformed(String),
    /// The certificate has no URI subject alternative name.
    #[error("certificate has no URI SAN (an SVID carries its SPIFFE ID in exactly one URI SAN)")]
    NoUriSan,
    /// The certificate has more than one URI subject alternative name.
    #[error("certificate has {count} URI SANs; an SVID has exactly one")]
    MultipleUriSans {
        /// How many URI SANs the certificate carries.
        count: usize,
    },
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN {uri:?} is not a valid SPIFFE ID: {reason}")]
    InvalidSpiffeId {
        /// The URI as presented.
        uri: String,
        /// What the SPIFFE ID parser refused.
        reason: String,
    },
    /// The URI SAN is a SPIFFE ID that is not in canonical form (for example an upper-case trust
    /// domain); SVIDs must carry the canonical form.
    #[error("URI SAN {presented:?} is not a canonical SPIFFE ID (canonical form: {canonical:?})")]
    NotCanonical {
        /// The URI as presented.
        presented: String,
        /// The canonical form of the same ID.
        canonical: String,
    },
    /// The leaf is a CA certificate (basicConstraints cA=true).
    #[error("leaf certificate is a CA (basicConstraints cA=true)")]
    LeafIsCa,
    /// The leaf has no key usage extension.
    #[error("leaf certificate has no key usage extension")]
    MissingKeyUsage,
    /// The leaf's key usage lacks digitalSignature.
    #[error("leaf key usage lacks digitalSignature")]
    MissingDigitalSignature,
    /// The leaf's key usage includes keyCertSign.
    #[error("leaf key usage includes keyCertSign")]
    KeyCertSign,
    /// The leaf's key usage includes cRLSign.
    #[error("leaf key usage includes cRLSign")]
    CrlSign,
    /// The leaf has an extended key usage extension without serverAuth and clientAuth both.
    #[error(
        "leaf extended key usage lacks {missing} (an SVID's EKU, where present, has serverAuth and clientAuth)"
    )]
    ExtendedKeyUsage {
        /// The purpose that is missing: `serverAuth` or `clientAuth`.
        missing: &'static str,
    },
}

/// What a valid SVID leaf says about itself.
#[derive(Debug, Clone)]
pub(crate) struct LeafSvid {
    pub(crate) spiffe_id: SpiffeId,
    pub(crate) not_after: SystemTime,
    /// The leaf's validity as Unix seconds (not-before, not-after), for the verified-chain
    /// cache, so the leaf need not be parsed a second time.
    pub(crate) validity: (i64, i64),
}

/// Checks the SVID-specific properties of a leaf certificate and returns its SPIFFE ID.
pub(crate) fn inspect_leaf(der: &[u8]) -> Result<LeafSvid, SvidError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| SvidError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SvidError::Malformed(
            "trailing data after the certificate".into(),
        ));
    }
    let malformed = |e: x509_parser::error::X509Error| SvidError::Malformed(e.to_string());

    let uris: Vec<&str> = match cert.subject_alternative_name().map_err(malformed)? {
        Some(san) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    let uri = match uris.as_slice() {
        [] => return Err(SvidError::NoUriSan),
        [one] => *one,
        many => return Err(SvidError::MultipleUriSans { count: many.len() }),
    };
    let spiffe_id = SpiffeId::new(uri).map_err(|e| SvidError::InvalidSpiffeId {
        uri: uri.to_owned(),
        reason: e.to_string(),
    })?;
    let canonical = spiffe_id.to_string();
    if canonical != uri {
        return Err(SvidError::NotCanonical {
            presented: uri.to_owned(),
            canonical,
        });
    }

    if let Some(bc) = cert.basic_constraints().map_err(malformed)?
        && bc.value.ca
    {
        return Err(SvidError::LeafIsCa);
    }
    let key_usage = cert
        .key_usage()
        .map_err(malformed)?
        .ok_or(SvidError::MissingKeyUsage)?;
    if !key_usage.value.digital_signature() {
        return Err(SvidError::MissingDigitalSignature);
    }
    if key_usage.value.key_cert_sign() {
        return Err(SvidError::KeyCertSign);
    }
    if key_usage.value.crl_sign() {
        return Err(SvidError::CrlSign);
    }
    if let Some(eku) = cert.extended_key_usage().map_err(malformed)? {
        if !eku.value.server_auth {
            return Err(SvidError::ExtendedKeyUsage {
                missing: "serverAuth",
            });
        }
        if !eku.value.client_auth {
            return Err(SvidError::ExtendedKeyUsage {
                missing: "clientAuth",
            });
        }
    }

    let validity = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    let not_after = u64::try_from(validity.1)
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH);
    Ok(LeafSvid {
        spiffe_id,
        not_after,
        validity,
    })
}

/// The span of time in which every certificate of `chain` is valid, as Unix seconds
/// (latest not-before, earliest not-after); `None` if a certificate cannot be parsed.
pub(crate) fn chain_validity<'a>(chain: impl IntoIterator<Item = &'a [u8]>) -> Option<(i64, i64)> {
    let mut window = (i64::MIN, i64::MAX);
    for der in chain {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        window.0 = window.0.max(cert.validity().not_before.timestamp());
        window.1 = window.1.min(cert.validity().not_after.timestamp());
    }
    Some(window)
}
