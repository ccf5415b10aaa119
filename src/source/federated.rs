//! Federated trust domains' bundles that come from somewhere other than the credential source
//! (SPIFFE bundle endpoints), and the source that adds them to another source's credentials.

use std::collections::HashMap;
use std::sync::Arc;

use spiffe::TrustDomain;
use tokio::sync::watch;

use crate::error::ConfigError;
use crate::reload::LiveMap;
use crate::source::{CredentialSource, Credentials, TrustBundle, TrustBundles};

type Bundles = HashMap<TrustDomain, TrustBundle>;

/// X.509 bundles of federated trust domains by trust domain; a live, cheaply cloned handle.
///
/// Fed by [`federation::BundleEndpointClient`](crate::federation::BundleEndpointClient)s (each
/// setting the bundle of its own remote trust domain), read by the credential sources built
/// with [`CredentialSource::with_federated_bundles`].
#[derive(Clone)]
pub struct FederatedBundles {
    map: Arc<LiveMap<TrustDomain, TrustBundle>>,
}

impl Default for FederatedBundles {
    fn default() -> Self {
        Self::new()
    }
}

impl FederatedBundles {
    /// No bundles yet.
    pub fn new() -> Self {
        Self {
            map: Arc::new(LiveMap::new("federation", "federated bundle")),
        }
    }

    /// Sets (or replaces) the bundle of its trust domain; the others are left alone. The same
    /// certificates again change nothing (no new revision).
    pub fn set(&self, bundle: TrustBundle) {
        self.map
            .set(bundle.trust_domain().clone(), bundle, |held, new| {
                held.certificates() == new.certificates()
            });
    }

    /// Removes the bundle of `trust_domain`; returns whether there was one.
    pub fn remove(&self, trust_domain: &TrustDomain) -> bool {
        self.map.remove(trust_domain)
    }

    /// The bundle of `trust_domain`, if one is set.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<TrustBundle> {
        self.map.get(trust_domain)
    }

    /// The trust domains that have a bundle.
    pub fn trust_domains(&self) -> Vec<TrustDomain> {
        self.map.keys()
    }

    /// A number that changes whenever a bundle is set or removed (1 for the empty start).
    pub fn revision(&self) -> u64 {
        self.map.notices().revision()
    }

    /// A receiver that sees each new revision.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.map.notices().subscribe()
    }

    fn snapshot(&self) -> Arc<Bundles> {
        self.map.current()
    }
}

impl std::fmt::Debug for FederatedBundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederatedBundles")
            .field(
                "trust_domains",
                &self
                    .trust_domains()
                    .iter()
                    .map(TrustDomain::as_str)
                    .collect::<Vec<_>>(),
            )
            .field("revision", &self.revision())
            .finish()
    }
}

/// `base` with the bundles of `federated` added: a federated bundle replaces the base's bundle
/// of the same trust domain, except for the workload's own trust domain, which only the base
/// decides.
fn merge(base: &Credentials, federated: &Bundles) -> Credentials {
    let own = base.svid().spiffe_id().trust_domain();
    let mut bundles: TrustBundles = base.bundles().clone();
    for (trust_domain, bundle) in federated {
        if trust_domain == own {
            tracing::warn!(
                %trust_domain,
                "a federated bundle for the workload's own trust domain is ignored"
            );
            continue;
        }
        bundles.insert(bundle.clone());
    }
    Credentials::new(base.svid().clone(), bundles)
}

impl CredentialSource {
    /// This source's credentials with the bundles of `federated` added (typically fed by
    /// bundle endpoint clients), followed as either changes: a new snapshot is published
    /// whenever this source rotates or a federated bundle is set or removed.
    ///
    /// A federated bundle replaces this source's bundle of the same trust domain; the
    /// workload's own trust domain is never taken from `federated`, so a federation partner
    /// cannot change who vouches for our own workloads. Needs a tokio runtime (the following
    /// runs as a task, until every handle of the returned source is gone).
    pub fn with_federated_bundles(
        &self,
        federated: &FederatedBundles,
    ) -> Result<CredentialSource, ConfigError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|e| ConfigError::Background {
                what: "federated bundles task",
                error: std::io::Error::other(e),
            })?;
        let base = self.clone();
        let federated = federated.clone();
        let mut base_changes = base.subscribe();
        let mut federated_changes = federated.subscribe();
        let (source, publisher) =
            CredentialSource::new("federated", merge(&base.current(), &federated.snapshot()));
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    changed = base_changes.changed() => if changed.is_err() { return },
                    changed = federated_changes.changed() => if changed.is_err() { return },
                    () = publisher.closed() => return,
                }
                // Marks both as seen: the merge below reads the current values of both.
                base_changes.borrow_and_update();
                federated_changes.borrow_and_update();
                if !publisher.publish(merge(&base.current(), &federated.snapshot())) {
                    return;
                }
            }
        });
        Ok(source)
    }
}
