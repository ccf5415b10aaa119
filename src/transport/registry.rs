//! The registry of a channel's live connections, and the sweeper that re-checks them when
//! trust changes and cuts off those no longer trusted.
//!
//! Every stream a channel's handshake yields registers here (an insert when it is made, a
//! removal when it is dropped); the request path does nothing. The sweeper task wakes on a
//! change (credentials or bundles, the admission policy, revocation lists, deny-lists), re-checks
//! every registered peer, and cuts off those refused now; and at a connection's deadlines: its
//! chain's expiry, its maximum age, the hard close after a cut-off's grace period.
//!
//! A re-check validates a chain again only when what it was validated against changed (the
//! bundle of its trust domain, or the revocation lists); otherwise it asks only who may connect
//! (deny-lists, allow-list, admission policy), which is a few lookups.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use rustls::time_provider::TimeProvider;
use rustls_pki_types::{CertificateDer, UnixTime};
use spiffe::TrustDomain;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use crate::identity::PeerRejection;
use crate::tls::{Admitted, CurrentTrust, SvidVerifier, TrustMark};
use crate::transport::cutoff::{CutOff, CutOffReason, CutState};
use crate::transport::instant_after;

/// The `tracing` target of cut-off lines.
pub(crate) const TARGET: &str = "secure_channel::trust";

/// Default time between a cut-off's signal and the hard close.
pub(crate) const DEFAULT_CUT_OFF_GRACE: Duration = Duration::from_secs(10);

/// A named source of trust changes and the receiver of its revisions.
pub(crate) type Trigger = (&'static str, watch::Receiver<u64>);

/// How the registry cuts connections off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CutOffPolicy {
    /// Between the signal and the hard close.
    pub(crate) grace: Duration,
    /// Connections older than this are cut off (`None`: no limit).
    pub(crate) max_age: Option<Duration>,
}

impl Default for CutOffPolicy {
    fn default() -> Self {
        Self {
            grace: DEFAULT_CUT_OFF_GRACE,
            max_age: None,
        }
    }
}

/// A channel's live connections.
pub(crate) struct Registry {
    state: Mutex<State>,
    policy: CutOffPolicy,
    time: Arc<dyn TimeProvider>,
    /// Woken when a deadline earlier than the sweeper's next one is added.
    deadline_added: Arc<Notify>,
    /// Dropped with the registry: the sweeper's cue to stop.
    _alive: watch::Sender<()>,
    alive: watch::Receiver<()>,
    /// The triggers, until the sweeper starts (with the first connection).
    triggers: Mutex<Option<Vec<Trigger>>>,
    started: AtomicBool,
    /// Counts sweeps begun: a registration that raced one re-checks itself.
    sweeps: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("connections", &self.lock().entries.len())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    next_id: u64,
    entries: HashMap<u64, Tracked>,
    deadlines: BTreeSet<(Instant, u64, Due)>,
}

struct Tracked {
    entry: Arc<Entry>,
    /// Its deadlines in `State::deadlines`, removed with it.
    deadlines: Vec<(Instant, Due)>,
}

/// What happens at a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// The peer's chain expires (checked against the channel's clock).
    Expiry,
    /// The connection reaches the maximum age.
    MaxAge,
    /// The grace period after a cut-off is over.
    Close,
}

/// One live connection.
struct Entry {
    id: u64,
    side: &'static str,
    admitted: Admitted,
    verifier: Arc<SvidVerifier>,
    /// What the chain was last validated against, and until when that holds.
    validated: Mutex<Validated>,
    state: Arc<CutState>,
}

/// The outcome of a connection's last chain validation.
#[derive(Debug, Clone, Copy)]
struct Validated {
    /// The bundle and revocation lists it was validated against.
    under: TrustMark,
    /// The last second (Unix time) the validation holds: the chain's notAfter, or an enforced
    /// revocation list's nextUpdate if that comes first.
    until: i64,
}

/// A change that caused a sweep, for the audit line: `policy revision 4`.
#[derive(Debug, Clone, Copy)]
struct Change {
    what: &'static str,
    /// `None` for a moment rather than a new revision.
    revision: Option<u64>,
}

/// The intermediates a chain was validated with.
type Path = Arc<[CertificateDer<'static>]>;

/// A chain's re-validation: what it was validated against and until when, or why not.
type Revalidation = Result<(TrustMark, i64), PeerRejection>;

/// What one sweep learns once and applies to every connection it concerns.
#[derive(Default)]
struct SweepMemo {
    /// What each trust domain's chains are validated against now.
    trust: HashMap<TrustDomain, Option<CurrentTrust>>,
    /// The chains validated in this sweep, by verifier and leaf: the connections of one peer
    /// (often many) share one validation.
    chains: HashMap<(usize, [u8; 32]), (Path, Revalidation)>,
}

impl SweepMemo {
    /// Validates `entry`'s chain again at `now`, once per verifier, leaf and path.
    fn reverify(&mut self, entry: &Entry, now: UnixTime) -> Revalidation {
        let identity = &entry.admitted.identity;
        let key = (
            Arc::as_ptr(&entry.verifier).addr(),
            *identity.thumbprint_sha256(),
        );
        if let Some((path, result)) = self.chains.get(&key)
            && **path == *entry.admitted.path
        {
            return result.clone();
        }
        let result =
            entry
                .verifier
                .reverify(identity.leaf_certificate(), &entry.admitted.path, now);
        self.chains
            .insert(key, (entry.admitted.path.clone(), result.clone()));
        result
    }
}

/// What a maximum-age deadline names in the audit line.
const MAX_AGE: Change = Change {
    what: "the maximum connection age",
    revision: None,
};

/// What an expiry deadline names in the audit line.
const VALIDITY_END: Change = Change {
    what: "the end of the chain's validity (a certificate's notAfter or a revocation list's nextUpdate)",
    revision: None,
};

/// A stream's place in the registry; dropping it removes the connection.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.registry.lock();
        if let Some(tracked) = state.entries.remove(&self.id) {
            for (at, due) in tracked.deadlines {
                state.deadlines.remove(&(at, self.id, due));
            }
        }
    }
}

impl Registry {
    /// A registry that cuts off by `policy`, sweeping on `triggers` once connections exist.
    pub(crate) fn new(
        policy: CutOffPolicy,
        time: Arc<dyn TimeProvider>,
        triggers: Vec<Trigger>,
    ) -> Self {
        let (alive_tx, alive) = watch::channel(());
        Self {
            state: Mutex::new(State::default()),
            policy,
            time,
            deadline_added: Arc::new(Notify::new()),
            _alive: alive_tx,
            alive,
            triggers: Mutex::new(Some(triggers)),
            started: AtomicBool::new(false),
            sweeps: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> UnixTime {
        self.time.current_time().unwrap_or_else(UnixTime::now)
    }

    /// How many sweeps have begun; read before a peer is verified, handed to
    /// [`register`](Self::register).
    pub(crate) fn sweeps(&self) -> u64 {
        self.sweeps.load(Ordering::SeqCst)
    }

    /// The number of live connections.
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Registers a connection whose peer `admitted` was verified by `verifier` after
    /// `sweeps_before` sweeps had begun. Starts the sweeper with the first connection (within a
    /// tokio runtime).
    pub(crate) fn register(
        self: &Arc<Self>,
        side: &'static str,
        admitted: Admitted,
        verifier: Arc<SvidVerifier>,
        sweeps_before: u64,
    ) -> (Registration, Arc<CutState>) {
        self.start_sweeper();
        let state = Arc::new(CutState::default());
        let mut deadlines = vec![(self.expiry_deadline(admitted.valid_until), Due::Expiry)];
        deadlines.extend(
            self.policy
                .max_age
                .map(|age| (instant_after(age), Due::MaxAge)),
        );
        let first = deadlines.iter().map(|(at, _)| *at).min();
        let id = {
            let mut guard = self.lock();
            let id = guard.next_id;
            guard.next_id += 1;
            let earliest = guard.deadlines.first().map(|(at, ..)| *at);
            for (at, due) in &deadlines {
                guard.deadlines.insert((*at, id, *due));
            }
            let entry = Arc::new(Entry {
                id,
                side,
                validated: Mutex::new(Validated {
                    under: admitted.validated_under,
                    until: admitted.valid_until,
                }),
                admitted,
                verifier,
                state: state.clone(),
            });
            guard.entries.insert(id, Tracked { entry, deadlines });
            if earliest.is_none_or(|earliest| first.is_some_and(|first| first < earliest)) {
                self.deadline_added.notify_one();
            }
            id
        };
        let registration = Registration {
            registry: self.clone(),
            id,
        };
        if self.sweeps() != sweeps_before {
            // A sweep began while this peer was being verified and may have missed it.
            // The lock is released before the re-check, which takes it again to cut off.
            let entry = self.lock().entries.get(&id).map(|t| t.entry.clone());
            if let Some(entry) = entry {
                self.recheck(&entry, self.now(), &mut SweepMemo::default(), &[], false);
            }
        }
        (registration, state)
    }

    /// When a validation that holds `until` (the last valid second, Unix time) ends: one second
    /// after, on the tokio clock.
    fn expiry_deadline(&self, until: i64) -> Instant {
        let now = i64::try_from(self.now().as_secs()).unwrap_or(i64::MAX);
        let left = until.saturating_add(1).saturating_sub(now);
        instant_after(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
    }

    fn start_sweeper(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let triggers = self
            .triggers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Registration happens in async handshakes: a runtime is there. Without one, no
            // sweeper: say so rather than fail the connection.
            tracing::error!(
                target: TARGET,
                "no tokio runtime: connections of this channel are not re-checked on trust changes"
            );
            return;
        };
        let (tx, changes) = mpsc::unbounded_channel();
        for (what, receiver) in triggers {
            runtime.spawn(forward(what, receiver, tx.clone()));
        }
        runtime.spawn(sweeper(
            Arc::downgrade(self),
            changes,
            self.deadline_added.clone(),
            self.alive.clone(),
        ));
    }

    /// Every live connection that is not cut off yet.
    fn live_entries(&self) -> Vec<Arc<Entry>> {
        self.lock()
            .entries
            .values()
            .filter(|t| t.entry.state.cut_off().is_none())
            .map(|t| t.entry.clone())
            .collect()
    }

    /// Re-checks every live connection after `changes`; returns how many were cut off.
    fn sweep(&self, changes: &[Change]) -> usize {
        self.sweeps.fetch_add(1, Ordering::SeqCst);
        let entries = self.live_entries();
        let now = self.now();
        let recheck_all = |share: &[&Arc<Entry>]| {
            let mut memo = SweepMemo::default();
            share
                .iter()
                .filter(|entry| !self.recheck(entry, now, &mut memo, changes, false))
                .count()
        };
        let workers = sweep_workers(entries.len());
        if workers <= 1 {
            return recheck_all(&entries.iter().collect::<Vec<_>>());
        }
        // Many connections: on several threads (a change that makes every chain be validated
        // again costs a signature check or two per peer). A peer's connections go to one
        // thread, so that its chain is still validated once.
        let mut shares = vec![Vec::new(); workers];
        for entry in &entries {
            let byte = entry.admitted.identity.thumbprint_sha256()[0];
            shares[usize::from(byte) % workers].push(entry);
        }
        std::thread::scope(|scope| {
            let running: Vec<_> = shares
                .iter()
                .map(|share| {
                    std::thread::Builder::new()
                        .name("secure-channel-sweep".into())
                        .spawn_scoped(scope, || recheck_all(share))
                        .map_err(|_| share)
                })
                .collect();
            running
                .into_iter()
                .map(|thread| match thread {
                    Ok(thread) => thread.join().unwrap_or(0),
                    // No thread to be had: this one does the share.
                    Err(share) => recheck_all(share),
                })
                .sum()
        })
    }

    /// Re-checks one connection at `now`; cuts it off (and returns `false`) if its peer is
    /// refused now. The chain is validated again when what it was validated against changed
    /// (its trust anchor left the bundle, or the revocation lists changed) or when
    /// `revalidate`; otherwise only what is decided after validation is asked again.
    fn recheck(
        &self,
        entry: &Entry,
        now: UnixTime,
        memo: &mut SweepMemo,
        changes: &[Change],
        revalidate: bool,
    ) -> bool {
        let identity = &entry.admitted.identity;
        let trust_domain = identity.trust_domain();
        if !memo.trust.contains_key(trust_domain) {
            memo.trust.insert(
                trust_domain.clone(),
                entry.verifier.current_trust(trust_domain),
            );
        }
        let current = memo.trust.get(trust_domain).and_then(Option::as_ref);
        let mut validated = entry.validated.lock().unwrap_or_else(|p| p.into_inner());
        let mut moved = None;
        let holds = current.is_some_and(|current| current.holds(&validated.under));
        let result = if !revalidate && holds {
            entry.verifier.readmit(identity)
        } else {
            memo.reverify(entry, now).map(|(under, until)| {
                if until != validated.until {
                    moved = Some(until);
                }
                *validated = Validated { under, until };
            })
        };
        drop(validated);
        match result {
            Ok(()) => {
                if let Some(until) = moved {
                    // New revocation lists (a later nextUpdate) or a new path: the expiry
                    // deadline follows.
                    self.reschedule_expiry(entry.id, until);
                }
                true
            }
            Err(rejection) => {
                let reason = CutOffReason::of(&rejection);
                let detail = match &rejection {
                    // Re-checks do not list what would be admitted (it can be thousands).
                    PeerRejection::NotAllowed { presented, .. } => format!(
                        "{presented} is no longer admitted by the allow-list or the admission policy"
                    ),
                    other => other.to_string(),
                };
                self.cut_off(entry, reason, detail, changes);
                false
            }
        }
    }

    /// Replaces the expiry deadline of connection `id` by the end of `until`.
    fn reschedule_expiry(&self, id: u64, until: i64) {
        let at = self.expiry_deadline(until);
        let mut state = self.lock();
        let earliest = state.deadlines.first().map(|(at, ..)| *at);
        let State {
            entries, deadlines, ..
        } = &mut *state;
        let Some(tracked) = entries.get_mut(&id) else {
            return;
        };
        for (old, _) in tracked
            .deadlines
            .iter()
            .filter(|(_, due)| *due == Due::Expiry)
        {
            deadlines.remove(&(*old, id, Due::Expiry));
        }
        tracked.deadlines.retain(|(_, due)| *due != Due::Expiry);
        tracked.deadlines.push((at, Due::Expiry));
        deadlines.insert((at, id, Due::Expiry));
        if earliest.is_none_or(|earliest| at < earliest) {
            self.deadline_added.notify_one();
        }
    }

    /// Signals the cut-off, counts and logs it, and schedules the hard close.
    fn cut_off(&self, entry: &Entry, reason: CutOffReason, detail: String, changes: &[Change]) {
        let grace = self.policy.grace;
        let change = describe(changes);
        let detail = format!("{detail} (after {change})");
        if !entry.state.cut(CutOff::new(reason, detail, grace)) {
            return;
        }
        crate::telemetry::connection_cut_off(entry.side, reason.as_str());
        let identity = &entry.admitted.identity;
        tracing::warn!(
            target: TARGET,
            side = entry.side,
            peer = %identity.spiffe_id(),
            certificate_sha256 = %identity.thumbprint_sha256_hex(),
            reason = reason.as_str(),
            change = %change,
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            detail = entry.state.cut_off().map(CutOff::detail),
            "connection cut off: its peer is no longer trusted"
        );
        if grace.is_zero() {
            entry.state.close();
            return;
        }
        let at = instant_after(grace);
        let mut state = self.lock();
        let earliest = state.deadlines.first().map(|(at, ..)| *at);
        if let Some(tracked) = state.entries.get_mut(&entry.id) {
            tracked.deadlines.push((at, Due::Close));
            state.deadlines.insert((at, entry.id, Due::Close));
            if earliest.is_none_or(|earliest| at < earliest) {
                self.deadline_added.notify_one();
            }
        }
    }

    /// The earliest deadline.
    fn next_deadline(&self) -> Option<Instant> {
        self.lock().deadlines.first().map(|(at, ..)| *at)
    }

    /// Handles the deadlines that are due at `now`.
    fn run_due(&self, now: Instant) {
        let due: Vec<(Arc<Entry>, Due, Instant)> = {
            let mut state = self.lock();
            let mut due = Vec::new();
            while let Some(&(at, id, what)) = state.deadlines.first() {
                if at > now {
                    break;
                }
                state.deadlines.pop_first();
                if let Some(tracked) = state.entries.get_mut(&id) {
                    tracked.deadlines.retain(|&(a, w)| (a, w) != (at, what));
                    due.push((tracked.entry.clone(), what, at));
                }
            }
            due
        };
        for (entry, what, _) in due {
            match what {
                Due::Close => entry.state.close(),
                Due::MaxAge => {
                    let age = self.policy.max_age.unwrap_or_default();
                    self.cut_off(
                        &entry,
                        CutOffReason::MaxAge,
                        format!("the connection reached its maximum age of {age:?}"),
                        &[MAX_AGE],
                    );
                }
                Due::Expiry => self.expire(&entry),
            }
        }
    }

    /// At the end of the validity of the connection's last validation (its chain's notAfter, or
    /// a revocation list's nextUpdate): validates again, which cuts it off with the reason
    /// (expired; revocation lists past their nextUpdate) unless new lists arrived meanwhile. If
    /// the channel's clock says not yet (the tokio clock ran ahead), looks again later.
    fn expire(&self, entry: &Arc<Entry>) {
        let now = self.now();
        let until = entry
            .validated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .until;
        if i64::try_from(now.as_secs()).unwrap_or(i64::MAX) <= until {
            self.reschedule_expiry(entry.id, until);
            return;
        }
        if self.recheck(entry, now, &mut SweepMemo::default(), &[VALIDITY_END], true) {
            let until = entry
                .validated
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .until;
            self.reschedule_expiry(entry.id, until);
        }
    }
}

/// The change named in a cut-off's audit line.
fn describe(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "a change while the connection was being established".to_owned();
    }
    changes
        .iter()
        .map(|c| match c.revision {
            Some(revision) => format!("{} revision {revision}", c.what),
            None => c.what.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Forwards the revisions of one trigger to the sweeper, until either side is gone.
async fn forward(
    what: &'static str,
    mut revisions: watch::Receiver<u64>,
    sweeper: mpsc::UnboundedSender<Change>,
) {
    loop {
        tokio::select! {
            changed = revisions.changed() => {
                if changed.is_err() {
                    return;
                }
                let revision = *revisions.borrow_and_update();
                if sweeper
                    .send(Change {
                        what,
                        revision: Some(revision),
                    })
                    .is_err()
                {
                    return;
                }
            }
            () = sweeper.closed() => return,
        }
    }
}

/// The sweeper task: sweeps on changes and handles deadlines, until the registry is dropped.
async fn sweeper(
    registry: Weak<Registry>,
    mut changes: mpsc::UnboundedReceiver<Change>,
    deadline_added: Arc<Notify>,
    mut alive: watch::Receiver<()>,
) {
    let mut triggers_open = true;
    loop {
        let next = match registry.upgrade() {
            Some(registry) => registry.next_deadline(),
            None => return,
        };
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            change = changes.recv(), if triggers_open => {
                let Some(change) = change else {
                    triggers_open = false;
                    continue;
                };
                let mut batch = vec![change];
                while let Ok(more) = changes.try_recv() {
                    batch.push(more);
                }
                let Some(registry) = registry.upgrade() else { return };
                // Chain validations can add up: off the async workers.
                let sweep = tokio::task::spawn_blocking(move || {
                    let cut = registry.sweep(&batch);
                    tracing::debug!(target: TARGET, cut, changes = ?batch, "connections re-checked");
                });
                let _ = sweep.await;
            }
            () = sleep => {
                let Some(registry) = registry.upgrade() else { return };
                registry.run_due(Instant::now());
            }
            () = deadline_added.notified() => {}
            _ = alive.changed() => return,
        }
    }
}

/// Benchmark hook (hidden, testkit only): a connection registered without a socket.
#[cfg(feature = "testkit")]
#[doc(hidden)]
#[derive(Debug)]
pub struct BenchConnection {
    _registration: Registration,
    state: Arc<CutState>,
}

#[cfg(feature = "testkit")]
impl BenchConnection {
    /// Whether the connection was cut off.
    pub fn is_cut_off(&self) -> bool {
        self.state.cut_off().is_some()
    }
}

#[cfg(feature = "testkit")]
impl Registry {
    /// Registers a connection of the peer presenting `chain`, verified by `verifier` now.
    pub(crate) fn bench_register(
        self: &Arc<Self>,
        verifier: &Arc<SvidVerifier>,
        chain: &[rustls_pki_types::CertificateDer<'static>],
    ) -> Result<BenchConnection, crate::identity::PeerRejection> {
        let sweeps = self.sweeps();
        let admitted = verifier.identify(chain, false, self.now())?;
        let (registration, state) = self.register("server", admitted, verifier.clone(), sweeps);
        Ok(BenchConnection {
            _registration: registration,
            state,
        })
    }

    /// Runs one sweep now, on this thread; returns how many connections it cut off.
    pub(crate) fn bench_sweep(&self) -> usize {
        self.sweep(&[Change {
            what: "benchmark",
            revision: None,
        }])
    }
}

/// Connections a sweep thread takes at the least: below that, threads cost more than they save.
const CONNECTIONS_PER_SWEEP_THREAD: usize = 2_048;

/// Most threads a sweep uses.
const MAX_SWEEP_THREADS: usize = 8;

/// How many threads a sweep of `connections` uses: one per core, each with enough to do.
fn sweep_workers(connections: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    cores
        .min(MAX_SWEEP_THREADS)
        .min(connections / CONNECTIONS_PER_SWEEP_THREAD)
        .max(1)
}

#[cfg(all(test, feature = "testkit"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::SystemTime;

    use super::*;
    use crate::identity::AllowList;
    use crate::source::MemorySource;
    use crate::testkit::DevCa;
    use crate::tls::Side;

    const WEB: &str = "spiffe://example.org/web";

    /// A clock the test sets.
    #[derive(Debug)]
    struct Clock(Mutex<SystemTime>);

    impl TimeProvider for Clock {
        fn current_time(&self) -> Option<UnixTime> {
            let now = *self.0.lock().unwrap();
            Some(UnixTime::since_unix_epoch(
                now.duration_since(SystemTime::UNIX_EPOCH).unwrap(),
            ))
        }
    }

    struct Setup {
        ca: DevCa,
        source: MemorySource,
        clock: Arc<Clock>,
    }

    impl Setup {
        fn new() -> Self {
            let ca = DevCa::new("example.org").unwrap();
            let source = MemorySource::new(ca.credentials("spiffe://example.org/api").unwrap());
            Self {
                ca,
                source,
                clock: Arc::new(Clock(Mutex::new(SystemTime::now()))),
            }
        }

        fn verifier(&self, allowed: &[&str]) -> Arc<SvidVerifier> {
            Arc::new(self.plain_verifier(allowed))
        }

        fn plain_verifier(&self, allowed: &[&str]) -> SvidVerifier {
            let provider = crate::crypto::default_provider().unwrap();
            SvidVerifier::new(
                self.source.source(),
                allowed
                    .iter()
                    .map(|id| id.parse().unwrap())
                    .collect::<AllowList>(),
                Side::Clients,
                provider.signature_verification_algorithms,
            )
        }

        fn registry(&self, policy: CutOffPolicy) -> Arc<Registry> {
            Arc::new(Registry::new(policy, self.clock.clone(), Vec::new()))
        }

        fn admitted(&self, verifier: &SvidVerifier) -> Admitted {
            let chain = self.ca.svid(WEB).issue().unwrap().chain().to_vec();
            verifier
                .identify(&chain, false, self.clock.current_time().unwrap())
                .unwrap()
        }
    }

    fn deadlines(registry: &Registry) -> usize {
        registry.lock().deadlines.len()
    }

    #[tokio::test]
    async fn a_dropped_connection_leaves_no_entry_and_no_deadline() {
        let setup = Setup::new();
        let registry = setup.registry(CutOffPolicy {
            max_age: Some(Duration::from_secs(60)),
            ..CutOffPolicy::default()
        });
        let verifier = setup.verifier(&[WEB]);
        let (first, _) =
            registry.register("server", setup.admitted(&verifier), verifier.clone(), 0);
        let (second, _) = registry.register("server", setup.admitted(&verifier), verifier, 0);
        assert_eq!(
            (registry.len(), deadlines(&registry)),
            (2, 4),
            "expiry and max age each"
        );
        drop(first);
        assert_eq!((registry.len(), deadlines(&registry)), (1, 2));
        drop(second);
        assert_eq!((registry.len(), deadlines(&registry)), (0, 0));
    }

    #[tokio::test]
    async fn a_registration_that_raced_a_sweep_rechecks_itself() {
        let setup = Setup::new();
        let registry = setup.registry(CutOffPolicy::default());
        let admitting = setup.verifier(&[WEB]);
        // Admitted by one verifier, registered with one that refuses it now: what a sweep that
        // ran while the handshake finished would have found.
        let refusing = setup.verifier(&[]);
        let before = registry.sweeps();
        let (_quiet, state) = registry.register(
            "server",
            setup.admitted(&admitting),
            refusing.clone(),
            before,
        );
        assert!(
            state.cut_off().is_none(),
            "no sweep in between: no re-check"
        );
        registry.bench_sweep();
        let (_raced, state) =
            registry.register("server", setup.admitted(&admitting), refusing, before);
        let cut = state.cut_off().expect("re-checked at registration");
        assert_eq!(cut.reason(), CutOffReason::NotAllowed);
    }

    #[tokio::test]
    async fn a_chain_is_validated_again_only_when_its_anchor_left_the_bundle() {
        let setup = Setup::new();
        let verifier = setup.verifier(&[WEB]);
        let admitted = setup.admitted(&verifier);
        let under = admitted.validated_under;
        let td = admitted.identity.trust_domain().clone();
        let holds = || verifier.current_trust(&td).unwrap().holds(&under);
        assert!(holds());
        let next = DevCa::new("example.org").unwrap();
        let with = |pem: String| {
            let svid = setup.ca.svid("spiffe://example.org/api").issue().unwrap();
            crate::Credentials::new(
                svid.to_svid().unwrap(),
                crate::TrustBundles::new()
                    .with(crate::TrustBundle::from_pem(td.clone(), pem.as_bytes()).unwrap()),
            )
        };
        // A CA added beside the chain's (a rotation beginning): nothing to validate again.
        setup.source.update(with(format!(
            "{}{}",
            next.bundle_pem(),
            setup.ca.bundle_pem()
        )));
        assert!(holds());
        // The chain's CA gone: validate again (and fail).
        setup.source.update(with(next.bundle_pem()));
        assert!(!holds());
    }

    #[tokio::test]
    async fn a_sweep_validates_a_peer_once_per_verifier() {
        let setup = Setup::new();
        let registry = setup.registry(CutOffPolicy::default());
        let lists =
            crate::revocation::RevocationLists::new([setup.ca.crl(&[]).der().unwrap()]).unwrap();
        let checking = |allowed: &[&str]| {
            Arc::new(setup.plain_verifier(allowed).with_revocation(
                crate::revocation::RevocationChecks::new(Some(lists.clone()), Vec::new()),
            ))
        };
        let (admitting, refusing) = (checking(&[WEB]), checking(&[]));
        let admitted = setup.admitted(&admitting);
        let (_a, first) = registry.register("server", admitted.clone(), admitting.clone(), 0);
        let (_b, second) = registry.register("server", admitted.clone(), admitting, 0);
        // The same chain, registered by a verifier that no longer admits it.
        let (_c, third) = registry.register("server", admitted, refusing, 0);
        // New lists: every chain is validated again, each peer once per verifier.
        lists
            .replace([setup.ca.crl(&[]).number(2).der().unwrap()])
            .unwrap();
        assert_eq!(registry.bench_sweep(), 1);
        assert!(first.cut_off().is_none() && second.cut_off().is_none());
        assert_eq!(third.cut_off().unwrap().reason(), CutOffReason::NotAllowed);
    }

    #[tokio::test]
    async fn a_large_sweep_on_several_threads_cuts_off_exactly_the_refused_peers() {
        let setup = Setup::new();
        let registry = setup.registry(CutOffPolicy::default());
        let denied = crate::revocation::DenyList::new();
        let verifier = Arc::new(setup.plain_verifier(&[WEB]).with_revocation(
            crate::revocation::RevocationChecks::new(None, vec![denied.clone()]),
        ));
        let peers: Vec<Admitted> = (0..8).map(|_| setup.admitted(&verifier)).collect();
        let connections: Vec<_> = (0..2 * CONNECTIONS_PER_SWEEP_THREAD)
            .map(|i| {
                let peer = peers[i % peers.len()].clone();
                let leaf = *peer.identity.thumbprint_sha256();
                let (registration, state) = registry.register("server", peer, verifier.clone(), 0);
                (leaf, registration, state)
            })
            .collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(sweep_workers(connections.len()), cores.clamp(1, 2));
        assert_eq!(sweep_workers(CONNECTIONS_PER_SWEEP_THREAD - 1), 1);

        // Two of the eight peers' certificates are denied: their connections, and only
        // theirs, are cut off, whichever thread re-checked them.
        let refused = [
            peers[2].identity.thumbprint_sha256(),
            peers[5].identity.thumbprint_sha256(),
        ];
        for leaf in refused {
            denied.deny_certificate_sha256(*leaf);
        }
        assert_eq!(registry.bench_sweep(), connections.len() / 4);
        for (leaf, _, state) in &connections {
            assert_eq!(
                state.cut_off().is_some(),
                refused.contains(&leaf),
                "{leaf:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_handshake_refusal_lists_what_is_expected_and_a_recheck_does_not() {
        let setup = Setup::new();
        let refusing = setup.verifier(&["spiffe://example.org/api"]);
        let chain = setup.ca.svid(WEB).issue().unwrap().chain().to_vec();
        let now = setup.clock.current_time().unwrap();
        let expected = |result| match result {
            Err(PeerRejection::NotAllowed { expected, .. }) => expected,
            other => panic!("expected NotAllowed, got {other:?}"),
        };
        let handshake = refusing.verify(&chain[0], &chain[1..], now).map(drop);
        assert_eq!(
            expected(handshake).to_string(),
            "[spiffe://example.org/api]"
        );
        let identity = setup.admitted(&setup.verifier(&[WEB])).identity;
        assert!(expected(refusing.readmit(&identity)).is_empty());
        let recheck = refusing.reverify(&chain[0], &chain[1..], now).map(drop);
        assert!(expected(recheck).is_empty());
    }

    #[tokio::test]
    async fn a_sweep_memo_answers_only_for_the_same_path() {
        let setup = Setup::new();
        let verifier = setup.verifier(&[WEB]);
        let intermediate = setup.ca.intermediate().unwrap();
        let chain = intermediate.svid(WEB).issue().unwrap().chain().to_vec();
        let now = setup.clock.current_time().unwrap();
        let admitted = verifier.identify(&chain, false, now).unwrap();
        let entry = |path: Path| Entry {
            id: 0,
            side: "server",
            validated: Mutex::new(Validated {
                under: admitted.validated_under,
                until: admitted.valid_until,
            }),
            admitted: Admitted {
                path,
                ..admitted.clone()
            },
            verifier: verifier.clone(),
            state: Arc::default(),
        };
        let mut memo = SweepMemo::default();
        assert!(memo.reverify(&entry(admitted.path.clone()), now).is_ok());
        // The same leaf without its intermediate does not validate: not the memo's answer.
        assert!(memo.reverify(&entry(Vec::new().into()), now).is_err());
    }

    /// Whether the sweeper was told of an earlier deadline since last asked (takes the permit).
    async fn sweeper_woken(registry: &Registry) -> bool {
        tokio::time::timeout(Duration::ZERO, registry.deadline_added.notified())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn moving_the_expiry_replaces_only_that_deadline_and_wakes_the_sweeper_when_earlier() {
        let setup = Setup::new();
        let registry = setup.registry(CutOffPolicy {
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            ..CutOffPolicy::default()
        });
        let verifier = setup.verifier(&[WEB]);
        let admitted = setup.admitted(&verifier);
        let until = admitted.valid_until;
        let (connection, _state) = registry.register("server", admitted, verifier, 0);
        assert!(sweeper_woken(&registry).await, "the first deadline");
        let id = connection.id;

        registry.reschedule_expiry(id, until - 100);
        assert!(sweeper_woken(&registry).await, "an earlier deadline");
        registry.reschedule_expiry(id, until - 100);
        assert!(!sweeper_woken(&registry).await, "the same deadline again");
        registry.reschedule_expiry(id, until + 100);
        assert!(!sweeper_woken(&registry).await, "a later deadline");
        assert_eq!(
            deadlines(&registry),
            2,
            "the expiry moved, the maximum age stayed"
        );
        drop(connection);
        assert_eq!(deadlines(&registry), 0);
    }

    #[tokio::test]
    async fn a_sweep_asks_each_trust_domain_once() {
        let setup = Setup::new();
        let verifier = setup.verifier(&[WEB]);
        let admitted = setup.admitted(&verifier);
        let entry = Entry {
            id: 0,
            side: "server",
            validated: Mutex::new(Validated {
                under: admitted.validated_under,
                until: admitted.valid_until,
            }),
            admitted: admitted.clone(),
            verifier: verifier.clone(),
            state: Arc::default(),
        };
        let registry = setup.registry(CutOffPolicy::default());
        let now = setup.clock.current_time().unwrap();
        let mut memo = SweepMemo::default();
        assert!(registry.recheck(&entry, now, &mut memo, &[], false));
        assert_eq!(memo.trust.len(), 1);
        // The CA leaves the bundle during the sweep: the sweep goes on with what it read
        // first (the next sweep, which the change triggers, reads it anew).
        let other = DevCa::new("example.org").unwrap();
        setup
            .source
            .update(other.credentials("spiffe://example.org/api").unwrap());
        assert!(registry.recheck(&entry, now, &mut memo, &[], false));
        assert!(!registry.recheck(&entry, now, &mut SweepMemo::default(), &[], false));
    }

    /// Seconds from now to the first deadline.
    fn first_deadline_in(registry: &Registry) -> u64 {
        let (at, ..) = *registry.lock().deadlines.first().unwrap();
        at.saturating_duration_since(Instant::now()).as_secs()
    }

    #[tokio::test]
    async fn new_revocation_lists_move_the_expiry_and_lists_past_next_update_cut_off() {
        let setup = Setup::new();
        let registry = setup.registry(CutOffPolicy::default());
        let start = *setup.clock.0.lock().unwrap();
        let crl = |next_update: u64| {
            setup
                .ca
                .crl(&[])
                .this_update(start - Duration::from_secs(60))
                .next_update(start + Duration::from_secs(next_update))
                .der()
                .unwrap()
        };
        let lists = crate::revocation::RevocationLists::new([crl(100)]).unwrap();
        let verifier = Arc::new(setup.plain_verifier(&[WEB]).with_revocation(
            crate::revocation::RevocationChecks::new(Some(lists.clone()), Vec::new()),
        ));
        let (_connection, state) =
            registry.register("server", setup.admitted(&verifier), verifier, 0);
        // The validation holds until the list's nextUpdate, before the SVID's notAfter.
        assert!((98..=100).contains(&first_deadline_in(&registry)));

        // The CA publishes a new list before that: the deadline follows it.
        lists.replace([crl(1000)]).unwrap();
        assert_eq!(registry.bench_sweep(), 0);
        assert!((998..=1000).contains(&first_deadline_in(&registry)));
        assert_eq!(deadlines(&registry), 1, "the old deadline is gone");

        // No newer list by then: the connection's chain cannot be checked, so it is cut off.
        *setup.clock.0.lock().unwrap() = start + Duration::from_secs(1001);
        let (at, ..) = *registry.lock().deadlines.first().unwrap();
        registry.run_due(at);
        let cut = state.cut_off().expect("cut off at the list's nextUpdate");
        assert_eq!(cut.reason(), CutOffReason::UntrustedChain);
        assert!(cut.detail().contains("revocation list expired"), "{cut}");
    }

    #[tokio::test]
    async fn an_expiry_deadline_the_clock_has_not_reached_is_moved_not_applied() {
        let setup = Setup::new();
        let registry = setup.registry(CutOffPolicy::default());
        let verifier = setup.verifier(&[WEB]);
        let admitted = setup.admitted(&verifier);
        let valid_until = admitted.valid_until;
        let (_connection, state) = registry.register("server", admitted, verifier, 0);
        let (at, ..) = *registry.lock().deadlines.first().unwrap();
        // The tokio clock says the deadline passed; the channel's clock says not yet.
        registry.run_due(at);
        assert!(state.cut_off().is_none());
        assert_eq!(deadlines(&registry), 1, "rescheduled");
        // Once the channel's clock is past the chain's last valid second, it is cut off.
        let expired = u64::try_from(valid_until + 1).unwrap();
        *setup.clock.0.lock().unwrap() = SystemTime::UNIX_EPOCH + Duration::from_secs(expired);
        let (at, ..) = *registry.lock().deadlines.first().unwrap();
        registry.run_due(at);
        assert_eq!(state.cut_off().unwrap().reason(), CutOffReason::Expired);
        // The hard close follows at the end of the grace period.
        assert!(!state.is_closed());
        let (close, ..) = *registry.lock().deadlines.first().unwrap();
        registry.run_due(close);
        assert!(state.is_closed());
    }

    #[tokio::test]
    async fn a_zero_grace_closes_at_once() {
        let setup = Setup::new();
        let registry = setup.registry(CutOffPolicy {
            grace: Duration::ZERO,
            max_age: None,
        });
        let admitting = setup.verifier(&[WEB]);
        let (_connection, state) =
            registry.register("server", setup.admitted(&admitting), setup.verifier(&[]), 0);
        assert_eq!(registry.bench_sweep(), 1);
        assert!(state.is_closed());
        assert_eq!(
            registry.bench_sweep(),
            0,
            "a cut-off connection is not swept again"
        );
    }
}
