//! SPIFFE JWT bundles by trust domain, the keys of JWT-SVIDs.

use std::sync::Arc;

use spiffe::TrustDomain;

use crate::Location;
use crate::jwt::JwtConfigError;
use crate::jwt::keys::{KeySet, VerifyingKey};
use crate::jwt::source::{BoxFuture, KeyLookup, Keys};
use crate::reload::{LiveMap, Notices};

/// The JWT bundles (JWK sets of JWT-SVID signing keys) of one or more trust domains; a live,
/// cheaply cloned handle.
///
/// A JWT-SVID's key is looked up in the bundle of the trust domain of its `sub`, and only
/// there: a key of trust domain B never verifies a JWT-SVID of trust domain A.
///
/// Feed it from wherever bundles come from: SPIFFE bundle endpoint documents, files, or the
/// Workload API's `FetchJWTBundles` stream (each update calls [`set`](Self::set) per trust
/// domain). Hand it to a validator with [`KeySource::jwt_bundles`](crate::jwt::KeySource::jwt_bundles).
///
/// ```
/// use secure_channel::jwt::{JwtBundles, KeySource};
/// use secure_channel::TrustDomain;
///
/// let bundles = JwtBundles::new();
/// let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","use":"jwt-svid",
///     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
/// bundles.set(TrustDomain::new("example.org")?, jwks)?;
/// let keys = KeySource::jwt_bundles(&bundles);
/// # let _ = keys;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct JwtBundles {
    inner: Arc<BundleKeys>,
}

/// The key set of each trust domain.
struct BundleKeys {
    map: LiveMap<TrustDomain, Arc<KeySet>>,
}

impl Default for JwtBundles {
    fn default() -> Self {
        Self::new()
    }
}

impl JwtBundles {
    /// No bundles yet (every JWT-SVID is refused until one is set).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(BundleKeys {
                map: LiveMap::new("jwt-bundles", "JWT bundle"),
            }),
        }
    }

    /// Sets (or replaces) the bundle of `trust_domain` from its JWK set document (a SPIFFE
    /// bundle: keys with `use` `jwt-svid` are taken, `x509-svid` ones skipped). A document that
    /// does not parse or holds no usable key is an error and changes nothing.
    pub fn set(
        &self,
        trust_domain: TrustDomain,
        jwks: impl AsRef<[u8]>,
    ) -> Result<(), JwtConfigError> {
        let location = Location::Field("jwt bundle");
        let set = match KeySet::from_jwks_json(jwks.as_ref(), &location) {
            Ok(set) => set,
            Err(error) => {
                self.inner.map.refuse(&error);
                return Err(error);
            }
        };
        let keys = set.len();
        // A set is new whenever it was set: key sets are not compared.
        self.inner
            .map
            .set(trust_domain.clone(), Arc::new(set), |_, _| false);
        tracing::info!(%trust_domain, keys, "JWT bundle updated");
        Ok(())
    }

    /// Removes the bundle of `trust_domain`; returns whether there was one.
    pub fn remove(&self, trust_domain: &TrustDomain) -> bool {
        self.inner.map.remove(trust_domain)
    }

    /// The usable JWT authorities (JWK objects, as they were set) of `trust_domain`'s bundle.
    pub(crate) fn authorities(&self, trust_domain: &TrustDomain) -> Option<Vec<serde_json::Value>> {
        self.inner
            .map
            .load()
            .get(trust_domain)
            .map(|set| set.jwks().to_vec())
    }

    /// A number that changes whenever a bundle is set or removed.
    pub fn revision(&self) -> u64 {
        self.inner.map.notices().revision()
    }

    /// The trust domains that have a bundle.
    pub fn trust_domains(&self) -> Vec<TrustDomain> {
        self.inner.map.keys()
    }

    pub(crate) fn keys(&self) -> Arc<dyn Keys> {
        self.inner.clone()
    }
}

impl std::fmt::Debug for JwtBundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtBundles")
            .field(
                "trust_domains",
                &self
                    .trust_domains()
                    .iter()
                    .map(TrustDomain::as_str)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keys for BundleKeys {
    fn find(&self, lookup: &KeyLookup<'_>) -> Option<Arc<VerifyingKey>> {
        let trust_domain = lookup.trust_domain?;
        self.map.load().get(trust_domain)?.get(lookup.kid).cloned()
    }

    fn refresh_for_unknown_kid(self: Arc<Self>) -> Option<BoxFuture<'static, ()>> {
        None
    }

    fn notices(&self) -> &Notices {
        self.map.notices()
    }
}
