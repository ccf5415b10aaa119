//! Verification keys parsed from JWK sets, one algorithm per key.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::Location;
use crate::jwt::JwtConfigError;

/// The largest JWK set document accepted (1 MiB).
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The most keys one JWK set may hold.
pub(crate) const MAX_KEYS: usize = 256;

/// What kind of public key a JWK holds; decides which algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    /// Whether `alg` can be verified with a key of this type.
    pub(crate) fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (
                Self::Rsa,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (Self::P256, Algorithm::ES256)
                | (Self::P384, Algorithm::ES384)
                | (Self::Ed25519, Algorithm::EdDSA)
        )
    }
}

/// One public key, with the algorithm it is bound to when its JWK names one.
pub(crate) struct VerifyingKey {
    kid: String,
    alg: Option<Algorithm>,
    key_type: KeyType,
    key: DecodingKey,
}

impl VerifyingKey {
    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// Whether this key may verify a token whose header says `alg`: the JWK's own `alg`, when
    /// present, must be the same, and the key type must fit.
    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|own| own == alg) && self.key_type.fits(alg)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

/// A set of verification keys by `kid`.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
    /// The JWK objects of the usable keys, as given (for serving them again: the SPIFFE bundle
    /// endpoint).
    jwks: Vec<Value>,
}

impl KeySet {
    /// Parses a JWK set (`{"keys": [...]}`, which also covers a SPIFFE JWT bundle).
    ///
    /// Keys this crate cannot or must not use are skipped with a warning: symmetric (`oct`)
    /// keys, encryption keys (`use` other than `sig` or `jwt-svid`), keys without `kid`,
    /// unsupported curves, RSA keys under 2048 bits, keys whose `alg` does not fit their type.
    /// The set is refused when it is not JSON, holds two usable keys with one `kid`, or holds no
    /// usable key at all (so that a broken document never replaces a good set with nothing).
    pub(crate) fn from_jwks_json(
        bytes: &[u8],
        location: &Location,
    ) -> Result<Self, JwtConfigError> {
        let refuse = |reason: String| JwtConfigError::InvalidJwks {
            location: location.clone(),
            reason,
        };
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(refuse(format!(
                "{} bytes, more than the {MAX_JWKS_BYTES} accepted",
                bytes.len()
            )));
        }
        let document: Value =
            serde_json::from_slice(bytes).map_err(|e| refuse(format!("not JSON: {e}")))?;
        let Some(keys) = document.get("keys").and_then(Value::as_array) else {
            return Err(refuse("no `keys` array".into()));
        };
        if keys.len() > MAX_KEYS {
            return Err(refuse(format!(
                "{} keys, more than the {MAX_KEYS} accepted",
                keys.len()
            )));
        }
        let mut set = HashMap::new();
        let mut usable = Vec::new();
        for (index, jwk) in keys.iter().enumerate() {
            match parse_jwk(jwk) {
                Ok(key) => {
                    if set.contains_key(&key.kid) {
                        return Err(refuse(format!("two keys with kid {:?}", key.kid)));
                    }
                    set.insert(key.kid.clone(), Arc::new(key));
                    usable.push(jwk.clone());
                }
                Err(reason) => {
                    tracing::warn!(%location, index, %reason, "JWK skipped");
                }
            }
        }
        if set.is_empty() {
            return Err(refuse("no usable key".into()));
        }
        Ok(Self {
            keys: set,
            jwks: usable,
        })
    }

    /// The JWK objects of the usable keys, as the document gave them.
    pub(crate) fn jwks(&self) -> &[Value] {
        &self.jwks
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.keys.get(kid)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

fn string<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{name}` is not a string")),
    }
}

fn required<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    string(jwk, name)?.ok_or_else(|| format!("no `{name}`"))
}

fn b64(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(required(jwk, name)?)
        .map_err(|_| format!("`{name}` is not base64url"))
}

/// Parses one JWK; the error names the problem and the `kid`, never key material.
fn parse_jwk(jwk: &Value) -> Result<VerifyingKey, String> {
    let Some(jwk) = jwk.as_object() else {
        return Err("not a JSON object".into());
    };
    let kid = key_id(jwk)?;
    check_use(jwk, kid)?;
    check_key_ops(jwk, kid)?;
    let alg = declared_algorithm(jwk, kid)?;
    let (key_type, key) = public_key(jwk, kid)?;
    if let Some(alg) = alg
        && !key_type.fits(alg)
    {
        return Err(format!(
            "kid {kid:?}: `alg` {alg:?} does not fit a {key_type:?} key"
        ));
    }
    Ok(VerifyingKey {
        kid: kid.to_owned(),
        alg,
        key_type,
        key,
    })
}

/// The `kid`: required, not empty.
fn key_id(jwk: &Map<String, Value>) -> Result<&str, String> {
    let kid = required(jwk, "kid")?;
    if kid.is_empty() {
        return Err("empty `kid`".into());
    }
    Ok(kid)
}

/// `use`, when present, says signature (`sig`, or SPIFFE's `jwt-svid`).
fn check_use(jwk: &Map<String, Value>, kid: &str) -> Result<(), String> {
    if let Some(usage) = string(jwk, "use")?
        && usage != "sig"
        && usage != "jwt-svid"
    {
        return Err(format!(
            "kid {kid:?}: `use` is {usage:?}, not a signature key"
        ));
    }
    Ok(())
}

/// `key_ops`, when present, is a list that includes `verify`.
fn check_key_ops(jwk: &Map<String, Value>, kid: &str) -> Result<(), String> {
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err(format!("kid {kid:?}: `key_ops` lacks \"verify\""));
        }
    }
    Ok(())
}

/// The key's own `alg`, when present: an asymmetric algorithm jsonwebtoken knows.
fn declared_algorithm(jwk: &Map<String, Value>, kid: &str) -> Result<Option<Algorithm>, String> {
    let Some(name) = string(jwk, "alg")? else {
        return Ok(None);
    };
    match Algorithm::from_str(name) {
        Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => {
            Err(format!("kid {kid:?}: `alg` {name:?} is not supported"))
        }
        Ok(alg) => Ok(Some(alg)),
    }
}

/// The public key by `kty` (and `crv`): RSA, EC P-256 or P-384, or Ed25519.
fn public_key(jwk: &Map<String, Value>, kid: &str) -> Result<(KeyType, DecodingKey), String> {
    match (required(jwk, "kty")?, string(jwk, "crv")?) {
        ("RSA", _) => rsa_key(jwk, kid),
        ("EC", Some(curve @ ("P-256" | "P-384"))) => ec_key(jwk, kid, curve),
        ("OKP", Some("Ed25519")) => ed25519_key(jwk, kid),
        ("oct", _) => Err(format!(
            "kid {kid:?}: symmetric keys are never used (no HMAC)"
        )),
        (kty, crv) => Err(format!(
            "kid {kid:?}: key type {kty:?} with curve {crv:?} is not supported"
        )),
    }
}

/// An RSA key of 2048 to 8192 bits with an exponent of at most 4 bytes.
fn rsa_key(jwk: &Map<String, Value>, kid: &str) -> Result<(KeyType, DecodingKey), String> {
    let n = b64(jwk, "n")?;
    let e = b64(jwk, "e")?;
    let n_trimmed = trim_leading_zeros(&n);
    let e_trimmed = trim_leading_zeros(&e);
    if n_trimmed.len() < 256 || n_trimmed.len() > 1024 {
        return Err(format!(
            "kid {kid:?}: RSA modulus of {} bits (2048 to 8192 accepted)",
            n_trimmed.len() * 8
        ));
    }
    if e_trimmed.is_empty() || e_trimmed.len() > 4 {
        return Err(format!("kid {kid:?}: RSA exponent out of range"));
    }
    Ok((
        KeyType::Rsa,
        DecodingKey::from_rsa_raw_components(n_trimmed, e_trimmed),
    ))
}

/// An EC key on `curve` (`P-256` or `P-384`), its coordinates of the curve's length.
fn ec_key(
    jwk: &Map<String, Value>,
    kid: &str,
    curve: &str,
) -> Result<(KeyType, DecodingKey), String> {
    let (key_type, len) = if curve == "P-256" {
        (KeyType::P256, 32)
    } else {
        (KeyType::P384, 48)
    };
    let x = b64(jwk, "x")?;
    let y = b64(jwk, "y")?;
    if x.len() != len || y.len() != len {
        return Err(format!(
            "kid {kid:?}: {curve} coordinates of the wrong length"
        ));
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok((key_type, DecodingKey::from_ec_der(&point)))
}

/// An Ed25519 key of 32 bytes.
fn ed25519_key(jwk: &Map<String, Value>, kid: &str) -> Result<(KeyType, DecodingKey), String> {
    let x = b64(jwk, "x")?;
    if x.len() != 32 {
        return Err(format!("kid {kid:?}: Ed25519 key of the wrong length"));
    }
    Ok((KeyType::Ed25519, DecodingKey::from_ed_der(&x)))
}

fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc() -> Location {
        Location::Field("test")
    }

    const P256: &str = r#"{"kty":"EC","crv":"P-256","kid":"a","alg":"ES256",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn parses_and_skips() {
        let doc = format!(
            r#"{{"keys":[{P256},
            {{"kty":"oct","kid":"h","k":"c2VjcmV0"}},
            {{"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}},
            {{"kty":"EC","crv":"P-256","kid":"mismatch","alg":"RS256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}},
            {{"kty":"OKP","crv":"Ed25519","kid":"short","x":"AAAA"}},
            {{"kty":"RSA","kid":"small","n":"AQAB","e":"AQAB"}},
            "garbage"]}}"#
        );
        let set = KeySet::from_jwks_json(doc.as_bytes(), &loc()).unwrap();
        assert_eq!(set.len(), 1);
        let key = set.get("a").unwrap();
        assert!(key.accepts(Algorithm::ES256));
        assert!(!key.accepts(Algorithm::ES384));
        assert!(!key.accepts(Algorithm::RS256));
        assert!(!format!("{key:?}").contains("f83O"));
    }

    #[test]
    fn refuses_empty_duplicate_and_garbage() {
        for doc in [
            r#"{"keys":[]}"#.to_owned(),
            r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#.to_owned(),
            format!(r#"{{"keys":[{P256},{P256}]}}"#),
            "not json".to_owned(),
            r#"{"nokeys":1}"#.to_owned(),
        ] {
            assert!(
                KeySet::from_jwks_json(doc.as_bytes(), &loc()).is_err(),
                "{doc}"
            );
        }
    }
}
