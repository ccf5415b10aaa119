//! Where verification keys come from: a [`KeySource`] handle over a static JWK set, a JWKS file,
//! a JWKS URL, or SPIFFE JWT bundles by trust domain.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use spiffe::TrustDomain;
use tokio::sync::watch;

use crate::Location;
use crate::jwt::JwtConfigError;
use crate::jwt::bundles::JwtBundles;
use crate::jwt::jwks_file::JwksFileBuilder;
use crate::jwt::jwks_url::{JwksFetcher, JwksUrlBuilder};
use crate::jwt::keys::{KeySet, VerifyingKey};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the validator knows when it looks a key up: the header's `kid`, and for JWT-SVIDs the
/// trust domain of the (not yet verified) `sub`, which selects the bundle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyLookup<'a> {
    pub(crate) kid: &'a str,
    pub(crate) trust_domain: Option<&'a TrustDomain>,
}

/// The behavior every key source provides.
pub(crate) trait Keys: Send + Sync + 'static {
    fn find(&self, lookup: &KeyLookup<'_>) -> Option<Arc<VerifyingKey>>;
    /// A number that changes whenever the keys change (cached validations carry it).
    fn revision(&self) -> u64;
    /// Fetches the keys again because a token named an unknown `kid`; `None` when this source
    /// cannot refresh on demand. The future completes when the refresh is done or refused.
    fn refresh_for_unknown_kid(self: Arc<Self>) -> Option<BoxFuture<'static, ()>>;
    fn published(&self) -> &Published;
}

/// A key set (or set of sets) with its revision counter and failure counter.
pub(crate) struct Published {
    revision: AtomicU64,
    revisions: watch::Sender<u64>,
    failed: watch::Sender<u64>,
    kind: &'static str,
}

impl Published {
    pub(crate) fn new(kind: &'static str) -> Self {
        Self {
            revision: AtomicU64::new(1),
            revisions: watch::channel(1).0,
            failed: watch::channel(0).0,
            kind,
        }
    }

    pub(crate) fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Call after storing new keys.
    pub(crate) fn bump(&self) {
        let revision = self.revision.fetch_add(1, Ordering::AcqRel) + 1;
        self.revisions.send_replace(revision);
    }

    /// Counts a refused reload (the last good keys stay).
    pub(crate) fn reject(&self, error: &dyn std::fmt::Display) {
        tracing::warn!(source = self.kind, %error, "key reload refused; keeping the last good keys");
        self.failed.send_modify(|n| *n += 1);
    }
}

/// A live handle on verification keys, cheap to clone.
///
/// Keys are looked up by the token header's `kid`. Every source keeps the last good key set
/// when a reload or fetch fails; a document with no usable key counts as a failure, so a
/// failure can never leave the source empty.
///
/// Background work (file polling, URL refresh) stops when the last handle, and every validator
/// built from it, is dropped.
#[derive(Clone)]
pub struct KeySource {
    inner: Arc<dyn Keys>,
}

impl KeySource {
    pub(crate) fn from_keys(inner: Arc<dyn Keys>) -> Self {
        Self { inner }
    }

    /// A fixed JWK set (`{"keys": [...]}`).
    ///
    /// Keys that cannot be used for verification (symmetric `oct` keys, encryption keys, keys
    /// without `kid`, unsupported curves, RSA under 2048 bits, an `alg` that does not fit the
    /// key) are skipped with a warning; a set with no usable key is an error.
    pub fn from_jwks(jwks: impl AsRef<[u8]>) -> Result<Self, JwtConfigError> {
        let set = KeySet::from_jwks_json(jwks.as_ref(), &Location::Field("jwks"))?;
        Ok(Self::from_keys(Arc::new(StaticKeys {
            set,
            published: Published::new("static"),
        })))
    }

    /// A JWKS file, polled and reloaded when its content changes; see [`JwksFileBuilder`].
    pub fn jwks_file(path: impl Into<PathBuf>) -> JwksFileBuilder {
        JwksFileBuilder::new(path.into())
    }

    /// A JWKS fetched by `fetcher` (an HTTPS URL, typically), cached per Cache-Control and
    /// refreshed in the background and on unknown `kid`s; see [`JwksUrlBuilder`].
    pub fn jwks_url(fetcher: impl JwksFetcher) -> JwksUrlBuilder {
        JwksUrlBuilder::new(Arc::new(fetcher))
    }

    /// SPIFFE JWT bundles by trust domain, for JWT-SVIDs: the key is looked up in the bundle of
    /// the trust domain of the token's `sub`.
    pub fn jwt_bundles(bundles: &JwtBundles) -> Self {
        Self::from_keys(bundles.keys())
    }

    /// A number that changes whenever the keys change (1 for the first set).
    pub fn revision(&self) -> u64 {
        self.inner.revision()
    }

    /// A receiver that sees each new revision; `changed().await` waits for a reload.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.published().revisions.subscribe()
    }

    /// How many reloads or fetches failed and were discarded, keeping the last good keys.
    pub fn failed_reloads(&self) -> u64 {
        *self.inner.published().failed.borrow()
    }

    /// A receiver that sees the count of failed reloads change.
    pub fn subscribe_failed_reloads(&self) -> watch::Receiver<u64> {
        self.inner.published().failed.subscribe()
    }

    pub(crate) fn find(&self, lookup: &KeyLookup<'_>) -> Option<Arc<VerifyingKey>> {
        self.inner.find(lookup)
    }

    pub(crate) fn refresh_for_unknown_kid(&self) -> Option<BoxFuture<'static, ()>> {
        Arc::clone(&self.inner).refresh_for_unknown_kid()
    }
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let published = self.inner.published();
        f.debug_struct("KeySource")
            .field("kind", &published.kind)
            .field("revision", &published.revision())
            .finish_non_exhaustive()
    }
}

struct StaticKeys {
    set: KeySet,
    published: Published,
}

impl Keys for StaticKeys {
    fn find(&self, lookup: &KeyLookup<'_>) -> Option<Arc<VerifyingKey>> {
        self.set.get(lookup.kid).cloned()
    }

    fn revision(&self) -> u64 {
        self.published.revision()
    }

    fn refresh_for_unknown_kid(self: Arc<Self>) -> Option<BoxFuture<'static, ()>> {
        None
    }

    fn published(&self) -> &Published {
        &self.published
    }
}

/// A key set that is replaced as a whole (file and URL sources).
pub(crate) struct SwappedKeys {
    pub(crate) current: ArcSwap<KeySet>,
    pub(crate) published: Published,
}

impl SwappedKeys {
    pub(crate) fn new(kind: &'static str, initial: KeySet) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
            published: Published::new(kind),
        }
    }

    pub(crate) fn find(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.current.load().get(kid).cloned()
    }

    pub(crate) fn store(&self, set: KeySet) {
        tracing::info!(
            source = self.published.kind,
            keys = set.len(),
            kids = ?set.key_ids().collect::<Vec<_>>(),
            "verification keys updated"
        );
        self.current.store(Arc::new(set));
        self.published.bump();
    }
}
