//! The caller table: the rate and concurrency state of every caller seen recently, bounded.
//!
//! One entry per caller SPIFFE ID holds the caller's group (which of the table's limits applies
//! to it, resolved once when the entry is made), its GCRA state and its count of requests in
//! flight, so a request costs one lookup whatever it is limited by. The GCRA itself is
//! `governor`'s: each group with a rate has a `governor::RateLimiter` whose state store is this
//! table's entries (`SlotStore`).
//!
//! # Memory
//!
//! An entry is *idle* when no request of its caller is in flight and its rate state is back to
//! a full burst, so that dropping it changes nothing: a new entry would decide the same. Idle
//! entries that saw no request since the previous sweep (a second chance, so that a caller in
//! steady use is not dropped and made again between its requests) are dropped by sweeps, which
//! run when a new caller is added and the table has doubled since the last sweep (or is full),
//! at most once per [`MIN_SWEEP_GAP`], or the last sweep is [`SWEEP_INTERVAL`] old. So the table
//! holds the callers of the last one or two seconds (and those busy or not yet refilled), and a
//! flood of new callers costs at most one pass over it a second.
//!
//! An entry is also kept while anything but the table holds it: a permit, or the identity of a
//! connection of its caller, which keeps it after its first request so that the connection's
//! later requests skip the map ([`admit_peer`](CallerTable::admit_peer)). Each connection has an
//! identity of its own (not the verifier cache's), so these are bounded by the open
//! connections. Were such an entry dropped, the caller's next connection would get a second
//! one, with a fresh burst.
//!
//! The table never holds more than `max_callers` entries: a new caller that finds it full is
//! refused ([`LimitReason::Capacity`]) rather than let in unlimited or allowed to evict a caller
//! who is not idle (which would reset that caller's limits).

use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::{LimitClock, LimitReason};
use crate::identity::{IdKey, LimitStateKey, PeerIdentity};
use dashmap::DashMap;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

/// Sweeps run at least this often while new callers arrive.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Sweeps run at most this often (but for [`sweep_now`](CallerTable::sweep_now)).
const MIN_SWEEP_GAP: Duration = Duration::from_secs(1);

/// Below this many entries, growth alone does not trigger a sweep.
const MIN_SWEEP_LEN: usize = 1024;

/// The default bound on a table's entries.
pub(crate) const DEFAULT_MAX_CALLERS: usize = 100_000;

/// The `Retry-After` given when no time is known (in-flight and capacity refusals).
const RETRY_UNKNOWN: Duration = Duration::from_secs(1);

/// One caller's state.
#[derive(Debug)]
struct Slot {
    /// Index into the table's groups.
    group: usize,
    /// GCRA theoretical arrival time, in nanoseconds from the group's limiter start; 0: fresh.
    tat: AtomicU64,
    in_flight: AtomicU32,
    /// Whether a request came since the last sweep (a second chance: a caller in use is not
    /// dropped and made again between two of its requests).
    seen: AtomicBool,
}

impl Slot {
    /// Whether dropping the entry would change a decision: a request in flight, or a rate state
    /// that is not back to a full burst at `horizon` (nanoseconds from the table's origin).
    fn in_use(&self, horizon: u64) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0 || self.tat.load(Ordering::Acquire) > horizon
    }
}

/// The map's hasher: the key is already a keyed hash, so its words are only folded together.
#[derive(Debug, Default)]
struct Fold(u64);

impl Hasher for Fold {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = self.0.rotate_left(29) ^ word;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A caller's slot as governor's key: compared by address (each caller has one slot).
#[derive(Debug, Clone)]
struct SlotKey(Arc<Slot>);

impl Hash for SlotKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

impl PartialEq for SlotKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SlotKey {}

/// The GCRA state store of a group's limiter: the state lives in the caller's slot, which the
/// key is.
#[derive(Debug, Default)]
struct SlotStore;

impl StateStore for SlotStore {
    type Key = SlotKey;

    fn measure_and_replace<T, F, E>(&self, key: &SlotKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // governor's own in-memory state does the same: measure, then compare and swap.
        let tat = &key.0.tat;
        let mut previous = tat.load(Ordering::Acquire);
        loop {
            let measured = (previous != 0).then(|| Nanos::new(previous));
            let (result, next) = f(measured)?;
            match tat.compare_exchange_weak(
                previous,
                next.as_u64(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(result),
                Err(current) => previous = current,
            }
        }
    }
}

/// One group's limits, as validated by the layer or policy that builds the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct GroupLimits {
    pub(crate) rate: Option<Quota>,
    pub(crate) concurrency: Option<NonZeroU32>,
}

#[derive(Debug)]
struct Group {
    rate: Option<RateLimiter<SlotKey, SlotStore, LimitClock, NoOpMiddleware<Nanos>>>,
    concurrency: Option<u32>,
}

/// Why a request was refused, and for which of the table's groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) reason: LimitReason,
    /// How long until the request could be admitted (a guess, one second, when unknown).
    pub(crate) retry_after: Duration,
    /// The group whose limit refused; for [`LimitReason::Capacity`], the one the caller would
    /// have joined.
    pub(crate) group: usize,
}

/// A request in flight, counted against its caller's concurrency limit until dropped.
#[derive(Debug)]
#[must_use = "the request is counted in flight until the permit is dropped"]
pub(crate) struct Permit {
    slot: Arc<Slot>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When the next sweep is due.
#[derive(Debug)]
struct Schedule {
    /// At this many entries.
    len: AtomicUsize,
    /// At this time (nanoseconds on the table's clock).
    at: AtomicU64,
    /// When the last one ran.
    last: AtomicU64,
}

/// The per-caller state of a set of limits (the groups), bounded in size; see the
/// [module docs](self).
#[derive(Debug)]
pub(crate) struct CallerTable {
    /// This table's key for the states identities keep (see [`admit_peer`](Self::admit_peer)).
    key: LimitStateKey,
    /// By the callers' [`IdKey`]s (keyed hashes of their IDs: an entry holds no copy of its
    /// caller's ID, and a lookup reads none).
    map: DashMap<IdKey, SlotKey, BuildHasherDefault<Fold>>,
    groups: Box<[Group]>,
    clock: LimitClock,
    /// A time at or after every group limiter's start (they are made before it is read), so a
    /// state measured from it is never taken for older than it is.
    origin: u64,
    len: AtomicUsize,
    max_callers: usize,
    next_sweep: Schedule,
    sweeping: Mutex<()>,
}

impl CallerTable {
    /// A table for `groups`, holding at most `max_callers` callers (at least 1).
    pub(crate) fn new(groups: &[GroupLimits], max_callers: usize, clock: LimitClock) -> Self {
        let groups: Box<[Group]> = groups
            .iter()
            .map(|limits| Group {
                rate: limits
                    .rate
                    .map(|quota| RateLimiter::new(quota, SlotStore, clock.clone())),
                concurrency: limits.concurrency.map(NonZeroU32::get),
            })
            .collect();
        let origin = clock.now().as_u64();
        Self {
            key: LimitStateKey::unique(),
            map: DashMap::default(),
            groups,
            origin,
            len: AtomicUsize::new(0),
            max_callers: max_callers.max(1),
            next_sweep: Schedule {
                len: AtomicUsize::new(MIN_SWEEP_LEN),
                at: AtomicU64::new(origin.saturating_add(duration_nanos(SWEEP_INTERVAL))),
                last: AtomicU64::new(origin),
            },
            sweeping: Mutex::new(()),
            clock,
        }
    }

    /// Admits a request of `caller`, or refuses it. A new caller joins the group `group_of`
    /// says (an index into the table's groups). The permit, when the caller's group limits
    /// requests in flight, counts the request until it is dropped.
    ///
    /// The caller's entry is found once per identity (so once per connection): the identity
    /// then holds it, and the connection's later requests go straight to it. An entry an
    /// identity holds is never swept, so it is the caller's only one.
    #[inline]
    pub(crate) fn admit_peer(
        &self,
        caller: &PeerIdentity,
        group_of: impl FnOnce() -> usize,
    ) -> Result<Option<Permit>, Refusal> {
        if let Some(slot) = caller
            .limit_state(self.key)
            .and_then(|state| Arc::downcast::<Slot>(Arc::clone(state)).ok())
        {
            return self.check(SlotKey(slot));
        }
        self.admit_and_keep(caller, group_of)
    }

    /// [`admit_peer`](Self::admit_peer) for an identity that does not hold its entry yet.
    #[inline(never)]
    fn admit_and_keep(
        &self,
        caller: &PeerIdentity,
        group_of: impl FnOnce() -> usize,
    ) -> Result<Option<Permit>, Refusal> {
        let slot = self.entry(caller.id_key(), group_of)?;
        // Held here (so not swept) until the identity holds it.
        caller.keep_limit_state(self.key, || {
            Arc::clone(&slot.0) as crate::identity::LimitState
        });
        self.check(slot)
    }

    /// Admits a request of the caller whose ID has the key `caller`, looked up in the map (see
    /// [`admit_peer`](Self::admit_peer)).
    #[cfg(test)]
    pub(crate) fn admit(
        &self,
        caller: IdKey,
        group_of: impl FnOnce() -> usize,
    ) -> Result<Option<Permit>, Refusal> {
        let slot = self.entry(caller, group_of)?;
        self.check(slot)
    }

    /// The caller's entry, made if it has none (refused when the table is full).
    fn entry(&self, key: IdKey, group_of: impl FnOnce() -> usize) -> Result<SlotKey, Refusal> {
        // Cloned under the shard's lock: a sweep then sees it held and keeps it.
        if let Some(entry) = self.map.get(&key) {
            return Ok(entry.value().clone());
        }
        self.new_entry(key, group_of())
    }

    #[cold]
    fn new_entry(&self, key: IdKey, group: usize) -> Result<SlotKey, Refusal> {
        let group = group.min(self.groups.len().saturating_sub(1));
        self.reserve(group)?;
        match self.map.entry(key) {
            dashmap::Entry::Occupied(entry) => {
                // Another request of the same caller made it first.
                self.len.fetch_sub(1, Ordering::AcqRel);
                Ok(entry.get().clone())
            }
            dashmap::Entry::Vacant(entry) => {
                let slot = SlotKey(Arc::new(Slot {
                    group,
                    tat: AtomicU64::new(0),
                    in_flight: AtomicU32::new(0),
                    seen: AtomicBool::new(true),
                }));
                entry.insert(slot.clone());
                Ok(slot)
            }
        }
    }

    /// Counts a new entry, sweeping first when one is due; refuses when the table is full.
    ///
    /// A sweep is due when the table has doubled since the last one (or is full) and that one
    /// is at least [`MIN_SWEEP_GAP`] old, or when it is [`SWEEP_INTERVAL`] old: so a sweep
    /// drops callers unused for at least a gap, and a flood of new callers costs at most one
    /// pass over the table per gap.
    fn reserve(&self, group: usize) -> Result<(), Refusal> {
        let now = self.clock.now().as_u64();
        let len = self.len.fetch_add(1, Ordering::AcqRel) + 1;
        let full = len > self.max_callers;
        let last = self.next_sweep.last.load(Ordering::Relaxed);
        let gap = now.saturating_sub(last) >= duration_nanos(MIN_SWEEP_GAP);
        let due = (gap && (full || len >= self.next_sweep.len.load(Ordering::Relaxed)))
            || now >= self.next_sweep.at.load(Ordering::Relaxed);
        if !full && !due {
            return Ok(());
        }
        self.len.fetch_sub(1, Ordering::AcqRel);
        if due {
            self.sweep(now);
        }
        let len = self.len.fetch_add(1, Ordering::AcqRel) + 1;
        if len > self.max_callers {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal {
                reason: LimitReason::Capacity,
                retry_after: RETRY_UNKNOWN,
                group,
            });
        }
        Ok(())
    }

    /// Drops idle entries (one sweep at a time: a caller that finds one running goes on).
    fn sweep(&self, now: u64) {
        let Ok(_sweeping) = self.sweeping.try_lock() else {
            return;
        };
        let horizon = now.saturating_sub(self.origin);
        let mut removed = 0;
        self.map.retain(|_, slot| {
            let slot = &slot.0;
            // Held by an identity (or a permit): its caller's only entry while held.
            let keep = slot.seen.swap(false, Ordering::AcqRel)
                || Arc::strong_count(slot) > 1
                || slot.in_use(horizon);
            removed += usize::from(!keep);
            keep
        });
        let len = self.len.fetch_sub(removed, Ordering::AcqRel) - removed;
        self.next_sweep
            .len
            .store(len.saturating_mul(2).max(MIN_SWEEP_LEN), Ordering::Relaxed);
        self.next_sweep.at.store(
            now.saturating_add(duration_nanos(SWEEP_INTERVAL)),
            Ordering::Relaxed,
        );
        self.next_sweep.last.store(now, Ordering::Relaxed);
        // Give memory back after a flood of callers has gone.
        if self.map.capacity() > len.max(MIN_SWEEP_LEN).saturating_mul(4) {
            self.map.shrink_to_fit();
        }
    }

    /// Checks a known caller against its group's limits.
    #[inline]
    fn check(&self, key: SlotKey) -> Result<Option<Permit>, Refusal> {
        let slot = &key.0;
        if !slot.seen.load(Ordering::Relaxed) {
            slot.seen.store(true, Ordering::Relaxed);
        }
        let Some(group) = self.groups.get(slot.group) else {
            return Ok(None);
        };
        if let Some(limiter) = &group.rate
            && let Err(not_until) = limiter.check_key(&key)
        {
            return Err(Refusal {
                reason: LimitReason::Rate,
                retry_after: not_until.wait_time_from(self.clock.now()),
                group: slot.group,
            });
        }
        let Some(max) = group.concurrency else {
            return Ok(None);
        };
        slot.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Refusal {
                reason: LimitReason::Concurrency,
                retry_after: RETRY_UNKNOWN,
                group: slot.group,
            })?;
        Ok(Some(Permit { slot: key.0 }))
    }

    /// The time on the table's clock, in nanoseconds.
    pub(crate) fn now(&self) -> u64 {
        self.clock.now().as_u64()
    }

    /// How many callers have state now.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// The bound on [`len`](Self::len).
    pub(crate) fn max_callers(&self) -> usize {
        self.max_callers
    }

    /// The bytes the table holds, estimated: the map's buckets and each entry's slot
    /// (allocator overhead not counted).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn estimated_bytes(&self) -> usize {
        let bucket = std::mem::size_of::<(IdKey, SlotKey)>() + 1;
        // An `Arc` allocation: two counts and the slot.
        let slot = 2 * std::mem::size_of::<usize>() + std::mem::size_of::<Slot>();
        self.map.capacity() * bucket + self.map.len() * slot
    }

    /// Runs a sweep now (tests and benchmarks).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn sweep_now(&self) {
        self.sweep(self.clock.now().as_u64());
    }
}

/// A duration in nanoseconds, saturating.
fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::Rate;
    use spiffe::SpiffeId;

    fn id(n: usize) -> IdKey {
        IdKey::of(&SpiffeId::new(format!("spiffe://example.org/ns/prod/sa/caller-{n}")).unwrap())
    }

    fn limits(rate: Option<Rate>, concurrency: u32) -> GroupLimits {
        GroupLimits {
            rate: rate.map(|r| r.quota().unwrap()),
            concurrency: NonZeroU32::new(concurrency),
        }
    }

    #[test]
    fn rate_is_per_caller_and_refills_with_time() {
        let clock = LimitClock::manual();
        let table = CallerTable::new(
            &[limits(Some(Rate::per_second(2).burst(2)), 0)],
            10,
            clock.clone(),
        );
        let (a, b) = (id(1), id(2));
        assert!(table.admit(a, || 0).is_ok());
        assert!(table.admit(a, || 0).is_ok());
        let refusal = table.admit(a, || 0).unwrap_err();
        assert_eq!(refusal.reason, LimitReason::Rate);
        assert_eq!(refusal.retry_after, Duration::from_millis(500));
        // Another caller has its own burst.
        assert!(table.admit(b, || 0).is_ok());
        clock.advance(Duration::from_millis(499));
        assert!(table.admit(a, || 0).is_err());
        clock.advance(Duration::from_millis(1));
        assert!(table.admit(a, || 0).is_ok());
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn concurrency_counts_until_the_permit_is_dropped() {
        let table = CallerTable::new(&[limits(None, 2)], 10, LimitClock::manual());
        let a = id(1);
        let first = table.admit(a, || 0).unwrap().unwrap();
        let second = table.admit(a, || 0).unwrap().unwrap();
        let refusal = table.admit(a, || 0).unwrap_err();
        assert_eq!(refusal.reason, LimitReason::Concurrency);
        assert_eq!(refusal.retry_after, RETRY_UNKNOWN);
        assert!(table.admit(id(2), || 0).unwrap().is_some());
        drop(first);
        let third = table.admit(a, || 0).unwrap().unwrap();
        drop((second, third));
        // Idle: kept by the first sweep (used since the last one), dropped by the next.
        table.sweep_now();
        assert_eq!(table.len(), 2);
        table.sweep_now();
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn groups_are_resolved_once_per_caller() {
        let table = CallerTable::new(
            &[
                limits(Some(Rate::per_hour(1)), 0),
                limits(Some(Rate::per_hour(3)), 0),
            ],
            10,
            LimitClock::manual(),
        );
        let mut resolved = 0;
        for _ in 0..3 {
            assert!(
                table
                    .admit(id(1), || {
                        resolved += 1;
                        1
                    })
                    .is_ok()
            );
        }
        assert_eq!(resolved, 1);
        let refusal = table.admit(id(1), || 0).unwrap_err();
        assert_eq!(refusal.group, 1);
        assert_eq!(refusal.retry_after, Duration::from_secs(1200));
    }

    #[test]
    fn idle_callers_are_swept_and_busy_ones_kept() {
        let clock = LimitClock::manual();
        let table = CallerTable::new(
            &[limits(Some(Rate::per_second(10).burst(5)), 4)],
            100,
            clock.clone(),
        );
        let busy = table.admit(id(1), || 0).unwrap();
        for n in 2..10 {
            drop(table.admit(id(n), || 0).unwrap());
        }
        assert_eq!(table.len(), 9);
        // 100 ms: every state is back to a full burst, but caller 1 has a request in flight.
        // The first sweep gives everyone used since the last one a second chance.
        clock.advance(Duration::from_millis(100));
        table.sweep_now();
        assert_eq!(table.len(), 9);
        table.sweep_now();
        assert_eq!(table.len(), 1);
        // A caller used between two sweeps stays.
        drop(table.admit(id(5), || 0).unwrap());
        table.sweep_now();
        assert_eq!(table.len(), 2);
        drop(busy);
        clock.advance(Duration::from_millis(100));
        table.sweep_now();
        table.sweep_now();
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn an_entry_an_identity_holds_stays_the_callers_only_one() {
        let clock = LimitClock::manual();
        let table = CallerTable::new(
            &[limits(Some(Rate::per_second(10).burst(1)), 0)],
            100,
            clock.clone(),
        );
        let id = "spiffe://example.org/ns/prod/sa/caller";
        // The caller's first connection; its identity now holds the entry.
        let first = PeerIdentity::for_tests(id);
        assert!(table.admit_peer(&first, || 0).is_ok());
        assert!(first.limit_state(table.key).is_some());
        // Idle (burst back, nothing in flight) and unused for two sweeps, but held: kept.
        clock.advance(Duration::from_millis(100));
        table.sweep_now();
        table.sweep_now();
        assert_eq!(table.len(), 1);
        // So the first connection's request and a second connection's share one burst: had
        // the entry been swept, the second would have found a fresh one.
        assert!(table.admit_peer(&first, || 0).is_ok());
        let second = PeerIdentity::for_tests(id);
        let refusal = table.admit_peer(&second, || 0).unwrap_err();
        assert_eq!(refusal.reason, LimitReason::Rate);
        assert!(table.admit_peer(&first, || 0).is_err());
        // Once no identity holds it, it goes as any idle entry does.
        drop((first, second));
        clock.advance(Duration::from_millis(100));
        table.sweep_now();
        table.sweep_now();
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn an_identity_holds_the_entries_of_a_few_tables_and_the_others_use_their_maps() {
        let clock = LimitClock::manual();
        let tables: Vec<CallerTable> = (0..6)
            .map(|_| {
                CallerTable::new(
                    &[limits(Some(Rate::per_second(1).burst(2)), 0)],
                    100,
                    clock.clone(),
                )
            })
            .collect();
        let caller = PeerIdentity::for_tests("spiffe://example.org/ns/prod/sa/caller");
        for table in &tables {
            assert!(table.admit_peer(&caller, || 0).is_ok());
        }
        let held = tables
            .iter()
            .filter(|table| caller.limit_state(table.key).is_some())
            .count();
        assert_eq!(held, 4);
        // Every table still limits the caller, held or not: one request left, then refused.
        for table in &tables {
            assert!(table.admit_peer(&caller, || 0).is_ok());
            assert!(table.admit_peer(&caller, || 0).is_err());
            assert_eq!(table.len(), 1);
        }
    }

    #[test]
    fn sweeps_give_the_memory_of_a_flood_back() {
        let clock = LimitClock::manual();
        let table = CallerTable::new(
            &[limits(Some(Rate::per_second(10).burst(5)), 0)],
            100_000,
            clock.clone(),
        );
        let quiet = table.estimated_bytes();
        for n in 0..20_000 {
            assert!(table.admit(id(n), || 0).is_ok());
        }
        let flooded = table.estimated_bytes();
        clock.advance(Duration::from_secs(1));
        table.sweep_now();
        table.sweep_now();
        assert_eq!(table.len(), 0);
        let after = table.estimated_bytes();
        assert!(flooded > 1 << 20, "{flooded} bytes for 20,000 callers");
        assert!(
            after <= quiet.max(64 << 10),
            "{after} bytes after the flood ({quiet} before)"
        );
    }

    #[test]
    fn a_caller_whose_burst_is_not_back_is_kept() {
        let clock = LimitClock::manual();
        let table = CallerTable::new(
            &[limits(Some(Rate::per_second(10).burst(5)), 0)],
            100,
            clock.clone(),
        );
        for _ in 0..5 {
            assert!(table.admit(id(1), || 0).is_ok());
        }
        // Half a second: 5 requests' worth refilled, not quite (the last one needs 100 ms more
        // than the first four). Dropping the entry now would hand out a fresh burst early.
        clock.advance(Duration::from_millis(450));
        table.sweep_now();
        table.sweep_now();
        assert_eq!(table.len(), 1);
        clock.advance(Duration::from_millis(50));
        table.sweep_now();
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn a_full_table_refuses_new_callers_until_idle_ones_go() {
        let clock = LimitClock::manual();
        let table = CallerTable::new(&[limits(Some(Rate::per_second(1)), 0)], 3, clock.clone());
        for n in 0..3 {
            assert!(table.admit(id(n), || 0).is_ok());
        }
        let refusal = table.admit(id(3), || 0).unwrap_err();
        assert_eq!(refusal.reason, LimitReason::Capacity);
        // Known callers go on being served.
        clock.advance(Duration::from_secs(1));
        assert!(table.admit(id(0), || 0).is_ok());
        clock.advance(Duration::from_secs(1));
        // Now everyone is idle, but was used since the last sweep: this one gives them their
        // second chance, and a new caller is still refused.
        assert!(table.admit(id(3), || 0).is_err());
        // Unused for a whole sweep period: the next new caller's arrival sweeps them out.
        assert!(table.admit(id(3), || 0).is_err());
        clock.advance(Duration::from_secs(1));
        assert!(table.admit(id(3), || 0).is_ok());
        assert_eq!(table.len(), 1);
    }

    /// Issue 18: state stays bounded whatever the callers do. A million distinct callers, each
    /// making one request, 10,000 per (manual) second, limited to 100/s with a burst of 20
    /// (idle again 10 ms after their one request): the table holds the callers since the last
    /// sweep, never the million. And in the worst case, a million
    /// callers within one refill period, it holds at most `max_callers`.
    #[test]
    fn a_million_callers_stay_bounded() {
        const CALLERS: usize = 1_000_000;
        let ids: Vec<IdKey> = (0..CALLERS).map(id).collect();

        let clock = LimitClock::manual();
        let table = CallerTable::new(
            &[limits(Some(Rate::per_second(100).burst(20)), 8)],
            DEFAULT_MAX_CALLERS,
            clock.clone(),
        );
        let mut peak = 0;
        let mut peak_bytes = 0;
        for (n, caller) in ids.iter().enumerate() {
            assert!(table.admit(*caller, || 0).is_ok());
            clock.advance(Duration::from_micros(100));
            peak = peak.max(table.len());
            if n % 50_000 == 0 {
                peak_bytes = peak_bytes.max(table.estimated_bytes());
            }
        }
        // 10,000 new callers a second, idle after 10 ms: a sweep a second drops those unused
        // since the one before, so the table holds the last two or three seconds' callers.
        assert!(peak <= 30_000, "peak {peak}");
        assert!(peak_bytes < 8 << 20, "peak {peak_bytes} bytes");
        eprintln!("10,000 new callers a second: peak {peak} entries, {peak_bytes} bytes");

        // Worst case: everyone within one refill period (no time passes).
        let table = CallerTable::new(
            &[limits(Some(Rate::per_hour(1)), 0)],
            DEFAULT_MAX_CALLERS,
            LimitClock::manual(),
        );
        let mut refused = 0;
        for caller in &ids {
            if let Err(refusal) = table.admit(*caller, || 0) {
                assert_eq!(refusal.reason, LimitReason::Capacity);
                refused += 1;
            }
        }
        assert_eq!(table.len(), DEFAULT_MAX_CALLERS);
        assert_eq!(refused, CALLERS - DEFAULT_MAX_CALLERS);
        let bytes = table.estimated_bytes();
        // The stated bound: 12.5 MiB for 100,000 callers by this estimate (see BENCHMARKS.md
        // for the resident memory, allocator included).
        eprintln!("full table: {} entries, {bytes} bytes", table.len());
        assert!(
            bytes < 25 << 19,
            "{bytes} bytes for {} callers",
            table.len()
        );
    }
}
