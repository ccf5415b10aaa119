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
//!
//! # Security
//!
//! A snapshot is published only after it validated completely; a reload that fails keeps the
//! last good snapshot, and says why in a `tracing` warning.

mod credentials;
mod files;
mod memory;
pub(crate) mod status;
#[cfg(feature = "workload-api")]
mod workload_api;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use credentials::{Credentials, Svid, TrustBundle, TrustBundles};
pub(crate) use credentials::{check_own_chain, parse_certificates, parse_private_key};
pub use files::FileSourceBuilder;
pub use memory::MemorySource;
#[cfg(feature = "workload-api")]
pub use workload_api::WorkloadApiSourceBuilder;

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
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<Snapshot>,
    revisions: watch::Sender<u64>,
    failed_reloads: watch::Sender<u64>,
    kind: &'static str,
    /// Serializes publishing (read the revision, store the next one), and counts the reloads
    /// refused since the last one applied, so a recovery can be logged.
    publishing: std::sync::Mutex<u64>,
    /// Dropped with the last handle; background tasks watch for that.
    _stop: watch::Sender<()>,
}

/// The writing side of a [`CredentialSource`], held by the background task of a source.
pub(crate) struct Publisher {
    shared: std::sync::Weak<Shared>,
}

impl CredentialSource {
    pub(crate) fn new(
        kind: &'static str,
        initial: Credentials,
    ) -> (Self, Publisher, watch::Receiver<()>) {
        let (stop_tx, stop_rx) = watch::channel(());
        let (revisions, _) = watch::channel(1);
        let (failed_reloads, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(Snapshot {
                revision: 1,
                credentials: initial,
            }),
            revisions,
            failed_reloads,
            kind,
            publishing: std::sync::Mutex::new(0),
            _stop: stop_tx,
        });
        let publisher = Publisher {
            shared: Arc::downgrade(&shared),
        };
        let svid = shared.current.load().credentials.svid().clone();
        crate::telemetry::svid_not_after(kind, svid.spiffe_id(), svid.not_after());
        (Self { shared }, publisher, stop_rx)
    }

    /// The current credentials.
    pub fn current(&self) -> Credentials {
        self.shared.current.load().credentials.clone()
    }

    /// The revision of the current credentials: 1 for the first, one more per change.
    pub fn revision(&self) -> u64 {
        self.shared.current.load().revision
    }

    /// A receiver that sees each new revision number; `changed().await` waits for a rotation.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.revisions.subscribe()
    }

    /// How many reloads failed validation (or could not be read) and were discarded, keeping the
    /// last good credentials.
    pub fn failed_reloads(&self) -> u64 {
        *self.shared.failed_reloads.borrow()
    }

    /// A receiver that sees the count of failed reloads change.
    pub fn subscribe_failed_reloads(&self) -> watch::Receiver<u64> {
        self.shared.failed_reloads.subscribe()
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let snapshot = self.shared.current.load();
        f.debug_struct("CredentialSource")
            .field("kind", &self.shared.kind)
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
        let Some(shared) = self.shared.upgrade() else {
            return false;
        };
        // Two updates at once must not both publish revision n + 1: caches are keyed by it.
        let mut refused_since = shared
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let revision = shared.current.load().revision + 1;
        if *refused_since > 0 {
            tracing::info!(
                source = shared.kind,
                revision,
                refused_reloads = *refused_since,
                "credential reload recovered: new credentials applied after refused reloads"
            );
            *refused_since = 0;
        }
        tracing::info!(
            source = shared.kind,
            revision,
            spiffe_id = %credentials.svid().spiffe_id(),
            trust_domains = credentials.bundles().len(),
            "credentials rotated"
        );
        crate::telemetry::credential_reload(shared.kind, "applied");
        crate::telemetry::svid_not_after(
            shared.kind,
            credentials.svid().spiffe_id(),
            credentials.svid().not_after(),
        );
        shared.current.store(Arc::new(Snapshot {
            revision,
            credentials,
        }));
        shared.revisions.send_replace(revision);
        true
    }

    /// Records a reload that was refused; the last good credentials stay in use.
    pub(crate) fn reject(&self, error: &crate::ConfigError) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        tracing::warn!(
            source = shared.kind,
            error = %error,
            "credential reload refused; keeping the last good credentials"
        );
        crate::telemetry::credential_reload(shared.kind, "refused");
        *shared
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        shared.failed_reloads.send_modify(|n| *n += 1);
    }

    /// Records a part of an update that was refused (the rest is published): counted as a
    /// failed reload and logged.
    #[cfg(feature = "workload-api")]
    pub(crate) fn reject_part(&self, part: &'static str, error: &crate::ConfigError) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        tracing::warn!(
            source = shared.kind,
            part,
            error = %error,
            "part of a credential update refused; keeping its last good version"
        );
        crate::telemetry::credential_reload(shared.kind, "refused");
        shared.failed_reloads.send_modify(|n| *n += 1);
    }

    /// The credentials currently published, if any handle of the source is left.
    #[cfg(feature = "workload-api")]
    pub(crate) fn current(&self) -> Option<Credentials> {
        self.shared
            .upgrade()
            .map(|shared| shared.current.load().credentials.clone())
    }

    pub(crate) fn is_alive(&self) -> bool {
        self.shared.strong_count() > 0
    }
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use super::*;

    /// Runs `f` with a subscriber that keeps every log line, and returns them.
    fn logged(f: impl FnOnce()) -> String {
        let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(lines.lock().unwrap().clone()).unwrap()
    }

    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_recovery_after_refused_reloads_is_logged_once() {
        let ca = crate::testkit::DevCa::new("example.org").unwrap();
        let credentials = ca.credentials("spiffe://example.org/web").unwrap();
        let (source, publisher, _stop) = CredentialSource::new("test", credentials.clone());
        let refused = crate::ConfigError::WorkloadApi {
            endpoint: "unix:/tmp/agent.sock".into(),
            problem: crate::error::WorkloadApiProblem::Client {
                message: "broken".into(),
            },
        };
        let log = logged(|| {
            publisher.reject(&refused);
            publisher.reject(&refused);
            assert!(publisher.publish(credentials.clone()));
            assert!(publisher.publish(credentials.clone()));
        });
        assert_eq!(source.revision(), 3);
        let recoveries: Vec<_> = log.lines().filter(|l| l.contains("recovered")).collect();
        assert_eq!(recoveries.len(), 1, "{log}");
        assert!(recoveries[0].contains("refused_reloads=2"), "{log}");
    }
}
