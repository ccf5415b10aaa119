//! The live value: a snapshot swapped atomically, its revision, and the notifications of changes
//! and refused reloads. Readers ([`Live`]) and the writer ([`Writer`]) are apart.

use std::fmt::Display;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

/// The `tracing` target of the lines this room writes (refused reloads, recoveries).
const TARGET: &str = "secure_channel::reload";

/// A reading handle on a live value; cheap to clone.
///
/// Reading costs one atomic load. The value is stored before its revision is announced, so a
/// reader that reads [`Notices::revision`] and then the value never pairs a new revision with
/// an old value (caches keyed by revision rely on that).
pub(crate) struct Live<T> {
    shared: Arc<Shared<T>>,
}

/// The writing side of a [`Live`]. It does not keep the value alive: once every [`Live`] is
/// dropped, writing reports that nobody reads any more, and background work stops.
pub(crate) struct Writer<T> {
    shared: Weak<Shared<T>>,
}

struct Shared<T> {
    current: ArcSwap<T>,
    notices: Notices,
}

/// The part of a live value that does not depend on what it holds: the revision (1 for the
/// first value, one more per change), the count of refused reloads, and their notifications.
pub(crate) struct Notices {
    /// Names the source in log lines (`files`, `jwks-url`, `policy`, ...).
    kind: &'static str,
    /// What the value is, in log lines (`credentials`, `keys`, `policy`).
    what: &'static str,
    revisions: watch::Sender<u64>,
    failed_reloads: watch::Sender<u64>,
    /// Serializes writers (each computes the next revision from the current one), and counts
    /// the reloads refused since the last value applied, so that a recovery can be logged.
    writing: Mutex<u64>,
}

impl<T> Live<T> {
    /// A live value holding `initial` at revision 1, and its writer.
    pub(crate) fn new(kind: &'static str, what: &'static str, initial: T) -> (Self, Writer<T>) {
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(initial),
            notices: Notices {
                kind,
                what,
                revisions: watch::channel(1).0,
                failed_reloads: watch::channel(0).0,
                writing: Mutex::new(0),
            },
        });
        let writer = Writer {
            shared: Arc::downgrade(&shared),
        };
        (Self { shared }, writer)
    }

    /// The current value.
    pub(crate) fn current(&self) -> Arc<T> {
        self.shared.current.load_full()
    }

    /// The current value without touching its reference count (for per-request reads).
    pub(crate) fn load(&self) -> Guard<Arc<T>> {
        self.shared.current.load()
    }

    /// The revision and refused-reload counts, and their notifications.
    pub(crate) fn notices(&self) -> &Notices {
        &self.shared.notices
    }
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Notices {
    /// Names the source (`files`, `jwks-url`, `policy`, ...).
    pub(crate) fn kind(&self) -> &'static str {
        self.kind
    }

    /// The revision of the current value: 1 for the first, one more per change.
    pub(crate) fn revision(&self) -> u64 {
        *self.revisions.borrow()
    }

    /// A receiver that sees each new revision; `changed().await` waits for a change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.revisions.subscribe()
    }

    /// How many reloads were refused (unreadable or invalid), keeping the last good value.
    pub(crate) fn failed_reloads(&self) -> u64 {
        *self.failed_reloads.borrow()
    }

    /// A receiver that sees the count of refused reloads change.
    pub(crate) fn subscribe_failed_reloads(&self) -> watch::Receiver<u64> {
        self.failed_reloads.subscribe()
    }

    fn writing(&self) -> std::sync::MutexGuard<'_, u64> {
        // A poisoned lock only means a panic elsewhere while holding it; the count stays usable.
        self.writing.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T> Writer<T> {
    /// Replaces the value with what `next` makes of the current one and the revision it will be
    /// published as; `next` returning `None` changes nothing.
    ///
    /// Returns the new revision; `None` when nothing changed or when no reader is left. Writers
    /// are serialized: two updates never publish the same revision.
    pub(crate) fn update(&self, next: impl FnOnce(&T, u64) -> Option<T>) -> Option<u64> {
        let shared = self.shared.upgrade()?;
        let notices = &shared.notices;
        let mut refused_since = notices.writing();
        let revision = notices.revision() + 1;
        let value = next(&shared.current.load(), revision)?;
        if *refused_since > 0 {
            tracing::info!(
                target: TARGET,
                source = notices.kind,
                revision,
                refused_reloads = *refused_since,
                "{} reload recovered: a new value applied after refused reloads",
                notices.what,
            );
            *refused_since = 0;
        }
        // The value first, then its revision: see `Live`.
        shared.current.store(Arc::new(value));
        notices.revisions.send_replace(revision);
        Some(revision)
    }

    /// Replaces the value; returns its revision, `None` when no reader is left.
    pub(crate) fn publish(&self, value: T) -> Option<u64> {
        self.update(|_, _| Some(value))
    }

    /// Records a refused reload: logged, counted and notified; the last good value stays, and
    /// the next value applied is logged as a recovery.
    pub(crate) fn refuse(&self, error: &dyn Display) {
        self.count_refusal(None, error);
    }

    /// Records a part of an update that was refused while the rest is published: logged,
    /// counted and notified, but the update itself is no recovery.
    #[cfg_attr(
        not(any(feature = "workload-api", test)),
        expect(dead_code, reason = "only the Workload API source publishes in parts")
    )]
    pub(crate) fn refuse_part(&self, part: &'static str, error: &dyn Display) {
        self.count_refusal(Some(part), error);
    }

    fn count_refusal(&self, part: Option<&'static str>, error: &dyn Display) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let notices = &shared.notices;
        let what = notices.what;
        match part {
            None => {
                tracing::warn!(
                    target: TARGET,
                    source = notices.kind,
                    %error,
                    "{what} reload refused; keeping the last good {what}"
                );
                *notices.writing() += 1;
            }
            Some(part) => tracing::warn!(
                target: TARGET,
                source = notices.kind,
                part,
                %error,
                "part of a {what} update refused; keeping its last good version"
            ),
        }
        notices.failed_reloads.send_modify(|n| *n += 1);
    }

    /// The current value, if any reader is left.
    #[cfg_attr(
        not(any(feature = "workload-api", test)),
        expect(
            dead_code,
            reason = "only the Workload API source merges with the current value"
        )
    )]
    pub(crate) fn current(&self) -> Option<Arc<T>> {
        self.shared
            .upgrade()
            .map(|shared| shared.current.load_full())
    }

    /// Whether any reader is left.
    pub(crate) fn is_alive(&self) -> bool {
        self.shared.strong_count() > 0
    }

    /// Completes when no reader is left (for background tasks to stop on).
    pub(crate) async fn closed(&self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut revisions = shared.notices.revisions.subscribe();
        drop(shared);
        // The sender lives as long as the readers: it is dropped with the last of them.
        while revisions.changed().await.is_ok() {}
    }
}

impl<T> Clone for Writer<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Weak::clone(&self.shared),
        }
    }
}
