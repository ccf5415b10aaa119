//! A token issuer for tests: mints JWTs (optionally certificate-bound), including deliberately
//! bad ones, and publishes its JWK set.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, EncodingKey};
use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::testkit::IssuedSvid;

/// Errors of the [`TokenIssuer`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenIssuerError {
    /// Key generation failed.
    #[error("key generation failed: {0}")]
    Generation(#[from] rcgen::Error),
    /// The algorithm cannot be minted here (HMAC keys are not generated).
    #[error("algorithm {0:?} is not supported by the token issuer")]
    UnsupportedAlgorithm(Algorithm),
    /// No key with this `kid`.
    #[error("no key with kid {0:?}")]
    UnknownKey(String),
    /// Signing failed (or no jsonwebtoken crypto backend is compiled in).
    #[error("signing failed: {0}")]
    Signing(String),
}

struct IssuerKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    /// The public JWK (with `kid`, `alg`, `use`).
    jwk: Value,
    /// The public key bytes a confused verifier would hold (EC point, Ed25519 key, PKCS#1
    /// RSA public key): the HMAC secret of an algorithm-confusion attack.
    public_bytes: Vec<u8>,
}

/// A development token issuer: signing keys by `kid`, and a builder for tokens.
///
/// ```
/// use secure_channel::jwt::Algorithm;
/// use secure_channel::testkit::TokenIssuer;
///
/// let issuer = TokenIssuer::new("https://issuer.test", "k1", Algorithm::ES256)?;
/// let token = issuer.token().audience("api").subject("alice").scope("read").sign()?;
/// assert_eq!(token.split('.').count(), 3);
/// let jwks = issuer.jwks(); // for `KeySource::from_jwks`, a JWKS file or a test fetcher
/// # let _ = jwks;
/// # Ok::<(), secure_channel::testkit::TokenIssuerError>(())
/// ```
pub struct TokenIssuer {
    issuer: String,
    keys: Vec<IssuerKey>,
    provider: Option<&'static CryptoProvider>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field(
                "kids",
                &self.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unix(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Reads one DER TLV at the start of `input`: (tag, content, rest).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len_bytes, after) = rest.split_at(count);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

/// The PKCS#1 RSAPrivateKey inside a PKCS#8 PrivateKeyInfo.
fn pkcs1_from_pkcs8(pkcs8: &[u8]) -> Option<&[u8]> {
    let (0x30, info, _) = der_tlv(pkcs8)? else {
        return None;
    };
    let (0x02, _, rest) = der_tlv(info)? else {
        return None;
    };
    let (0x30, _, rest) = der_tlv(rest)? else {
        return None;
    };
    let (0x04, pkcs1, _) = der_tlv(rest)? else {
        return None;
    };
    Some(pkcs1)
}

/// (n, e) of a PKCS#1 RSAPublicKey, without leading zero bytes.
fn rsa_public_components(pkcs1_public: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (0x30, seq, _) = der_tlv(pkcs1_public)? else {
        return None;
    };
    let (0x02, n, rest) = der_tlv(seq)? else {
        return None;
    };
    let (0x02, e, _) = der_tlv(rest)? else {
        return None;
    };
    let trim = |b: &[u8]| {
        let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
        b[start..].to_vec()
    };
    Some((trim(n), trim(e)))
}

fn generate(kid: &str, alg: Algorithm) -> Result<IssuerKey, TokenIssuerError> {
    let bad = || TokenIssuerError::Signing("generated key has an unexpected encoding".into());
    let (key, jwk, encoding) = match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            let (rcgen_alg, crv, len) = if alg == Algorithm::ES256 {
                (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256", 32)
            } else {
                (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384", 48)
            };
            let key = KeyPair::generate_for(rcgen_alg)?;
            let point = key.public_key_raw();
            if point.len() != 1 + 2 * len {
                return Err(bad());
            }
            let jwk = json!({
                "kty": "EC", "crv": crv,
                "x": b64(&point[1..=len]), "y": b64(&point[1 + len..]),
            });
            let encoding = EncodingKey::from_ec_der(&key.serialize_der());
            (key, jwk, encoding)
        }
        Algorithm::EdDSA => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
            let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key_raw()) });
            let encoding = EncodingKey::from_ed_der(&key.serialize_der());
            (key, jwk, encoding)
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?;
            let (n, e) = rsa_public_components(key.public_key_raw()).ok_or_else(bad)?;
            let jwk = json!({ "kty": "RSA", "n": b64(&n), "e": b64(&e) });
            let pkcs8 = key.serialize_der();
            let encoding = EncodingKey::from_rsa_der(pkcs1_from_pkcs8(&pkcs8).ok_or_else(bad)?);
            (key, jwk, encoding)
        }
        other => return Err(TokenIssuerError::UnsupportedAlgorithm(other)),
    };
    let mut jwk = jwk;
    if let Some(object) = jwk.as_object_mut() {
        object.insert("kid".into(), json!(kid));
        object.insert("alg".into(), json!(format!("{alg:?}")));
        object.insert("use".into(), json!("sig"));
    }
    let public_bytes = key.public_key_raw().to_vec();
    Ok(IssuerKey {
        kid: kid.to_owned(),
        alg,
        encoding,
        jwk,
        public_bytes,
    })
}

impl TokenIssuer {
    /// An issuer named `issuer` (the `iss` of its tokens) with one signing key.
    pub fn new(
        issuer: impl Into<String>,
        kid: impl Into<String>,
        alg: Algorithm,
    ) -> Result<Self, TokenIssuerError> {
        let mut this = Self {
            issuer: issuer.into(),
            keys: Vec::new(),
            provider: crate::crypto::default_jwt_provider(),
        };
        this.add_key(kid, alg)?;
        Ok(this)
    }

    /// Adds a signing key (rotation: publish the new JWKS, then sign with the new `kid`).
    pub fn add_key(
        &mut self,
        kid: impl Into<String>,
        alg: Algorithm,
    ) -> Result<(), TokenIssuerError> {
        let kid = kid.into();
        self.keys.retain(|k| k.kid != kid);
        self.keys.push(generate(&kid, alg)?);
        Ok(())
    }

    /// Removes a key; returns whether it was there.
    pub fn remove_key(&mut self, kid: &str) -> bool {
        let before = self.keys.len();
        self.keys.retain(|k| k.kid != kid);
        self.keys.len() != before
    }

    /// The `iss` of the tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public JWK set, as JSON (each key with `kid`, `alg` and `use: sig`).
    pub fn jwks(&self) -> String {
        json!({ "keys": self.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
    }

    /// The public JWK set as a SPIFFE JWT bundle (keys with `use: jwt-svid`).
    pub fn jwt_bundle(&self) -> String {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| {
                let mut jwk = k.jwk.clone();
                if let Some(object) = jwk.as_object_mut() {
                    object.insert("use".into(), json!("jwt-svid"));
                }
                jwk
            })
            .collect();
        json!({ "keys": keys }).to_string()
    }

    /// Starts a token signed by the first key: `iss` set, `iat` now, `exp` in 5 minutes.
    pub fn token(&self) -> TokenBuilder<'_> {
        let now = unix(SystemTime::now());
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + 300));
        TokenBuilder {
            issuer: self,
            kid: self.keys.first().map(|k| k.kid.clone()),
            header: Map::new(),
            claims,
        }
    }

    /// Signs `signing_input` exactly as given with key `kid` and that key's algorithm, and
    /// returns the token `signing_input.signature`.
    ///
    /// For odd and deliberately bad tokens whose encoding a [`TokenBuilder`] would not produce
    /// (duplicate JSON members, padded or non-canonical base64url, bytes that are not JSON):
    /// the signature is valid, so only the parsing decides. `signing_input` is normally
    /// `base64url(header).base64url(payload)`; nothing of it is checked.
    pub fn sign_input(&self, kid: &str, signing_input: &str) -> Result<String, TokenIssuerError> {
        let key = self.key(Some(kid))?;
        let signature = self.sign_raw(key.alg, &key.encoding, signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{signature}"))
    }

    fn key(&self, kid: Option<&str>) -> Result<&IssuerKey, TokenIssuerError> {
        let kid = kid.unwrap_or_default();
        self.keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| TokenIssuerError::UnknownKey(kid.to_owned()))
    }

    fn sign_raw(
        &self,
        alg: Algorithm,
        key: &EncodingKey,
        message: &[u8],
    ) -> Result<String, TokenIssuerError> {
        let provider = self
            .provider
            .ok_or_else(|| TokenIssuerError::Signing("no jsonwebtoken crypto backend".into()))?;
        let signer = (provider.signer_factory)(&alg, key)
            .map_err(|e| TokenIssuerError::Signing(e.to_string()))?;
        let signature = signer
            .try_sign(message)
            .map_err(|e| TokenIssuerError::Signing(e.to_string()))?;
        Ok(b64(&signature))
    }
}

/// A token being minted; see [`TokenIssuer::token`].
#[derive(Debug)]
#[must_use]
pub struct TokenBuilder<'a> {
    issuer: &'a TokenIssuer,
    kid: Option<String>,
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

/// The RFC 8705 thumbprint of a certificate: base64url(SHA-256(DER)).
pub fn x5t_s256(certificate: &CertificateDer<'_>) -> String {
    b64(&Sha256::digest(certificate.as_ref()))
}

impl TokenBuilder<'_> {
    /// Signs with the key `kid` (and puts it in the header).
    pub fn key(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Sets a header parameter (`typ`, `crit`, a different `kid`...) after the defaults.
    pub fn header(mut self, name: impl Into<String>, value: Value) -> Self {
        self.header.insert(name.into(), value);
        self
    }

    /// Sets `typ` in the header.
    pub fn typ(self, typ: &str) -> Self {
        self.header("typ", json!(typ))
    }

    /// Sets a claim.
    pub fn claim(mut self, name: impl Into<String>, value: Value) -> Self {
        self.claims.insert(name.into(), value);
        self
    }

    /// Removes a claim (also a default one: `iss`, `iat`, `exp`).
    pub fn without_claim(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Sets `sub`.
    pub fn subject(self, subject: &str) -> Self {
        self.claim("sub", json!(subject))
    }

    /// Sets `aud` to one string.
    pub fn audience(self, audience: &str) -> Self {
        self.claim("aud", json!(audience))
    }

    /// Sets `aud` to a list.
    pub fn audiences(self, audiences: &[&str]) -> Self {
        self.claim("aud", json!(audiences))
    }

    /// Sets `iss` (default: the issuer's name).
    pub fn issued_by(self, issuer: &str) -> Self {
        self.claim("iss", json!(issuer))
    }

    /// Sets the space-separated `scope` claim.
    pub fn scope(self, scope: &str) -> Self {
        self.claim("scope", json!(scope))
    }

    /// Sets `exp`.
    pub fn expires_at(self, time: SystemTime) -> Self {
        self.claim("exp", json!(unix(time)))
    }

    /// Sets `exp` to now plus `lifetime`.
    pub fn expires_in(self, lifetime: Duration) -> Self {
        self.expires_at(SystemTime::now() + lifetime)
    }

    /// Sets `nbf`.
    pub fn not_before(self, time: SystemTime) -> Self {
        self.claim("nbf", json!(unix(time)))
    }

    /// Sets `iat`.
    pub fn issued_at(self, time: SystemTime) -> Self {
        self.claim("iat", json!(unix(time)))
    }

    /// Binds the token to `certificate` (`cnf.x5t#S256`, RFC 8705).
    pub fn bound_to(self, certificate: &CertificateDer<'_>) -> Self {
        self.claim("cnf", json!({ "x5t#S256": x5t_s256(certificate) }))
    }

    /// Binds the token to the leaf of `svid`.
    pub fn bound_to_svid(self, svid: &IssuedSvid) -> Self {
        self.bound_to(svid.leaf())
    }

    /// Binds the token to a certificate by its SHA-256 thumbprint.
    pub fn bound_to_thumbprint(self, thumbprint: &[u8; 32]) -> Self {
        self.claim("cnf", json!({ "x5t#S256": b64(thumbprint) }))
    }

    fn parts(&self, alg: &str) -> (String, String) {
        let mut header = Map::new();
        header.insert("alg".into(), json!(alg));
        if let Some(kid) = &self.kid {
            header.insert("kid".into(), json!(kid));
        }
        for (name, value) in &self.header {
            header.insert(name.clone(), value.clone());
        }
        (
            b64(Value::Object(header).to_string().as_bytes()),
            b64(Value::Object(self.claims.clone()).to_string().as_bytes()),
        )
    }

    /// Signs the token with its key and that key's algorithm.
    pub fn sign(self) -> Result<String, TokenIssuerError> {
        let key = self.issuer.key(self.kid.as_deref())?;
        let (header, payload) = self.parts(&format!("{:?}", key.alg));
        let message = format!("{header}.{payload}");
        let signature = self
            .issuer
            .sign_raw(key.alg, &key.encoding, message.as_bytes())?;
        Ok(format!("{message}.{signature}"))
    }

    /// Bad: `alg: none` and an empty signature.
    pub fn unsigned(self) -> String {
        let (header, payload) = self.parts("none");
        format!("{header}.{payload}.")
    }

    /// Bad: `alg: HS256`, HMAC-keyed with the bytes of the key's public key (the algorithm
    /// confusion attack on verifiers that let the token pick the algorithm).
    pub fn hs256_with_public_key(self) -> Result<String, TokenIssuerError> {
        let key = self.issuer.key(self.kid.as_deref())?;
        let (header, payload) = self.parts("HS256");
        let message = format!("{header}.{payload}");
        let secret = EncodingKey::from_secret(&key.public_bytes);
        let signature = self
            .issuer
            .sign_raw(Algorithm::HS256, &secret, message.as_bytes())?;
        Ok(format!("{message}.{signature}"))
    }

    /// Bad: signed, then its payload replaced by `claims` merged over the signed ones (the
    /// signature no longer matches).
    pub fn tampered(self, changes: Map<String, Value>) -> Result<String, TokenIssuerError> {
        let mut claims = self.claims.clone();
        let token = self.sign()?;
        claims.extend(changes);
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(signature)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenIssuerError::Signing("unexpected token shape".into()));
        };
        let payload = b64(Value::Object(claims).to_string().as_bytes());
        Ok(format!("{header}.{payload}.{signature}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_helpers_refuse_garbage() {
        assert!(der_tlv(&[]).is_none());
        assert!(der_tlv(&[0x30, 0x85, 1, 2, 3, 4, 5]).is_none());
        assert!(pkcs1_from_pkcs8(&[0x30, 0x00]).is_none());
        assert!(rsa_public_components(&[0x02, 0x01, 0x01]).is_none());
    }
}
