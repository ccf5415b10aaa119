//! Per-caller limits: the state behind rate and concurrency limits, shared by the rate-limit
//! layer (limits written in code) and the authorization policy (limits of its rules), which
//! [`layer::rate_limit`](crate::layer::rate_limit) and
//! [`layer::authorize`](crate::layer::authorize) enforce.

mod clock;
mod rate;
mod table;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) use clock::LimitClock;
pub(crate) use rate::Zero;
pub use rate::{Rate, RateParseError};
pub(crate) use table::{CallerTable, DEFAULT_MAX_CALLERS, GroupLimits, Permit, Refusal};

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitReason {
    /// The caller's request rate.
    Rate,
    /// The caller's requests in flight.
    Concurrency,
    /// The rate of all callers together.
    Total,
    /// The number of callers the limiter keeps state for: a new caller finds it full of callers
    /// that are not idle.
    Capacity,
}

impl LimitReason {
    /// A short, stable name for logs and metrics: `rate`, `concurrency`, `total`, `capacity`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Concurrency => "concurrency",
            Self::Total => "total",
            Self::Capacity => "capacity",
        }
    }
}

impl fmt::Display for LimitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets at most one audit line a second through for one limit; counts the refusals it holds
/// back, so the next line can say how many there were. A flood of refusals costs two atomic
/// operations each, not a log line each.
#[derive(Debug, Default)]
pub(crate) struct LogSampler {
    /// When the next line may be written (nanoseconds on the limit's clock).
    next: AtomicU64,
    suppressed: AtomicU64,
}

/// The time between two audit lines of one limit.
const LOG_GAP_NANOS: u64 = 1_000_000_000;

impl LogSampler {
    /// `Some(refusals held back since the last line)` when this refusal is to be logged.
    pub(crate) fn sample(&self, now: u64) -> Option<u64> {
        let next = self.next.load(Ordering::Relaxed);
        if now < next
            || self
                .next
                .compare_exchange(
                    next,
                    now.saturating_add(LOG_GAP_NANOS),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_held_back() {
        let sampler = LogSampler::default();
        assert_eq!(sampler.sample(5), Some(0));
        for t in 0..1000 {
            assert_eq!(sampler.sample(10 + t), None);
        }
        assert_eq!(sampler.sample(5 + LOG_GAP_NANOS - 1), None);
        assert_eq!(sampler.sample(5 + LOG_GAP_NANOS), Some(1001));
        assert_eq!(sampler.sample(5 + 3 * LOG_GAP_NANOS), Some(0));
    }
}
