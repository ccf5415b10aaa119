//! Where verification keys come from: a [`KeySource`] handle over a static JWK set, a JWKS file,
//! a JWKS URL, or SPIFFE JWT bundles by trust domain.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use spiffe::TrustDomain;
use tokio::sync::watch;

use crate::Location;
use crate::jwt::JwtConfigError;
use crate::jwt::bundles::JwtBundles;
use crate::jwt::jwks_file::JwksFileBuilder;
use crate::jwt::jwks_url::{JwksFetcher, JwksUrlBuilder};
use crate::jwt::keys::{KeySet, VerifyingKey};
use crate::reload::{Live, Notices, Publish, Writer};

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
    /// Fetches the keys again because a token named an unknown `kid`; `None` when this source
    /// cannot refresh on demand. The future completes when the refresh is done or refused.
    fn refresh_for_unknown_kid(self: Arc<Self>) -> Option<BoxFuture<'static, ()>>;
    /// The revision (it changes whenever the keys change; cached validations carry it) and
    /// the refused reloads.
    fn notices(&self) -> &Notices;
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
        let (keys, _fixed) = SwappedKeys::new("static", set);
        Ok(Self::from_keys(Arc::new(keys)))
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
        self.inner.notices().revision()
    }

    /// A receiver that sees each new revision; `changed().await` waits for a reload.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.notices().subscribe()
    }

    /// How many reloads or fetches failed and were discarded, keeping the last good keys.
    pub fn failed_reloads(&self) -> u64 {
        self.inner.notices().failed_reloads()
    }

    /// A receiver that sees the count of failed reloads change.
    pub fn subscribe_failed_reloads(&self) -> watch::Receiver<u64> {
        self.inner.notices().subscribe_failed_reloads()
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
        let notices = self.inner.notices();
        f.debug_struct("KeySource")
            .field("kind", &notices.kind())
            .field("revision", &notices.revision())
            .finish_non_exhaustive()
    }
}

/// A key set that is replaced as a whole (static, file and URL sources).
pub(crate) struct SwappedKeys {
    live: Live<KeySet>,
}

/// The writing side of [`SwappedKeys`].
pub(crate) struct KeysWriter {
    writer: Writer<KeySet>,
    kind: &'static str,
}

impl SwappedKeys {
    pub(crate) fn new(kind: &'static str, initial: KeySet) -> (Self, KeysWriter) {
        let (live, writer) = Live::new(kind, "key", initial);
        (Self { live }, KeysWriter { writer, kind })
    }
}

impl Keys for SwappedKeys {
    fn find(&self, lookup: &KeyLookup<'_>) -> Option<Arc<VerifyingKey>> {
        self.live.load().get(lookup.kid).cloned()
    }

    fn refresh_for_unknown_kid(self: Arc<Self>) -> Option<BoxFuture<'static, ()>> {
        // A static set never changes; a file's poller picks changes up within one interval,
        // and reading the file per unknown kid would let a flood of tokens turn into a flood
        // of reads.
        None
    }

    fn notices(&self) -> &Notices {
        self.live.notices()
    }
}

impl Publish<KeySet> for KeysWriter {
    fn publish(&self, set: KeySet) -> bool {
        let (keys, kids) = (
            set.len(),
            set.key_ids().map(str::to_owned).collect::<Vec<_>>(),
        );
        let Some(revision) = self.writer.publish(set) else {
            return false;
        };
        tracing::info!(
            source = self.kind,
            revision,
            keys,
            ?kids,
            "verification keys updated"
        );
        true
    }

    fn refuse(&self, error: &dyn std::fmt::Display) {
        self.writer.refuse(error);
    }

    fn is_alive(&self) -> bool {
        self.writer.is_alive()
    }
}
