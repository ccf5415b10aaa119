//! A JWKS fetched from an issuer: cached per Cache-Control, refreshed in the background and on
//! unknown `kid`s (single-flight and rate-limited), last good set kept when a fetch fails.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::Location;
use crate::jwt::JwtConfigError;
use crate::jwt::keys::{KeySet, MAX_JWKS_BYTES, VerifyingKey};
use crate::jwt::source::{BoxFuture, KeyLookup, KeySource, Keys, KeysWriter, SwappedKeys};
use crate::reload::{Notices, Publish};

/// Errors a [`JwksFetcher`] reports (kept in logs, never sent to callers).
pub type FetchError = Box<dyn std::error::Error + Send + Sync>;

/// Fetches a JWK set document: one GET of the issuer's `jwks_uri`.
///
/// The crate's HTTPS fetcher implements it over hyper (WebPKI server authentication, or the
/// SPIFFE connector when the issuer is a SPIFFE workload); anything else that can produce the
/// document (a test double, a sidecar) can too. The caching, refresh and rate limiting are done
/// by the key source, not the fetcher.
pub trait JwksFetcher: Send + Sync + 'static {
    /// Fetches the document. Called by one task at a time.
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<FetchedJwks, FetchError>> + Send + '_>>;
}

/// A fetched JWK set document and its `Cache-Control` header.
#[derive(Clone)]
pub struct FetchedJwks {
    body: Bytes,
    cache_control: Option<String>,
}

impl FetchedJwks {
    /// A document without caching directives (the source's default lifetime applies).
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            cache_control: None,
        }
    }

    /// The response's `Cache-Control` header value (`max-age` is honored, within the source's
    /// bounds; `no-cache` and `no-store` mean the shortest lifetime).
    #[must_use]
    pub fn with_cache_control(mut self, value: impl Into<String>) -> Self {
        self.cache_control = Some(value.into());
        self
    }
}

impl std::fmt::Debug for FetchedJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedJwks")
            .field("body_len", &self.body.len())
            .field("cache_control", &self.cache_control)
            .finish()
    }
}

/// Builds a [`KeySource`] over a [`JwksFetcher`].
///
/// - The key set is cached for the response's `Cache-Control: max-age`, bounded by
///   [`cache_bounds`](Self::cache_bounds) (default 1 minute to 1 day; 5 minutes when the header
///   has no `max-age`), and refreshed in the background when that lifetime ends.
/// - A token naming an unknown `kid` triggers one refresh: concurrent requests share it
///   (single-flight), and no on-demand refresh starts within
///   [`unknown_kid_interval`](Self::unknown_kid_interval) (default 10 s) of the previous
///   fetch, so a flood of random `kid`s costs the issuer at most one fetch per interval.
/// - A failed fetch (error, timeout, a document with no usable key) keeps the last good keys,
///   is counted in [`KeySource::failed_reloads`], and is retried with backoff (1 s doubling to
///   the lower cache bound).
#[must_use]
pub struct JwksUrlBuilder {
    fetcher: Arc<dyn JwksFetcher>,
    default_lifetime: Duration,
    min_lifetime: Duration,
    max_lifetime: Duration,
    unknown_kid_interval: Duration,
    fetch_timeout: Duration,
}

impl std::fmt::Debug for JwksUrlBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksUrlBuilder")
            .field("default_lifetime", &self.default_lifetime)
            .field("min_lifetime", &self.min_lifetime)
            .field("max_lifetime", &self.max_lifetime)
            .field("unknown_kid_interval", &self.unknown_kid_interval)
            .field("fetch_timeout", &self.fetch_timeout)
            .finish_non_exhaustive()
    }
}

impl JwksUrlBuilder {
    pub(crate) fn new(fetcher: Arc<dyn JwksFetcher>) -> Self {
        Self {
            fetcher,
            default_lifetime: Duration::from_secs(300),
            min_lifetime: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(24 * 3600),
            unknown_kid_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(10),
        }
    }

    /// Bounds for the cache lifetime taken from `max-age` (default 60 s to 1 day).
    pub fn cache_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_lifetime = min;
        self.max_lifetime = max;
        self
    }

    /// The cache lifetime when the response has no `max-age` (default 5 minutes).
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    /// The least time between the previous fetch and a refresh caused by an unknown `kid`
    /// (default 10 s). Zero leaves only the single-flight limit.
    pub fn unknown_kid_interval(mut self, interval: Duration) -> Self {
        self.unknown_kid_interval = interval;
        self
    }

    /// How long one fetch may take (default 10 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Fetches the key set once (a failure is an error: a validator without keys would refuse
    /// every token) and starts the background refresh on the current tokio runtime.
    pub async fn start(self) -> Result<KeySource, JwtConfigError> {
        if self.min_lifetime.is_zero() || self.min_lifetime > self.max_lifetime {
            return Err(JwtConfigError::InvalidSetting {
                field: "cache_bounds",
                problem: "the lower bound must be above zero and not above the upper bound".into(),
            });
        }
        if self.fetch_timeout.is_zero() {
            return Err(JwtConfigError::InvalidSetting {
                field: "fetch_timeout",
                problem: "must be above zero".into(),
            });
        }
        let handle =
            tokio::runtime::Handle::try_current().map_err(|e| JwtConfigError::Background {
                what: "JWKS refresh task",
                reason: e.to_string(),
            })?;
        let started = Instant::now();
        let (set, lifetime) = fetch_once(
            self.fetcher.as_ref(),
            self.fetch_timeout,
            &self.lifetime_policy(),
        )
        .await
        .map_err(|reason| JwtConfigError::Fetch { reason })?;
        let (keys, writer) = SwappedKeys::new("jwks-url", set);
        let keys = Arc::new(UrlKeys {
            keys,
            writer,
            policy: self.lifetime_policy(),
            fetcher: self.fetcher,
            fetch_timeout: self.fetch_timeout,
            unknown_kid_interval: self.unknown_kid_interval,
            refresh: tokio::sync::Mutex::new(()),
            state: Mutex::new(RefreshState {
                last_attempt: Some(started),
                completed: 1,
                next_refresh: started + lifetime,
            }),
        });
        handle.spawn(background(Arc::downgrade(&keys)));
        Ok(KeySource::from_keys(keys))
    }

    fn lifetime_policy(&self) -> LifetimePolicy {
        LifetimePolicy {
            default: self.default_lifetime,
            min: self.min_lifetime,
            max: self.max_lifetime,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct LifetimePolicy {
    default: Duration,
    min: Duration,
    max: Duration,
}

impl LifetimePolicy {
    /// The cache lifetime a `Cache-Control` value asks for, within the bounds.
    fn lifetime(&self, cache_control: Option<&str>) -> Duration {
        let mut lifetime = self.default;
        for directive in cache_control.unwrap_or("").split(',') {
            let directive = directive.trim();
            let (name, value) = match directive.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return self.min;
            }
            if name.eq_ignore_ascii_case("max-age")
                && let Some(seconds) = value.and_then(|v| v.parse::<u64>().ok())
            {
                lifetime = Duration::from_secs(seconds);
            }
        }
        lifetime.clamp(self.min, self.max)
    }
}

async fn fetch_once(
    fetcher: &dyn JwksFetcher,
    timeout: Duration,
    policy: &LifetimePolicy,
) -> Result<(KeySet, Duration), String> {
    let fetched = match tokio::time::timeout(timeout, fetcher.fetch()).await {
        Err(_) => return Err(format!("no answer within {timeout:?}")),
        Ok(Err(error)) => return Err(error.to_string()),
        Ok(Ok(fetched)) => fetched,
    };
    if fetched.body.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "document of {} bytes, more than the {MAX_JWKS_BYTES} accepted",
            fetched.body.len()
        ));
    }
    let set = KeySet::from_jwks_json(&fetched.body, &Location::Field("jwks_url"))
        .map_err(|e| e.to_string())?;
    Ok((set, policy.lifetime(fetched.cache_control.as_deref())))
}

struct RefreshState {
    /// When the last fetch started.
    last_attempt: Option<Instant>,
    /// How many fetches finished (well or not); a request that sees it change while waiting
    /// for the refresh lock knows a fetch ran after it found its `kid` unknown.
    completed: u64,
    /// When the background task should fetch next.
    next_refresh: Instant,
}

struct UrlKeys {
    keys: SwappedKeys,
    writer: KeysWriter,
    policy: LifetimePolicy,
    fetcher: Arc<dyn JwksFetcher>,
    fetch_timeout: Duration,
    unknown_kid_interval: Duration,
    /// Held for the duration of a fetch: one fetch at a time.
    refresh: tokio::sync::Mutex<()>,
    state: Mutex<RefreshState>,
}

impl UrlKeys {
    fn state(&self) -> std::sync::MutexGuard<'_, RefreshState> {
        // A poisoned lock only means a panic elsewhere while holding it; the state stays usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fetches now; the caller holds `self.refresh`. Returns whether it succeeded.
    async fn fetch_locked(&self) -> bool {
        let started = Instant::now();
        self.state().last_attempt = Some(started);
        let fetched = fetch_once(self.fetcher.as_ref(), self.fetch_timeout, &self.policy).await;
        let ok = match fetched {
            Ok((set, lifetime)) => {
                self.writer.publish(set);
                self.state().next_refresh = started + lifetime;
                true
            }
            Err(reason) => {
                self.writer.refuse(&reason);
                false
            }
        };
        self.state().completed += 1;
        ok
    }

    /// `seen`: the count of finished fetches when the `kid` was found unknown.
    async fn refresh_unknown(self: Arc<Self>, seen: u64) {
        let _guard = self.refresh.lock().await;
        {
            let state = self.state();
            if state.completed != seen {
                // A fetch ran while this request waited: its result is what there is.
                return;
            }
            if let Some(last) = state.last_attempt
                && last.elapsed() < self.unknown_kid_interval
            {
                tracing::debug!("unknown kid: refresh rate-limited");
                return;
            }
        }
        self.fetch_locked().await;
    }
}

impl Keys for UrlKeys {
    fn find(&self, lookup: &KeyLookup<'_>) -> Option<Arc<VerifyingKey>> {
        self.keys.find(lookup)
    }

    fn refresh_for_unknown_kid(self: Arc<Self>) -> Option<BoxFuture<'static, ()>> {
        // Run the refresh as its own task, so that a caller giving up (a dropped request) does
        // not abort a fetch that others are waiting for.
        let seen = self.state().completed;
        Some(Box::pin(async move {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    let _ = handle.spawn(self.refresh_unknown(seen)).await;
                }
                Err(_) => self.refresh_unknown(seen).await,
            }
        }))
    }

    fn notices(&self) -> &Notices {
        self.keys.notices()
    }
}

/// Refreshes when the cache lifetime ends; after a failure, retries with backoff.
async fn background(keys: Weak<UrlKeys>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let (next, min) = match keys.upgrade() {
            Some(keys) => (keys.state().next_refresh, keys.policy.min),
            None => return,
        };
        tokio::time::sleep_until(next).await;
        let Some(keys) = keys.upgrade() else {
            return;
        };
        let _guard = keys.refresh.lock().await;
        if keys.state().next_refresh > Instant::now() {
            // Refreshed on demand meanwhile.
            continue;
        }
        if keys.fetch_locked().await {
            backoff = Duration::from_secs(1);
        } else {
            keys.state().next_refresh = Instant::now() + backoff;
            backoff = (backoff * 2).min(min.max(Duration::from_secs(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control() {
        let policy = LifetimePolicy {
            default: Duration::from_secs(300),
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        };
        let secs = |v: Option<&str>| policy.lifetime(v).as_secs();
        assert_eq!(secs(None), 300);
        assert_eq!(secs(Some("public, max-age=120")), 120);
        assert_eq!(secs(Some("max-age=5")), 60);
        assert_eq!(secs(Some("max-age=999999")), 3600);
        assert_eq!(secs(Some("MAX-AGE=\"600\", must-revalidate")), 600);
        assert_eq!(secs(Some("max-age=120, no-cache")), 60);
        assert_eq!(secs(Some("no-store")), 60);
        assert_eq!(secs(Some("max-age=abc")), 300);
    }
}
