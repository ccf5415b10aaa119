//! The monotonic clock limits are measured with, and a clock tests move by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::nanos::Nanos;

/// Time since the clock was made, in nanoseconds: what GCRA states are counted in.
#[derive(Debug, Clone)]
pub(crate) struct LimitClock {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// The system's monotonic clock (wall-clock changes do not move it).
    Monotonic(Instant),
    /// A clock moved by hand ([`LimitClock::manual`]).
    Manual(Arc<AtomicU64>),
}

impl LimitClock {
    /// The system's monotonic clock, from now.
    pub(crate) fn monotonic() -> Self {
        Self {
            kind: Kind::Monotonic(Instant::now()),
        }
    }

    /// A clock standing at zero until [`advance`](Self::advance)d (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn manual() -> Self {
        Self {
            kind: Kind::Manual(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Moves a manual clock forward; does nothing to the monotonic one.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn advance(&self, by: Duration) {
        if let Kind::Manual(now) = &self.kind {
            let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            now.fetch_add(by, Ordering::Relaxed);
        }
    }
}

impl governor::clock::Clock for LimitClock {
    type Instant = Nanos;

    #[inline]
    fn now(&self) -> Nanos {
        match &self.kind {
            Kind::Monotonic(start) => {
                Nanos::new(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
            }
            Kind::Manual(now) => Nanos::new(now.load(Ordering::Relaxed)),
        }
    }
}
