//! The SPIFFE bundle format (SPIFFE Trust Domain and Bundle, section 4): a JWK set whose keys
//! say what they authenticate (`use`: `x509-svid`, with the CA certificate in `x5c`, or
//! `jwt-svid`), with the optional `spiffe_sequence` and `spiffe_refresh_hint`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value, json};
use spiffe::TrustDomain;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::error::{ConfigError, Location};
use crate::federation::error::BundleError;
use crate::jwt::KeySet;
use crate::source::TrustBundle;

/// The largest bundle document accepted by default (256 KiB: hundreds of authorities).
pub const DEFAULT_MAX_BUNDLE_SIZE: usize = 256 * 1024;

/// The most keys (X.509 and JWT authorities together) one bundle may hold.
const MAX_KEYS: usize = 512;

const X509_SVID: &str = "x509-svid";
const JWT_SVID: &str = "jwt-svid";

/// One trust domain's SPIFFE bundle: its X.509 authorities (at least one), its JWT
/// authorities, and the sequence number and refresh hint its publisher gave.
#[derive(Clone)]
pub struct SpiffeBundle {
    x509: TrustBundle,
    /// The JWK objects of the JWT authorities, each with `use` `jwt-svid`.
    jwt: Vec<Value>,
    sequence: Option<u64>,
    refresh_hint: Option<Duration>,
}

impl SpiffeBundle {
    /// A bundle of `x509`'s CA certificates and no JWT authority.
    pub fn new(x509: TrustBundle) -> Self {
        Self {
            x509,
            jwt: Vec::new(),
            sequence: None,
            refresh_hint: None,
        }
    }

    /// Parses a bundle document of `trust_domain`, at most `max_size` bytes.
    ///
    /// Keys whose `use` is neither `x509-svid` nor `jwt-svid` are skipped (as the format
    /// requires). Refused: a document over `max_size` or not a JSON object with a `keys`
    /// array; an `x509-svid` key without exactly one certificate in `x5c`, or whose
    /// certificate is not a CA or names another trust domain in its SPIFFE ID; `jwt-svid`
    /// keys that do not parse (or none usable among several); no X.509 authority at all
    /// (a peer could never be verified, and an `https_spiffe` endpoint never fetched again).
    pub fn parse(
        trust_domain: &TrustDomain,
        document: &[u8],
        max_size: usize,
    ) -> Result<Self, BundleError> {
        if document.len() > max_size {
            return Err(BundleError::TooLarge {
                size: document.len(),
                limit: max_size,
            });
        }
        let value: Value = serde_json::from_slice(document).map_err(|e| BundleError::NotJson {
            reason: e.to_string(),
        })?;
        let malformed = |reason: String| BundleError::Malformed { reason };
        let Some(object) = value.as_object() else {
            return Err(malformed("not a JSON object".into()));
        };
        let Some(keys) = object.get("keys").and_then(Value::as_array) else {
            return Err(malformed("no `keys` array".into()));
        };
        if keys.len() > MAX_KEYS {
            return Err(malformed(format!(
                "{} keys, more than the {MAX_KEYS} accepted",
                keys.len()
            )));
        }
        let sequence =
            match object.get("spiffe_sequence") {
                None => None,
                Some(v) => Some(v.as_u64().ok_or_else(|| {
                    malformed("`spiffe_sequence` is not an unsigned integer".into())
                })?),
            };
        let refresh_hint = match object.get("spiffe_refresh_hint") {
            None => None,
            Some(v) => Some(Duration::from_secs(v.as_u64().ok_or_else(|| {
                malformed("`spiffe_refresh_hint` is not an unsigned integer".into())
            })?)),
        };
        let mut certs = Vec::new();
        let mut jwt = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            let Some(key) = key.as_object() else {
                return Err(malformed(format!("key {index} is not a JSON object")));
            };
            match key.get("use").and_then(Value::as_str) {
                Some(X509_SVID) => certs.push(x509_authority(index, key)?),
                Some(JWT_SVID) => jwt.push(Value::Object(key.clone())),
                other => {
                    tracing::debug!(index, r#use = ?other, "bundle key of another use skipped");
                }
            }
        }
        if certs.is_empty() {
            return Err(BundleError::NoX509Authority);
        }
        let x509 = TrustBundle::load(
            trust_domain.clone(),
            certs,
            &Location::Field("spiffe bundle"),
        )
        .map_err(|error| match error {
            ConfigError::BundleTrustDomainMismatch {
                expected, found, ..
            } => BundleError::TrustDomainMismatch { expected, found },
            other => BundleError::X509Authority {
                reason: other.to_string(),
            },
        })?;
        if !jwt.is_empty() {
            KeySet::from_jwks_json(
                json!({ "keys": jwt }).to_string().as_bytes(),
                &Location::Field("spiffe bundle"),
            )
            .map_err(|e| BundleError::JwtAuthorities {
                reason: e.to_string(),
            })?;
        }
        Ok(Self {
            x509,
            jwt,
            sequence,
            refresh_hint,
        })
    }

    /// Adds JWT authorities: the keys of a JWK set document (`{"keys": [...]}`), each served
    /// with `use` `jwt-svid`.
    pub(crate) fn with_jwt_authorities(mut self, keys: Vec<Value>) -> Self {
        self.jwt = keys
            .into_iter()
            .map(|mut key| {
                if let Some(object) = key.as_object_mut() {
                    object.insert("use".into(), Value::from(JWT_SVID));
                }
                key
            })
            .collect();
        self
    }

    /// Sets the sequence number.
    #[must_use]
    pub fn with_sequence(mut self, sequence: u64) -> Self {
        self.sequence = Some(sequence);
        self
    }

    /// Sets the refresh hint (whole seconds are served).
    #[must_use]
    pub fn with_refresh_hint(mut self, hint: Duration) -> Self {
        self.refresh_hint = Some(hint);
        self
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        self.x509.trust_domain()
    }

    /// The X.509 authorities.
    pub fn x509_authorities(&self) -> &TrustBundle {
        &self.x509
    }

    /// How many JWT authorities the bundle holds.
    pub fn jwt_authority_count(&self) -> usize {
        self.jwt.len()
    }

    /// The JWT authorities as a JWK set document, `None` when there is none.
    pub fn jwt_authorities_jwks(&self) -> Option<Vec<u8>> {
        (!self.jwt.is_empty()).then(|| json!({ "keys": self.jwt }).to_string().into_bytes())
    }

    /// The publisher's sequence number (`spiffe_sequence`).
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// The publisher's refresh hint (`spiffe_refresh_hint`).
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint
    }

    /// Whether `other` holds the same authorities (sequence and hint aside).
    pub(crate) fn same_authorities(&self, other: &Self) -> bool {
        self.x509.certificates() == other.x509.certificates() && self.jwt == other.jwt
    }

    /// The keys of the document: the X.509 authorities, then the JWT authorities.
    pub(crate) fn keys(&self) -> Result<Vec<Value>, BundleError> {
        let mut keys = Vec::with_capacity(self.x509.certificates().len() + self.jwt.len());
        for cert in self.x509.certificates() {
            keys.push(x509_jwk(cert)?);
        }
        keys.extend(self.jwt.iter().cloned());
        Ok(keys)
    }

    /// The bundle document.
    pub fn to_json(&self) -> Result<Vec<u8>, BundleError> {
        let mut document = Map::new();
        document.insert("keys".into(), Value::Array(self.keys()?));
        if let Some(sequence) = self.sequence {
            document.insert("spiffe_sequence".into(), Value::from(sequence));
        }
        if let Some(hint) = self.refresh_hint {
            document.insert("spiffe_refresh_hint".into(), Value::from(hint.as_secs()));
        }
        Ok(Value::Object(document).to_string().into_bytes())
    }
}

impl std::fmt::Debug for SpiffeBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiffeBundle")
            .field("trust_domain", &self.trust_domain().as_str())
            .field("x509_authorities", &self.x509.certificates().len())
            .field("jwt_authorities", &self.jwt.len())
            .field("sequence", &self.sequence)
            .field("refresh_hint", &self.refresh_hint)
            .finish()
    }
}

/// The CA certificate of an `x509-svid` key: exactly one, in `x5c` (base64 DER).
fn x509_authority(
    index: usize,
    key: &Map<String, Value>,
) -> Result<CertificateDer<'static>, BundleError> {
    let invalid = |reason: &str| BundleError::X509Authority {
        reason: format!("key {index}: {reason}"),
    };
    let chain = key
        .get("x5c")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no `x5c` array"))?;
    let [cert] = chain.as_slice() else {
        return Err(invalid(&format!(
            "`x5c` holds {} certificates, not exactly one",
            chain.len()
        )));
    };
    let der = cert
        .as_str()
        .and_then(|b64| STANDARD.decode(b64).ok())
        .ok_or_else(|| invalid("`x5c` is not base64"))?;
    Ok(CertificateDer::from(der))
}

/// The JWK of a CA certificate: its public key (`kty` and parameters) and the certificate in
/// `x5c`, `use` `x509-svid`. JOSE libraries (go-jose, hence go-spiffe and SPIRE) check that
/// the key parameters are the certificate's.
fn x509_jwk(cert: &CertificateDer<'_>) -> Result<Value, BundleError> {
    use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384, OID_SIG_ED25519};
    let unsupported = |reason: &str| BundleError::X509Authority {
        reason: reason.to_owned(),
    };
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| unsupported(&format!("the CA certificate does not parse: {e}")))?;
    let spki = parsed.public_key();
    let mut jwk = Map::new();
    jwk.insert("use".into(), Value::from(X509_SVID));
    if spki.algorithm.algorithm == OID_SIG_ED25519 {
        jwk.insert("kty".into(), Value::from("OKP"));
        jwk.insert("crv".into(), Value::from("Ed25519"));
        jwk.insert(
            "x".into(),
            Value::from(URL_SAFE_NO_PAD.encode(&spki.subject_public_key.data)),
        );
    } else {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => {
                let trim = |bytes: &[u8]| {
                    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
                    URL_SAFE_NO_PAD.encode(&bytes[start..])
                };
                jwk.insert("kty".into(), Value::from("RSA"));
                jwk.insert("n".into(), Value::from(trim(rsa.modulus)));
                jwk.insert("e".into(), Value::from(trim(rsa.exponent)));
            }
            Ok(PublicKey::EC(point)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok());
                let (name, len) = match curve {
                    Some(oid) if oid == OID_EC_P256 => ("P-256", 32),
                    Some(oid) if oid == OID_NIST_EC_P384 => ("P-384", 48),
                    _ => {
                        return Err(unsupported(
                            "an EC key on a curve other than P-256 or P-384",
                        ));
                    }
                };
                let data = point.data();
                if data.len() != 1 + 2 * len || data.first() != Some(&0x04) {
                    return Err(unsupported("an EC key that is not an uncompressed point"));
                }
                jwk.insert("kty".into(), Value::from("EC"));
                jwk.insert("crv".into(), Value::from(name));
                jwk.insert(
                    "x".into(),
                    Value::from(URL_SAFE_NO_PAD.encode(&data[1..=len])),
                );
                jwk.insert(
                    "y".into(),
                    Value::from(URL_SAFE_NO_PAD.encode(&data[1 + len..])),
                );
            }
            _ => return Err(unsupported("a CA key that is not RSA, EC or Ed25519")),
        }
    }
    jwk.insert(
        "x5c".into(),
        Value::Array(vec![Value::from(STANDARD.encode(cert.as_ref()))]),
    );
    Ok(Value::Object(jwk))
}
