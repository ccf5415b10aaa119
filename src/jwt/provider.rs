//! Tokens for outgoing requests: [`BearerToken`], the [`TokenProvider`] trait, and
//! [`CachedTokenProvider`], which refreshes a provider's token before it expires.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;

/// Errors of a [`TokenProvider`], and of the `ClientToken` service.
pub type TokenProviderError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A bearer token ready to send. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct BearerToken {
    pub(crate) header: HeaderValue,
    expires_at: Option<SystemTime>,
}

impl BearerToken {
    /// A token (surrounding whitespace trimmed). Its expiry is read from the `exp` claim when
    /// the token is a JWT (without verifying anything: it is this workload's own token).
    pub fn new(token: impl AsRef<str>) -> Result<Self, TokenProviderError> {
        let token = token.as_ref().trim();
        if token.is_empty() {
            return Err("empty bearer token".into());
        }
        let mut header = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "bearer token holds characters not allowed in a header")?;
        header.set_sensitive(true);
        Ok(Self {
            header,
            expires_at: jwt_expiry(token),
        })
    }

    /// Overrides the expiry (for opaque tokens whose lifetime is known otherwise).
    #[must_use]
    pub fn with_expiry(mut self, expires_at: SystemTime) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    /// When the token expires, if known.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The claims of a compact JWS, unverified (for this workload's own tokens only).
pub(crate) fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `exp` of a compact JWS, unverified.
fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let exp = unverified_claims(token)?.get("exp")?.as_u64()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// Produces the token for outgoing requests (one target audience per provider).
///
/// Implement it for an OAuth client, a token file, or the Workload API's JWT-SVIDs; wrap it in
/// [`CachedTokenProvider`] to fetch only when the token nears its expiry.
pub trait TokenProvider: Send + Sync + 'static {
    /// A token for the next request.
    fn token(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<BearerToken, TokenProviderError>> + Send + '_>>;
}

/// Caches the token of another provider and fetches a new one before the cached one expires.
///
/// A token is reused until `refresh_before` (default 30 s, and at least a third of its
/// remaining lifetime at fetch time) ahead of its expiry; concurrent requests share one fetch.
/// When a fetch fails while the cached token is still valid, the cached token is used.
pub struct CachedTokenProvider<P> {
    inner: P,
    refresh_before: Duration,
    state: tokio::sync::Mutex<Option<(BearerToken, SystemTime)>>,
}

impl<P: TokenProvider> CachedTokenProvider<P> {
    /// Caches the tokens of `inner`.
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            refresh_before: Duration::from_secs(30),
            state: tokio::sync::Mutex::new(None),
        }
    }

    /// How long before expiry a token is replaced (default 30 s).
    #[must_use]
    pub fn refresh_before(mut self, margin: Duration) -> Self {
        self.refresh_before = margin;
        self
    }

    async fn current(&self) -> Result<BearerToken, TokenProviderError> {
        let mut state = self.state.lock().await;
        let now = SystemTime::now();
        if let Some((token, refresh_at)) = state.as_ref()
            && now < *refresh_at
        {
            return Ok(token.clone());
        }
        match self.inner.token().await {
            Ok(token) => {
                let refresh_at = match token.expires_at() {
                    Some(expires) => {
                        let remaining = expires.duration_since(now).unwrap_or_default();
                        let margin = self.refresh_before.max(remaining / 3);
                        expires.checked_sub(margin).unwrap_or(now)
                    }
                    // No known expiry: fetch every time.
                    None => now,
                };
                *state = Some((token.clone(), refresh_at));
                Ok(token)
            }
            Err(error) => match state.as_ref() {
                Some((token, _)) if token.expires_at().is_some_and(|e| now < e) => {
                    tracing::warn!(%error, "token refresh failed; the cached token is still valid");
                    Ok(token.clone())
                }
                _ => Err(error),
            },
        }
    }
}

impl<P: TokenProvider> TokenProvider for CachedTokenProvider<P> {
    fn token(&self) -> BoxFuture<'_, Result<BearerToken, TokenProviderError>> {
        Box::pin(self.current())
    }
}

impl<P> fmt::Debug for CachedTokenProvider<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedTokenProvider")
            .field("refresh_before", &self.refresh_before)
            .finish_non_exhaustive()
    }
}
