//! X.509-SVID leaf inspection per the SPIFFE X509-SVID specification.
//!
//! Chain validation (signatures, validity, path to a trust anchor) is done by rustls-webpki in
//! the `tls` room; this module checks what webpki does not: the one URI SAN holding a canonical
//! SPIFFE ID, and the leaf's basic constraints, key usage and extended key usage.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spiffe::SpiffeId;
use x509_parser::asn1_rs::{Any, Class, Tag};
use x509_parser::certificate::Validity;
use x509_parser::error::X509Error;
use x509_parser::extensions::{
    BasicConstraints, ExtendedKeyUsage, GeneralName, KeyUsage, SubjectAlternativeName,
    X509ExtensionParser,
};
use x509_parser::nom::Parser;
use x509_parser::oid_registry::{
    OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
    OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::FromDer;

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
    /// The URI SAN is the bare trust domain (`spiffe://example.org`): an SVID's SPIFFE ID names a
    /// workload, so its path is not empty (X509-SVID 3.1 and 5.2).
    #[error(
        "URI SAN {presented:?} names a trust domain, not a workload (an SVID's SPIFFE ID has a path)"
    )]
    NoPath {
        /// The URI as presented.
        presented: String,
    },
    /// The URI SAN is longer than the SPIFFE-ID specification allows (2.3: 2048 bytes).
    #[error("URI SAN is {length} bytes long; a SPIFFE ID has at most {limit} bytes")]
    IdTooLong {
        /// The length of the URI as presented, in bytes.
        length: usize,
        /// The limit, [`MAX_SPIFFE_ID_LENGTH`].
        limit: usize,
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

/// The longest SPIFFE ID accepted, in bytes of its URI (SPIFFE-ID 2.3: implementations must
/// support 2048 bytes and should not generate more).
pub const MAX_SPIFFE_ID_LENGTH: usize = 2048;

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
    let tbs = tbs_fields(der)?;
    let extensions = svid_extensions(tbs.extensions)?;
    let spiffe_id = leaf_spiffe_id(&extensions)?;
    check_leaf_usage(extensions)?;

    let validity = (
        tbs.validity.not_before.timestamp(),
        tbs.validity.not_after.timestamp(),
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

/// Checks that `der` is an acceptable X.509-SVID leaf certificate by the SPIFFE rules and
/// returns the SPIFFE ID it carries: one URI SAN holding a canonical SPIFFE ID with a path, not a
/// CA, key usage with digitalSignature and without keyCertSign or cRLSign, extended key usage
/// (where present) with serverAuth and clientAuth.
///
/// Only the certificate itself is looked at: its validity period, signature and chain are
/// not (see [`SecureChannel::verify_client_chain`](crate::SecureChannel::verify_client_chain)).
/// The error names the rule the certificate breaks.
pub fn check_svid_leaf(der: &[u8]) -> Result<SpiffeId, SvidError> {
    inspect_leaf(der).map(|leaf| leaf.spiffe_id)
}

/// The leaf's SPIFFE ID: its one URI SAN, at most [`MAX_SPIFFE_ID_LENGTH`] bytes, canonical,
/// with a path.
fn leaf_spiffe_id(extensions: &SvidExtensions<'_>) -> Result<SpiffeId, SvidError> {
    let mut uris = extensions
        .subject_alt_name
        .iter()
        .flat_map(|san| san.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    let uri = match (uris.next(), uris.next()) {
        (None, _) => return Err(SvidError::NoUriSan),
        (Some(one), None) => one,
        (Some(_), Some(_)) => {
            return Err(SvidError::MultipleUriSans {
                count: 2 + uris.count(),
            });
        }
    };
    // The length is checked before parsing: the parser accepts longer IDs.
    if uri.len() > MAX_SPIFFE_ID_LENGTH {
        return Err(SvidError::IdTooLong {
            length: uri.len(),
            limit: MAX_SPIFFE_ID_LENGTH,
        });
    }
    let spiffe_id = SpiffeId::new(uri).map_err(|e| SvidError::InvalidSpiffeId {
        uri: uri.to_owned(),
        reason: e.to_string(),
    })?;
    if !is_canonical(&spiffe_id, uri) {
        return Err(SvidError::NotCanonical {
            presented: uri.to_owned(),
            canonical: spiffe_id.to_string(),
        });
    }
    if spiffe_id.path().is_empty() {
        return Err(SvidError::NoPath {
            presented: uri.to_owned(),
        });
    }
    Ok(spiffe_id)
}

/// The leaf's basic constraints, key usage and extended key usage, as an SVID's must be.
fn check_leaf_usage(extensions: SvidExtensions<'_>) -> Result<(), SvidError> {
    if extensions.basic_constraints.is_some_and(|bc| bc.ca) {
        return Err(SvidError::LeafIsCa);
    }
    let key_usage = extensions.key_usage.ok_or(SvidError::MissingKeyUsage)?;
    if !key_usage.digital_signature() {
        return Err(SvidError::MissingDigitalSignature);
    }
    if key_usage.key_cert_sign() {
        return Err(SvidError::KeyCertSign);
    }
    if key_usage.crl_sign() {
        return Err(SvidError::CrlSign);
    }
    if let Some(eku) = &extensions.extended_key_usage {
        if !eku.server_auth {
            return Err(SvidError::ExtendedKeyUsage {
                missing: "serverAuth",
            });
        }
        if !eku.client_auth {
            return Err(SvidError::ExtendedKeyUsage {
                missing: "clientAuth",
            });
        }
    }
    Ok(())
}

/// Whether `uri` is the canonical form of `id` (`spiffe://` + trust domain + path), compared
/// piecewise so that no string is built per handshake.
fn is_canonical(id: &SpiffeId, uri: &str) -> bool {
    uri.strip_prefix("spiffe://")
        .and_then(|rest| rest.strip_prefix(id.trust_domain_name()))
        .is_some_and(|path| path == id.path())
}

/// The span of time in which every certificate of `chain` is valid, as Unix seconds
/// (latest not-before, earliest not-after); `None` if a certificate cannot be parsed.
#[cfg_attr(
    not(fuzzing),
    allow(
        dead_code,
        reason = "the fuzzing hooks' view; the verifier reads each CA with inspect_signing_cert"
    )
)]
pub(crate) fn chain_validity<'a>(chain: impl IntoIterator<Item = &'a [u8]>) -> Option<(i64, i64)> {
    let mut window = (i64::MIN, i64::MAX);
    for der in chain {
        let validity = tbs_fields(der).ok()?.validity;
        window.0 = window.0.max(validity.not_before.timestamp());
        window.1 = window.1.min(validity.not_after.timestamp());
    }
    Some(window)
}

/// What the verifier reads of a CA certificate on a validated path (not a leaf).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SigningCert {
    /// The certificate's validity as Unix seconds (not-before, not-after).
    pub(crate) validity: (i64, i64),
    /// Whether its key usage extension is present and asserts keyCertSign (X509-SVID 4.3,
    /// RFC 5280 6.1.4 (n)): the bit every certificate that signs another must carry.
    pub(crate) key_cert_sign: bool,
}

/// Reads the validity and key usage of a CA certificate of a path rustls-webpki validated.
pub(crate) fn inspect_signing_cert(der: &[u8]) -> Result<SigningCert, SvidError> {
    let tbs = tbs_fields(der)?;
    let extensions = svid_extensions(tbs.extensions)?;
    Ok(SigningCert {
        validity: (
            tbs.validity.not_before.timestamp(),
            tbs.validity.not_after.timestamp(),
        ),
        key_cert_sign: extensions.key_usage.is_some_and(|ku| ku.key_cert_sign()),
    })
}

/// The fields of a certificate's `TBSCertificate` that the SVID rules read, borrowed from its
/// DER: the validity and the encoded extensions.
///
/// Only the structure is walked (`Any` elements of the `TBSCertificate` sequence, no names,
/// keys or algorithms decoded): rustls-webpki parses and validates the whole certificate
/// afterwards, so decoding what it checks a second time would only cost the handshake.
struct TbsFields<'a> {
    validity: Validity,
    /// The DER of the `Extensions` sequence's elements (empty without extensions).
    extensions: &'a [u8],
}

fn malformed(what: impl std::fmt::Display) -> SvidError {
    SvidError::Malformed(what.to_string())
}

/// One DER element of the expected universal `tag` from `input`, and what follows it.
fn element<'a>(input: &'a [u8], tag: Tag, what: &str) -> Result<(&'a [u8], Any<'a>), SvidError> {
    let (rest, any) = Any::from_der(input).map_err(|e| malformed(format!("{what}: {e}")))?;
    if any.class() != Class::Universal || any.tag() != tag {
        return Err(malformed(format!(
            "{what}: unexpected element {:?}",
            any.tag()
        )));
    }
    Ok((rest, any))
}

fn tbs_fields(der: &[u8]) -> Result<TbsFields<'_>, SvidError> {
    let (rest, certificate) = element(der, Tag::Sequence, "certificate")?;
    if !rest.is_empty() {
        return Err(malformed("trailing data after the certificate"));
    }
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }; the
    // last two are webpki's.
    let (_, tbs) = element(certificate.data, Tag::Sequence, "tbsCertificate")?;
    let mut fields = tbs.data;
    // version [0] EXPLICIT, optional.
    let (rest, first) = Any::from_der(fields).map_err(|e| malformed(format!("version: {e}")))?;
    if first.class() == Class::ContextSpecific && first.tag() == Tag(0) {
        fields = rest;
    }
    let (fields, _serial) = element(fields, Tag::Integer, "serialNumber")?;
    let (fields, _signature) = element(fields, Tag::Sequence, "signature")?;
    let (fields, _issuer) = element(fields, Tag::Sequence, "issuer")?;
    let (fields, validity) =
        Validity::from_der(fields).map_err(|e| malformed(format!("validity: {e}")))?;
    let (fields, _subject) = element(fields, Tag::Sequence, "subject")?;
    let (mut fields, _spki) = element(fields, Tag::Sequence, "subjectPublicKeyInfo")?;
    let mut extensions: &[u8] = &[];
    // issuerUniqueID [1], subjectUniqueID [2], extensions [3]: optional, in this order.
    let mut last_tag = 0;
    while !fields.is_empty() {
        let (rest, any) =
            Any::from_der(fields).map_err(|e| malformed(format!("tbsCertificate: {e}")))?;
        let Tag(tag) = any.tag();
        if any.class() != Class::ContextSpecific || tag <= last_tag || tag > 3 {
            return Err(malformed(
                "tbsCertificate: unexpected element after the key",
            ));
        }
        if tag == 3 {
            let (rest, sequence) = element(any.data, Tag::Sequence, "extensions")?;
            if !rest.is_empty() {
                return Err(malformed("extensions: trailing data"));
            }
            extensions = sequence.data;
        }
        last_tag = tag;
        fields = rest;
    }
    Ok(TbsFields {
        validity,
        extensions,
    })
}

/// The four extensions the SVID rules read; each may appear once.
#[derive(Default)]
struct SvidExtensions<'a> {
    subject_alt_name: Option<SubjectAlternativeName<'a>>,
    basic_constraints: Option<BasicConstraints>,
    key_usage: Option<KeyUsage>,
    extended_key_usage: Option<ExtendedKeyUsage<'a>>,
}

/// Decodes one extension value completely (no trailing bytes).
fn decode<'a, T: FromDer<'a, X509Error>>(value: &'a [u8], name: &str) -> Result<T, SvidError> {
    match T::from_der(value) {
        Ok(([], decoded)) => Ok(decoded),
        Ok(_) => Err(malformed(format!("{name}: trailing data"))),
        Err(e) => Err(malformed(format!("{name}: {e}"))),
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), SvidError> {
    if slot.replace(value).is_some() {
        return Err(malformed(format!("duplicate {name} extension")));
    }
    Ok(())
}

fn svid_extensions(mut input: &[u8]) -> Result<SvidExtensions<'_>, SvidError> {
    let mut found = SvidExtensions::default();
    let mut parser = X509ExtensionParser::new().with_deep_parse_extensions(false);
    while !input.is_empty() {
        let (rest, extension) = parser
            .parse(input)
            .map_err(|e| malformed(format!("extension: {e}")))?;
        input = rest;
        let (oid, value) = (&extension.oid, extension.value);
        if *oid == OID_X509_EXT_SUBJECT_ALT_NAME {
            let name = "subjectAltName";
            set_once(&mut found.subject_alt_name, decode(value, name)?, name)?;
        } else if *oid == OID_X509_EXT_BASIC_CONSTRAINTS {
            let name = "basicConstraints";
            set_once(&mut found.basic_constraints, decode(value, name)?, name)?;
        } else if *oid == OID_X509_EXT_KEY_USAGE {
            let name = "keyUsage";
            set_once(&mut found.key_usage, decode(value, name)?, name)?;
        } else if *oid == OID_X509_EXT_EXTENDED_KEY_USAGE {
            let name = "extendedKeyUsage";
            set_once(&mut found.extended_key_usage, decode(value, name)?, name)?;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rcgen::{CertificateParams, CustomExtension, KeyPair, KeyUsagePurpose, SanType};
    use x509_parser::prelude::X509Certificate;

    use super::*;

    const ID: &str = "spiffe://example.org/web";

    fn params(uris: &[&str]) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.subject_alt_names = uris
            .iter()
            .map(|uri| SanType::URI((*uri).try_into().unwrap()))
            .collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params
    }

    fn der(params: CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn malformed_reason(der: &[u8]) -> String {
        match inspect_leaf(der) {
            Err(SvidError::Malformed(reason)) => reason,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn reads_the_spiffe_id_and_validity() {
        let der = der(params(&[ID]));
        let leaf = inspect_leaf(&der).unwrap();
        assert_eq!(leaf.spiffe_id.to_string(), ID);
        // The same window x509-parser's full parse reads.
        let (_, full) = X509Certificate::from_der(&der).unwrap();
        let expected = (
            full.validity().not_before.timestamp(),
            full.validity().not_after.timestamp(),
        );
        assert_eq!(leaf.validity, expected);
        assert_eq!(
            leaf.not_after,
            UNIX_EPOCH + Duration::from_secs(expected.1 as u64)
        );
        assert_eq!(chain_validity([der.as_slice()]), Some(expected));
    }

    #[test]
    fn counts_every_uri_san() {
        let der = der(params(&[
            ID,
            "spiffe://example.org/a",
            "spiffe://example.org/b",
        ]));
        assert_eq!(
            inspect_leaf(&der).unwrap_err(),
            SvidError::MultipleUriSans { count: 3 }
        );
    }

    #[test]
    fn refuses_a_duplicate_extension() {
        // A second subjectAltName extension (2.5.29.17) naming another ID.
        let mut params = params(&[ID]);
        let second = der(self::params(&["spiffe://example.org/admin"]));
        let (_, parsed) = X509Certificate::from_der(&second).unwrap();
        let san = parsed
            .extensions()
            .iter()
            .find(|e| e.oid == OID_X509_EXT_SUBJECT_ALT_NAME)
            .unwrap();
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            san.value.to_vec(),
        )];
        let der = der(params);
        assert!(malformed_reason(&der).contains("duplicate subjectAltName"));
    }

    #[test]
    fn refuses_extension_values_with_trailing_or_malformed_bytes() {
        // keyUsage digitalSignature, then one byte too many.
        let mut trailing = params(&[ID]);
        trailing.key_usages = Vec::new();
        trailing.custom_extensions = vec![CustomExtension::from_oid_content(
            &[2, 5, 29, 15],
            vec![0x03, 0x02, 0x07, 0x80, 0x00],
        )];
        assert!(malformed_reason(&der(trailing)).contains("keyUsage: trailing data"));
        // A subjectAltName whose sequence is cut short.
        let mut cut = params(&[]);
        cut.custom_extensions = vec![CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            vec![0x30, 0x05, 0x86, 0x01],
        )];
        assert!(malformed_reason(&der(cut)).contains("subjectAltName"));
    }

    #[test]
    fn refuses_trailing_data_and_garbage() {
        let mut der = der(params(&[ID]));
        der.push(0);
        assert!(malformed_reason(&der).contains("trailing data"));
        assert!(!malformed_reason(b"").is_empty());
        assert!(!malformed_reason(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_empty());
        assert_eq!(chain_validity([&b"\x30\x00"[..]]), None);
    }

    #[test]
    fn every_truncation_is_refused_without_panic() {
        let der = der(params(&[ID]));
        for len in 0..der.len() {
            assert!(
                inspect_leaf(&der[..len]).is_err(),
                "a certificate cut to {len} bytes was accepted"
            );
        }
    }

    #[test]
    fn refuses_elements_out_of_order_after_the_key() {
        // Re-encode the TBSCertificate with the extensions [3] followed by a [1] element.
        let der = der(params(&[ID]));
        let (_, certificate) = Any::from_der(&der).unwrap();
        let (after_tbs, tbs) = Any::from_der(certificate.data).unwrap();
        let mut fields = tbs.data.to_vec();
        fields.extend_from_slice(&[0x81, 0x01, 0x00]);
        let mut tbs_der = vec![0x30];
        push_length(&mut tbs_der, fields.len());
        tbs_der.extend_from_slice(&fields);
        let mut content = tbs_der;
        content.extend_from_slice(after_tbs);
        let mut cert = vec![0x30];
        push_length(&mut cert, content.len());
        cert.extend_from_slice(&content);
        assert!(malformed_reason(&cert).contains("unexpected element"));
    }

    /// Re-encodes `der` with its `TBSCertificate`'s content replaced by `edit(content)`; the
    /// signature no longer matches, which the SVID rules do not read (webpki does).
    fn with_tbs_fields(der: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let (_, certificate) = Any::from_der(der).unwrap();
        let (after_tbs, tbs) = Any::from_der(certificate.data).unwrap();
        let mut fields = tbs.data.to_vec();
        edit(&mut fields);
        let mut content = vec![0x30];
        push_length(&mut content, fields.len());
        content.extend_from_slice(&fields);
        content.extend_from_slice(after_tbs);
        let mut cert = vec![0x30];
        push_length(&mut cert, content.len());
        cert.extend_from_slice(&content);
        cert
    }

    /// The offset of the extensions element (`[3]`) in a `TBSCertificate`'s content.
    fn extensions_offset(fields: &[u8]) -> usize {
        let mut rest = fields;
        loop {
            let (next, any) = Any::from_der(rest).unwrap();
            if any.class() == Class::ContextSpecific && any.tag() == Tag(3) {
                return fields.len() - rest.len();
            }
            rest = next;
        }
    }

    #[test]
    fn the_re_encoding_alone_keeps_a_leaf_valid() {
        // The baseline for the malformed-DER tests below: only their one edit is refused.
        let der = der(params(&[ID]));
        let same = with_tbs_fields(&der, |_| {});
        assert_eq!(inspect_leaf(&same).unwrap().spiffe_id.to_string(), ID);
    }

    #[test]
    fn refuses_an_element_of_the_right_class_and_the_wrong_tag() {
        // The serial number (after the 5-byte version) as an OCTET STRING: universal, tag 4.
        let der = with_tbs_fields(&der(params(&[ID])), |fields| {
            assert_eq!(fields[5], 0x02);
            fields[5] = 0x04;
        });
        assert!(malformed_reason(&der).contains("serialNumber"));
    }

    #[test]
    fn refuses_an_element_of_the_right_tag_number_and_the_wrong_class() {
        // The serial number as [APPLICATION 2]: tag number 2 like INTEGER, another class.
        let der = with_tbs_fields(&der(params(&[ID])), |fields| {
            fields[5] = 0x42;
        });
        assert!(malformed_reason(&der).contains("serialNumber"));
    }

    #[test]
    fn refuses_a_version_with_another_context_tag() {
        // [1] where the version [0] belongs is no version: the serial number is expected there.
        let der = with_tbs_fields(&der(params(&[ID])), |fields| {
            assert_eq!(fields[0], 0xa0);
            fields[0] = 0xa1;
        });
        assert!(malformed_reason(&der).contains("serialNumber"));
    }

    #[test]
    fn accepts_unique_ids_before_the_extensions_and_refuses_a_tag_above_them() {
        // issuerUniqueID [1] and subjectUniqueID [2] may precede the extensions [3].
        let der = der(params(&[ID]));
        let with_ids = with_tbs_fields(&der, |fields| {
            let at = extensions_offset(fields);
            fields.splice(at..at, [0x81, 0x01, 0x00, 0x82, 0x01, 0x00]);
        });
        assert_eq!(inspect_leaf(&with_ids).unwrap().spiffe_id.to_string(), ID);
        // Nothing after them: a [4] element is refused.
        let with_four =
            with_tbs_fields(&der, |fields| fields.extend_from_slice(&[0x84, 0x01, 0x00]));
        assert!(malformed_reason(&with_four).contains("unexpected element"));
    }

    #[test]
    fn an_extended_key_usage_needs_both_purposes_and_may_be_absent() {
        use rcgen::ExtendedKeyUsagePurpose as Eku;
        let with = |purposes: Vec<Eku>| {
            let mut params = params(&[ID]);
            params.extended_key_usages = purposes;
            inspect_leaf(&der(params))
        };
        assert!(with(vec![Eku::ServerAuth, Eku::ClientAuth]).is_ok());
        assert!(with(vec![]).is_ok());
        assert_eq!(
            with(vec![Eku::ClientAuth]).unwrap_err(),
            SvidError::ExtendedKeyUsage {
                missing: "serverAuth"
            }
        );
        assert_eq!(
            with(vec![Eku::ServerAuth]).unwrap_err(),
            SvidError::ExtendedKeyUsage {
                missing: "clientAuth"
            }
        );
    }

    #[test]
    fn refuses_a_non_canonical_id() {
        assert_eq!(
            inspect_leaf(&der(params(&["spiffe://Example.org/web"]))).unwrap_err(),
            SvidError::NotCanonical {
                presented: "spiffe://Example.org/web".into(),
                canonical: "spiffe://example.org/web".into(),
            }
        );
    }

    #[test]
    fn refuses_a_bare_trust_domain_as_the_id() {
        let der = der(params(&["spiffe://example.org"]));
        assert_eq!(
            inspect_leaf(&der).unwrap_err(),
            SvidError::NoPath {
                presented: "spiffe://example.org".into()
            }
        );
    }

    #[test]
    fn accepts_an_id_of_2048_bytes_and_refuses_2049() {
        let prefix = "spiffe://example.org/";
        let at_limit = format!(
            "{prefix}{}",
            "a".repeat(MAX_SPIFFE_ID_LENGTH - prefix.len())
        );
        assert_eq!(at_limit.len(), 2048);
        let leaf = inspect_leaf(&der(params(&[&at_limit]))).unwrap();
        assert_eq!(leaf.spiffe_id.to_string(), at_limit);
        let over = format!("{at_limit}b");
        assert_eq!(
            inspect_leaf(&der(params(&[&over]))).unwrap_err(),
            SvidError::IdTooLong {
                length: 2049,
                limit: 2048
            }
        );
    }

    fn push_length(out: &mut Vec<u8>, len: usize) {
        match len {
            0..0x80 => out.push(len as u8),
            0x80..0x100 => out.extend_from_slice(&[0x81, len as u8]),
            _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        }
    }
}
