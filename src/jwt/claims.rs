//! The claims of a token that passed validation.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use spiffe::SpiffeId;

/// The claims of a validated token, as handlers and the authorizer see them.
///
/// Only this crate constructs it, after the token's signature, time claims, issuer, audience
/// and certificate binding were checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedClaims {
    inner: Arc<Claims>,
}

#[derive(Debug, PartialEq)]
struct Claims {
    map: Map<String, Value>,
    /// [`VerifiedClaims::scopes`], split once: a cached token is checked for its scopes on
    /// every request.
    scopes: Box<[Box<str>]>,
}

impl std::ops::Deref for Claims {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl VerifiedClaims {
    pub(crate) fn new(map: Map<String, Value>) -> Self {
        let from_scope = map
            .get("scope")
            .and_then(Value::as_str)
            .into_iter()
            .flat_map(str::split_whitespace);
        let from_scp = map
            .get("scp")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        let scopes = from_scope.chain(from_scp).map(Box::from).collect();
        Self {
            inner: Arc::new(Claims { map, scopes }),
        }
    }

    /// The `sub` claim.
    pub fn subject(&self) -> Option<&str> {
        self.inner.get("sub").and_then(Value::as_str)
    }

    /// The `iss` claim.
    pub fn issuer(&self) -> Option<&str> {
        self.inner.get("iss").and_then(Value::as_str)
    }

    /// The audiences of the `aud` claim (one string, or a list).
    pub fn audiences(&self) -> impl Iterator<Item = &str> {
        let aud = self.inner.get("aud");
        let single = aud.and_then(Value::as_str);
        let list = aud
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        single.into_iter().chain(list)
    }

    /// When the token expires (`exp`, which every validated token has).
    pub fn expires_at(&self) -> Option<SystemTime> {
        let exp = self.inner.get("exp")?.as_f64()?;
        if !exp.is_finite() || exp < 0.0 {
            return None;
        }
        UNIX_EPOCH.checked_add(Duration::from_secs(exp as u64))
    }

    /// The `sub` claim as a SPIFFE ID, when it is one (always, for a validated JWT-SVID).
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        SpiffeId::new(self.subject()?).ok()
    }

    /// Whether the token is certificate-bound (`cnf.x5t#S256`, checked against the caller's
    /// certificate on its connection).
    pub fn is_certificate_bound(&self) -> bool {
        self.inner
            .get("cnf")
            .and_then(|cnf| cnf.get("x5t#S256"))
            .is_some()
    }

    /// The token's scopes: the space-separated `scope` claim (RFC 8693), or the `scp` array.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.inner.scopes.iter().map(|scope| &**scope)
    }

    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// One claim by name.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.inner.get(name)
    }

    /// All claims.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.inner.map
    }
}
