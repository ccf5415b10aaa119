//! The monotonic clock limits are measured with, and a clock tests move by hand.
//!
//! Every limited request reads the clock once, so its cost is on every request: `quanta`'s raw
//! counter (the CPU's invariant TSC where it has one, calibrated once per process; the
//! system's monotonic clock where not) is read in about 12 ns here, `Instant::now` (a vDSO
//! `clock_gettime`) in 32 to 70 ns, on this project's VM. `quanta` is the clock `governor`
//! itself uses by default.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::nanos::Nanos;

/// Time since the clock was made, in nanoseconds: what GCRA states are counted in.
#[derive(Debug, Clone)]
pub(crate) struct LimitClock {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A monotonic clock (wall-clock changes do not move it), from the raw reading `start`.
    Monotonic { clock: quanta::Clock, start: u64 },
    /// A clock moved by hand ([`LimitClock::manual`]).
    Manual(Arc<AtomicU64>),
}

impl LimitClock {
    /// A monotonic clock, from now.
    pub(crate) fn monotonic() -> Self {
        let clock = quanta::Clock::new();
        let start = clock.raw();
        Self {
            kind: Kind::Monotonic { clock, start },
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
            // A reading before `start` (counters of two CPUs a little apart) is 0, not a wrap.
            Kind::Monotonic { clock, start } => {
                Nanos::new(clock.delta_as_nanos(*start, clock.raw()))
            }
            Kind::Manual(now) => Nanos::new(now.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::Clock;

    #[test]
    fn the_monotonic_clock_follows_real_time() {
        let clock = LimitClock::monotonic();
        let wall = std::time::Instant::now();
        let first = clock.now().as_u64();
        // A clock's reading must move with time: let some pass.
        std::thread::sleep(Duration::from_millis(20));
        let second = clock.now().as_u64();
        let elapsed = u64::try_from(wall.elapsed().as_nanos()).unwrap_or(u64::MAX);
        assert!(second > first);
        let moved = second - first;
        // Within 10% of the system's clock (the counter is calibrated against it), and not
        // longer than the time that passed around both readings.
        assert!(moved >= 18_000_000, "{moved} ns");
        assert!(
            moved <= elapsed + elapsed / 10,
            "{moved} ns in {elapsed} ns"
        );
        // A clone reads the same clock from the same start.
        assert!(clock.clone().now().as_u64() >= second);
    }
}
