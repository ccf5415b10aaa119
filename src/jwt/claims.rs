//! The claims of a token that passed validation.

use std::sync::Arc;

use serde_json::{Map, Value};

/// The claims of a validated token, as handlers and the authorizer see them.
///
/// Only this crate constructs it, after the token's signature, time claims, issuer, audience
/// and certificate binding were checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedClaims {
    inner: Arc<Map<String, Value>>,
}

impl VerifiedClaims {
    #[allow(dead_code)]
    pub(crate) fn new(claims: Map<String, Value>) -> Self {
        Self {
            inner: Arc::new(claims),
        }
    }

    /// The `sub` claim.
    pub fn subject(&self) -> Option<&str> {
        self.inner.get("sub").and_then(Value::as_str)
    }

    /// The token's scopes: the space-separated `scope` claim (RFC 8693), or the `scp` array.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        let from_scope = self
            .inner
            .get("scope")
            .and_then(Value::as_str)
            .into_iter()
            .flat_map(str::split_whitespace);
        let from_scp = self
            .inner
            .get("scp")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str);
        from_scope.chain(from_scp)
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
        &self.inner
    }
}
