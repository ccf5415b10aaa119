//! Cutting a connection off: why, the signal its users await, and the hard close after a grace
//! period that its stream enforces.
//!
//! A connection is cut off in two steps. First the signal: [`CutOffSignal`] completes, and
//! servers stop taking requests on the connection (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`
//! after the response in flight); pooled client connections are not reused. Then, when the
//! grace period is over, the hard close: every read and write of the stream fails, whether or
//! not its user listened to the signal.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::sync::Notify;

use crate::identity::PeerRejection;

/// Why a connection was cut off. Bounded: each has a short label for metrics
/// ([`as_str`](Self::as_str)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CutOffReason {
    /// The peer's chain no longer validates against the current bundle of its trust domain
    /// (a CA was removed, or the trust domain's bundle is gone).
    UntrustedChain,
    /// A certificate of the peer's chain is on a revocation list.
    Revoked,
    /// The peer's SPIFFE ID or leaf certificate is on a deny-list.
    Denied,
    /// The peer is no longer allowed (the allow-list or the admission policy changed).
    NotAllowed,
    /// The peer's certificate chain expired.
    Expired,
    /// The connection reached the channel's maximum connection age.
    MaxAge,
}

impl CutOffReason {
    /// A short label: `untrusted_chain`, `revoked`, `denied`, `not_allowed`, `expired`,
    /// `max_age`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UntrustedChain => "untrusted_chain",
            Self::Revoked => "revoked",
            Self::Denied => "denied",
            Self::NotAllowed => "not_allowed",
            Self::Expired => "expired",
            Self::MaxAge => "max_age",
        }
    }

    /// The reason a re-check's refusal gives.
    pub(crate) fn of(rejection: &PeerRejection) -> Self {
        use crate::identity::ChainError;
        match rejection {
            PeerRejection::NotAllowed { .. } => Self::NotAllowed,
            PeerRejection::Denied { .. } => Self::Denied,
            PeerRejection::InvalidChain {
                reason: ChainError::Revoked,
                ..
            } => Self::Revoked,
            PeerRejection::InvalidChain {
                reason: ChainError::Expired { .. },
                ..
            } => Self::Expired,
            PeerRejection::ResumedSessionInvalid(inner) => Self::of(inner),
            _ => Self::UntrustedChain,
        }
    }
}

impl fmt::Display for CutOffReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection's cut-off: why, what caused it, and how long its users have to finish.
#[derive(Debug, Clone)]
pub struct CutOff {
    reason: CutOffReason,
    detail: String,
    grace: Duration,
}

impl CutOff {
    pub(crate) fn new(reason: CutOffReason, detail: String, grace: Duration) -> Self {
        Self {
            reason,
            detail,
            grace,
        }
    }

    /// Why.
    pub fn reason(&self) -> CutOffReason {
        self.reason
    }

    /// What the re-check found, and the change that caused it, for logs.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The time between this signal and the hard close of the connection.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

impl fmt::Display for CutOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection cut off ({}): {}", self.reason, self.detail)
    }
}

/// The state one connection's stream, its registry entry and its signals share.
#[derive(Default)]
pub(crate) struct CutState {
    cut: OnceLock<CutOff>,
    closed: AtomicBool,
    notify: Notify,
    read: WakerSlot,
    write: WakerSlot,
    /// Run at the cut-off: evicts the connection from a client's pool.
    evict: Mutex<Option<Evict>>,
    eviction_offered: AtomicBool,
}

type Evict = Box<dyn FnOnce() + Send>;

impl fmt::Debug for CutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CutState")
            .field("cut", &self.cut.get())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl CutState {
    /// Signals the cut-off; `false` if the connection was cut off already.
    pub(crate) fn cut(&self, cut: CutOff) -> bool {
        let first = self.cut.set(cut).is_ok();
        if first {
            self.notify.notify_waiters();
            self.run_eviction();
        }
        first
    }

    /// Runs `evict` at the cut-off (at once if it happened already). Only the first offer per
    /// connection is kept: every request on a pooled connection makes one, all alike.
    pub(crate) fn on_cut_off(&self, evict: impl FnOnce() + Send + 'static) {
        if self.eviction_offered.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.evict.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(evict));
        // Checked after storing, so a cut-off in between is not missed (whoever takes it runs it).
        if self.cut.get().is_some() {
            self.run_eviction();
        }
    }

    fn run_eviction(&self) {
        let evict = self.evict.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(evict) = evict {
            evict();
        }
    }

    pub(crate) fn cut_off(&self) -> Option<&CutOff> {
        self.cut.get()
    }

    /// The hard close: every read and write fails from now on; pending ones are woken to fail.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.read.wake();
        self.write.wake();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The error of a read or write on a closed connection.
    pub(crate) fn closed_error(&self) -> io::Error {
        let message = match self.cut.get() {
            Some(cut) => cut.to_string(),
            None => "connection cut off".to_owned(),
        };
        io::Error::new(io::ErrorKind::ConnectionAborted, message)
    }

    /// Remembers the task of a pending read (`write` false) or write, to wake it at the hard
    /// close; `true` if the connection is closed already (the operation then fails).
    pub(crate) fn register(&self, cx: &Context<'_>, write: bool) -> bool {
        let slot = if write { &self.write } else { &self.read };
        slot.register(cx.waker());
        // Checked after registering, so a close in between is not missed.
        self.is_closed()
    }
}

/// The waker of one direction's pending operation.
#[derive(Debug, Default)]
struct WakerSlot(Mutex<Option<Waker>>);

impl WakerSlot {
    fn register(&self, waker: &Waker) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn wake(&self) {
        let waker = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A handle on a connection's cut-off, for protocols of one's own over a
/// [`SecureStream`](crate::SecureStream): await [`cut_off`](Self::cut_off) and wind the
/// connection down (finish what is in flight, refuse new work) before the grace period ends and
/// the stream's reads and writes start failing.
///
/// Cheap to clone; outlives the stream.
#[derive(Debug, Clone, Default)]
pub struct CutOffSignal {
    state: Arc<CutState>,
}

impl CutOffSignal {
    pub(crate) fn new(state: Arc<CutState>) -> Self {
        Self { state }
    }

    /// Completes when the connection is cut off (never, while its peer stays trusted).
    pub async fn cut_off(&self) -> CutOff {
        loop {
            let notified = self.state.notify.notified();
            if let Some(cut) = self.state.cut_off() {
                return cut.clone();
            }
            notified.await;
        }
    }

    /// The cut-off, if the connection was cut off.
    pub fn get(&self) -> Option<&CutOff> {
        self.state.cut_off()
    }

    /// Whether the grace period is over: the stream's reads and writes fail.
    pub fn is_closed(&self) -> bool {
        self.state.is_closed()
    }

    /// Runs `evict` when the connection is cut off; see [`CutState::on_cut_off`].
    pub(crate) fn on_cut_off(&self, evict: impl FnOnce() + Send + 'static) {
        self.state.on_cut_off(evict);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn the_signal_completes_once_with_the_first_cut_off() {
        let state = Arc::new(CutState::default());
        let signal = CutOffSignal::new(state.clone());
        assert!(signal.get().is_none());
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.cut_off().await.reason() }
        });
        tokio::task::yield_now().await;
        let grace = Duration::from_secs(1);
        assert!(state.cut(CutOff::new(CutOffReason::Denied, "d".into(), grace)));
        assert!(!state.cut(CutOff::new(CutOffReason::Expired, "e".into(), grace)));
        let reason = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reason, CutOffReason::Denied);
        assert!(!signal.is_closed());
        state.close();
        assert!(signal.is_closed());
        assert_eq!(
            state.closed_error().kind(),
            io::ErrorKind::ConnectionAborted
        );
        assert!(state.closed_error().to_string().contains("denied"));
    }

    #[test]
    fn the_first_eviction_offered_runs_once_at_the_cut_off_or_at_once_after_it() {
        use std::sync::atomic::AtomicUsize;
        let grace = Duration::from_secs(1);
        let runs = Arc::new(AtomicUsize::new(0));
        let offer = |state: &CutState, by: usize| {
            let runs = runs.clone();
            state.on_cut_off(move || {
                runs.fetch_add(by, Ordering::SeqCst);
            });
        };
        let state = CutState::default();
        offer(&state, 1);
        offer(&state, 100);
        assert_eq!(runs.load(Ordering::SeqCst), 0, "not before the cut-off");
        state.cut(CutOff::new(CutOffReason::Denied, String::new(), grace));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the first offer, once");
        state.cut(CutOff::new(CutOffReason::Denied, String::new(), grace));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Offered after the cut-off: runs at once.
        let late = CutState::default();
        late.cut(CutOff::new(CutOffReason::Expired, String::new(), grace));
        offer(&late, 10);
        assert_eq!(runs.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn a_close_wakes_both_directions() {
        struct Flag(AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let state = CutState::default();
        let (read, write) = (
            Arc::new(Flag(AtomicBool::new(false))),
            Arc::new(Flag(AtomicBool::new(false))),
        );
        let read_waker = Waker::from(read.clone());
        let write_waker = Waker::from(write.clone());
        assert!(!state.register(&Context::from_waker(&read_waker), false));
        assert!(!state.register(&Context::from_waker(&write_waker), true));
        state.close();
        assert!(read.0.load(Ordering::SeqCst));
        assert!(write.0.load(Ordering::SeqCst));
        assert!(state.register(&Context::from_waker(&read_waker), false));
    }
}
