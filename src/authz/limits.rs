//! The limits of a policy rule (`rate`, `burst`, `concurrency`) and their per-caller state.

use std::num::NonZeroU32;
use std::sync::Arc;

use crate::limit::{CallerTable, DEFAULT_MAX_CALLERS, GroupLimits, LimitClock, LogSampler, Rate};

/// A rule's limits as validated: what each caller the rule admits may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitSpec {
    /// The rate as written, and as counted.
    pub(crate) rate: Option<(Rate, governor::Quota)>,
    pub(crate) concurrency: Option<NonZeroU32>,
}

/// A rule's limits and the state of the callers it admitted: what the authorization layer
/// checks. Shared by every layer reading the policy, and carried over a reload by a rule that
/// keeps its name and its limits.
#[derive(Debug)]
pub(crate) struct RuleLimiter {
    pub(crate) spec: LimitSpec,
    pub(crate) name: Arc<str>,
    pub(crate) table: CallerTable,
    pub(crate) sampler: LogSampler,
}

impl RuleLimiter {
    /// A limiter with no caller yet.
    pub(crate) fn new(name: Arc<str>, spec: LimitSpec) -> Self {
        let limits = GroupLimits {
            rate: spec.rate.map(|(_, quota)| quota),
            concurrency: spec.concurrency,
        };
        Self {
            spec,
            name,
            table: CallerTable::new(&[limits], DEFAULT_MAX_CALLERS, LimitClock::monotonic()),
            sampler: LogSampler::default(),
        }
    }

    /// `rate 100/s burst 20, concurrency 8`, for the policy's rendering.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((rate, _)) = self.spec.rate {
            parts.push(format!("rate {rate} burst {}", rate.burst_size()));
        }
        if let Some(max) = self.spec.concurrency {
            parts.push(format!("concurrency {max}"));
        }
        parts.join(", ")
    }
}
