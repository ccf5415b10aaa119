//! Where credentials come from, and how changes reach the TLS layer.
//!
//! Every source yields one kind of value, a validated [`Credentials`] snapshot (the workload's
//! SVID chain and key, and the trust bundles keyed by trust domain), published through a
//! [`CredentialSource`]. The TLS layer reads the current snapshot on every handshake, so a new
//! snapshot is used by the next handshake while connections already established keep theirs.
//!
//! - [`MemorySource`]: values handed over in code, replaceable at any time.
//! - [`FileSourceBuilder`]: PEM files that rotate on disk (Kubernetes secrets, cert-manager, Vault agent).
//! - [`WorkloadApiSourceBuilder`] (feature `workload-api`): the SPIFFE Workload API of a SPIRE agent.
//! - [`FederatedBundles`]: federated trust domains' bundles from elsewhere (SPIFFE bundle
//!   endpoints), added to any source by [`CredentialSource::with_federated_bundles`].
//!
//! # Security
//!
//! A snapshot is published only after it validated completely; a reload that fails keeps the
//! last good snapshot, and says why in a `tracing` warning.

mod credentials;
mod federated;
mod files;
mod memory;
pub(crate) mod status;
#[cfg(feature = "workload-api")]
mod workload_api;

use std::fmt::Display;
use std::sync::Arc;

use tokio::sync::watch;

pub use credentials::{Credentials, Svid, TrustBundle, TrustBundles};
pub(crate) use credentials::{
    anchor_digest, check_own_chain, describe_pem_error, parse_certificates, parse_private_key,
};
pub use federated::FederatedBundles;
pub use files::FileSourceBuilder;
pub use memory::MemorySource;
#[cfg(feature = "workload-api")]
pub use workload_api::WorkloadApiSourceBuilder;

use crate::reload::{Live, Publish, Writer};

/// A credential snapshot with its revision number (1 for the first, then one more per change).
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) revision: u64,
    pub(crate) credentials: Credentials,
}

/// A live, watchable handle on the current credentials of any source.
///
/// Cheap to clone. Background work of a source (polling files, following the Workload API)
/// stops when the last handle of the source, and of every channel built from it, is dropped.
#[derive(Clone)]
pub struct CredentialSource {
    live: Live<Snapshot>,
}

/// The writing side of a [`CredentialSource`], held by the background task of a source.
pub(crate) struct Publisher {
    writer: Writer<Snapshot>,
    kind: &'static str,
}

impl CredentialSource {
    pub(crate) fn new(kind: &'static str, initial: Credentials) -> (Self, Publisher) {
        let svid = initial.svid().clone();
        crate::telemetry::svid_not_after(kind, svid.spiffe_id(), svid.not_after());
        let (live, writer) = Live::new(
            kind,
            "credential",
            Snapshot {
                revision: 1,
                credentials: initial,
            },
        );
        (Self { live }, Publisher { writer, kind })
    }

    /// The current credentials.
    pub fn current(&self) -> Credentials {
        self.live.load().credentials.clone()
    }

    /// The revision of the current credentials: 1 for the first, one more per change.
    pub fn revision(&self) -> u64 {
        self.live.load().revision
    }

    /// A receiver that sees each new revision number; `changed().await` waits for a rotation.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.live.notices().subscribe()
    }

    /// How many reloads failed validation (or could not be read) and were discarded, keeping the
    /// last good credentials.
    pub fn failed_reloads(&self) -> u64 {
        self.live.notices().failed_reloads()
    }

    /// A receiver that sees the count of failed reloads change.
    pub fn subscribe_failed_reloads(&self) -> watch::Receiver<u64> {
        self.live.notices().subscribe_failed_reloads()
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.live.current()
    }
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self.live.load();
        f.debug_struct("CredentialSource")
            .field("kind", &self.live.notices().kind())
            .field("revision", &snapshot.revision)
            .field(
                "spiffe_id",
                &snapshot.credentials.svid().spiffe_id().to_string(),
            )
            .finish()
    }
}

impl Publisher {
    /// Publishes new credentials; returns false when every handle of the source is gone.
    pub(crate) fn publish(&self, credentials: Credentials) -> bool {
        let spiffe_id = credentials.svid().spiffe_id().clone();
        let not_after = credentials.svid().not_after();
        let trust_domains = credentials.bundles().len();
        // The snapshot carries its revision, so caches keyed by it see the bundles it names.
        let Some(revision) = self.writer.update(|_, revision| {
            Some(Snapshot {
                revision,
                credentials,
            })
        }) else {
            return false;
        };
        tracing::info!(
            source = self.kind,
            revision,
            spiffe_id = %spiffe_id,
            trust_domains,
            "credentials rotated"
        );
        crate::telemetry::credential_reload(self.kind, "applied");
        crate::telemetry::svid_not_after(self.kind, &spiffe_id, not_after);
        true
    }

    /// Records a reload that was refused; the last good credentials stay in use.
    pub(crate) fn reject(&self, error: &dyn Display) {
        if self.writer.is_alive() {
            crate::telemetry::credential_reload(self.kind, "refused");
        }
        self.writer.refuse(error);
    }

    /// Records a part of an update that was refused (the rest is published): counted as a
    /// failed reload and logged.
    #[cfg(feature = "workload-api")]
    pub(crate) fn reject_part(&self, part: &'static str, error: &dyn Display) {
        if self.writer.is_alive() {
            crate::telemetry::credential_reload(self.kind, "refused");
        }
        self.writer.refuse_part(part, error);
    }

    /// The credentials currently published, if any handle of the source is left.
    #[cfg(feature = "workload-api")]
    pub(crate) fn current(&self) -> Option<Credentials> {
        self.writer
            .current()
            .map(|snapshot| snapshot.credentials.clone())
    }

    /// Completes when every handle of the source is gone.
    pub(crate) async fn closed(&self) {
        self.writer.closed().await;
    }
}

impl Publish<Credentials> for Publisher {
    fn publish(&self, credentials: Credentials) -> bool {
        Publisher::publish(self, credentials)
    }

    fn refuse(&self, error: &dyn Display) {
        self.reject(error);
    }

    fn is_alive(&self) -> bool {
        self.writer.is_alive()
    }
}
