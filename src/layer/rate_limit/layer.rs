use std::num::NonZeroU32;
use std::sync::Arc;

use governor::RateLimiter;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use spiffe::SpiffeId;
use tower_layer::Layer;

use super::RateLimit;
use crate::identity::{IdMatcher, IdMatcherError, PeerIdentity};
use crate::layer::{DefaultResponder, LimitSource, RejectionResponder};
use crate::limit::{
    CallerTable, DEFAULT_MAX_CALLERS, GroupLimits, LimitClock, LimitReason, LogSampler, Permit,
    Rate, Refusal, Zero,
};

/// The name of the limit every caller without an override has.
const DEFAULT: &str = "default";
/// The name of the limit on all callers together.
const TOTAL: &str = "total";

/// What one caller (or each caller of an override) may do: a request rate, a number of
/// requests in flight, or both.
///
/// In an override ([`RateLimitBuilder::limit_for`]), what is left unset is the default's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[must_use]
pub struct Limit {
    rate: Option<Rate>,
    concurrency: Option<u32>,
}

impl Limit {
    /// No limit yet: set a [`rate`](Self::rate), a [`concurrency`](Self::concurrency) or both.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits each caller's request rate.
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Limits each caller's requests in flight to `max`.
    pub fn concurrency(mut self, max: u32) -> Self {
        self.concurrency = Some(max);
        self
    }

    /// What is set here, else what is set in `default`.
    fn or(self, default: Self) -> Self {
        Self {
            rate: self.rate.or(default.rate),
            concurrency: self.concurrency.or(default.concurrency),
        }
    }

    fn is_empty(&self) -> bool {
        self.rate.is_none() && self.concurrency.is_none()
    }

    /// The limits as the caller table takes them, or why they are invalid.
    fn compile(&self, name: &str) -> Result<GroupLimits, RateLimitError> {
        let rate = self.rate.map(|rate| compile_rate(rate, name)).transpose()?;
        let concurrency = match self.concurrency {
            None => None,
            Some(max) => {
                Some(
                    NonZeroU32::new(max).ok_or_else(|| RateLimitError::ZeroConcurrency {
                        limit: name.to_owned(),
                    })?,
                )
            }
        };
        Ok(GroupLimits { rate, concurrency })
    }
}

fn compile_rate(rate: Rate, name: &str) -> Result<governor::Quota, RateLimitError> {
    rate.quota().map_err(|zero| match zero {
        Zero::Rate => RateLimitError::ZeroRate {
            limit: name.to_owned(),
        },
        Zero::Burst => RateLimitError::ZeroBurst {
            limit: name.to_owned(),
        },
    })
}

/// Why a [`RateLimitBuilder`] cannot build its layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// A rate of zero requests per period: it would refuse every request.
    #[error("rate limit {limit:?}: a rate of 0 requests refuses every request; use at least 1")]
    ZeroRate {
        /// The limit's name (`default`, `total` or the override's).
        limit: String,
    },
    /// A burst of zero: it would refuse every request.
    #[error("rate limit {limit:?}: a burst of 0 refuses every request; use at least 1")]
    ZeroBurst {
        /// The limit's name.
        limit: String,
    },
    /// A concurrency of zero: it would refuse every request.
    #[error(
        "rate limit {limit:?}: a concurrency of 0 refuses every request; use at least 1 request in flight"
    )]
    ZeroConcurrency {
        /// The limit's name.
        limit: String,
    },
    /// An override's caller matcher is not a valid SPIFFE ID matcher.
    #[error("rate limit {limit:?}: {source}")]
    InvalidMatcher {
        /// The override's name.
        limit: String,
        /// Why the matcher is refused (it names the input).
        #[source]
        source: IdMatcherError,
    },
    /// Two overrides for the same callers: which one applies would be a guess.
    #[error("rate limit {limit:?}: callers {matcher} already have the limit {previous:?}")]
    DuplicateMatcher {
        /// The second override's name.
        limit: String,
        /// The matcher, as written.
        matcher: String,
        /// The first override's name.
        previous: String,
    },
    /// An override's name is not a valid limit name (it labels metrics and audit lines).
    #[error("rate limit name {name:?}: {problem}")]
    InvalidName {
        /// The name presented.
        name: String,
        /// What is wrong with it and what is expected.
        problem: &'static str,
    },
    /// An override that sets neither a rate nor a concurrency, and has no default to take one
    /// from.
    #[error(
        "rate limit {limit:?} for {matcher}: neither a rate nor a concurrency is set, here or as the default"
    )]
    EmptyLimit {
        /// The override's name.
        limit: String,
        /// Its callers, as written.
        matcher: String,
    },
    /// No default limit, no override and no total limit: the layer would limit nothing.
    #[error(
        "a rate-limit layer needs a default limit, an override or a total limit: this one limits nothing"
    )]
    NoLimit,
}

/// Builds a [`RateLimitLayer`]: a default limit for every caller, overrides for some callers,
/// an optional total limit; everything is checked in [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct RateLimitBuilder {
    default: Limit,
    overrides: Vec<(String, String, Limit)>,
    total: Option<Rate>,
    max_callers: usize,
    clock: Option<LimitClock>,
}

impl RateLimitBuilder {
    /// Limits every caller's request rate (the default limit), unless an override says
    /// otherwise.
    pub fn rate(mut self, rate: Rate) -> Self {
        self.default.rate = Some(rate);
        self
    }

    /// Limits every caller's requests in flight to `max` (the default limit), unless an
    /// override says otherwise.
    pub fn concurrency(mut self, max: u32) -> Self {
        self.default.concurrency = Some(max);
        self
    }

    /// Gives the callers `matcher` matches their own limit, named `name` in metrics and audit
    /// lines (1 to 64 characters among `A-Z a-z 0-9 . _ : -`, not `default` or `total`).
    ///
    /// `matcher` is an [`IdMatcher`]: an exact SPIFFE ID, a trust domain (`spiffe://td`) or
    /// whole segments below a path (`spiffe://td/batch/*`). A caller matched by several
    /// overrides gets the most specific one: an exact ID, then the longest path prefix, then
    /// its trust domain. What `limit` leaves unset is the default's. Several overrides may
    /// share a name; two for the same matcher are refused.
    pub fn limit_for(
        mut self,
        name: impl Into<String>,
        matcher: impl Into<String>,
        limit: Limit,
    ) -> Self {
        self.overrides.push((name.into(), matcher.into(), limit));
        self
    }

    /// Limits the rate of all callers together (named `total`), on top of each caller's own.
    pub fn total_rate(mut self, rate: Rate) -> Self {
        self.total = Some(rate);
        self
    }

    /// Bounds the number of callers the layer keeps state for (default 100,000, at least 1).
    ///
    /// A caller's state is dropped once it is idle (nothing in flight, its rate back to a full
    /// burst) and none of its connections is open; a new caller that finds the layer holding
    /// state for `max` callers that are not idle is refused with 429
    /// ([`LimitReason::Capacity`]).
    pub fn max_callers(mut self, max: usize) -> Self {
        self.max_callers = max.max(1);
        self
    }

    /// Measures time with `clock` (tests of this crate move it by hand).
    #[cfg(test)]
    pub(super) fn clock(mut self, clock: LimitClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the limits and builds the layer.
    pub fn build(self) -> Result<RateLimitLayer, RateLimitError> {
        if self.default.is_empty() && self.overrides.is_empty() && self.total.is_none() {
            return Err(RateLimitError::NoLimit);
        }
        let clock = self.clock.unwrap_or_else(LimitClock::monotonic);
        let mut groups = vec![self.default.compile(DEFAULT)?];
        let mut names = vec![Group::new(DEFAULT)];
        let mut overrides: Vec<Override> = Vec::with_capacity(self.overrides.len());
        for (name, text, limit) in self.overrides {
            check_name(&name)?;
            let matcher =
                IdMatcher::parse(&text).map_err(|source| RateLimitError::InvalidMatcher {
                    limit: name.clone(),
                    source,
                })?;
            if let Some(previous) = overrides.iter().find(|o| o.matcher == matcher) {
                return Err(RateLimitError::DuplicateMatcher {
                    limit: name,
                    matcher: text,
                    previous: names[previous.group].name.to_string(),
                });
            }
            let limit = limit.or(self.default);
            if limit.is_empty() {
                return Err(RateLimitError::EmptyLimit {
                    limit: name,
                    matcher: text,
                });
            }
            groups.push(limit.compile(&name)?);
            overrides.push(Override {
                specificity: specificity(&matcher),
                matcher,
                group: names.len(),
            });
            names.push(Group::new(&name));
        }
        // Most specific first: the first match is the one that applies.
        overrides.sort_by_key(|o| std::cmp::Reverse(o.specificity));
        let total = self
            .total
            .map(|rate| {
                compile_rate(rate, TOTAL).map(|quota| Total {
                    limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
                    group: Group::new(TOTAL),
                })
            })
            .transpose()?;
        let per_caller = groups.iter().any(|g| *g != GroupLimits::default());
        let table = per_caller.then(|| CallerTable::new(&groups, self.max_callers, clock.clone()));
        Ok(RateLimitLayer {
            limits: Arc::new(Limits {
                table,
                groups: names.into(),
                overrides: overrides.into(),
                total,
                clock,
            }),
            responder: DefaultResponder,
        })
    }
}

/// A limit name: it labels metrics, so 1 to 64 characters of a small set, and not one of the
/// layer's own.
fn check_name(name: &str) -> Result<(), RateLimitError> {
    let problem = if name == DEFAULT || name == TOTAL {
        Some("`default` and `total` name the layer's own limits")
    } else if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        Some("must be 1 to 64 characters among A-Z a-z 0-9 . _ : -")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(RateLimitError::InvalidName {
            name: name.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// How specific a matcher is: an exact ID over any path prefix, a longer prefix over a
/// shorter one, any prefix over a trust domain.
fn specificity(matcher: &IdMatcher) -> (u8, usize) {
    let text = matcher.to_string();
    if text == matcher.trust_domain_of_matches().id_string() {
        (0, 0)
    } else if text.ends_with("/*") {
        (1, text.len())
    } else {
        (2, 0)
    }
}

/// An override, compiled.
#[derive(Debug)]
struct Override {
    matcher: IdMatcher,
    specificity: (u8, usize),
    /// Its group in the caller table.
    group: usize,
}

/// A limit's name, and the sampler of its audit lines.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) name: Arc<str>,
    pub(super) sampler: LogSampler,
}

impl Group {
    fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            sampler: LogSampler::default(),
        }
    }
}

/// The limit on all callers together.
#[derive(Debug)]
struct Total {
    limiter: RateLimiter<NotKeyed, InMemoryState, LimitClock, NoOpMiddleware<Nanos>>,
    group: Group,
}

/// A layer's limits, compiled; shared by its services.
#[derive(Debug)]
pub(super) struct Limits {
    /// `None` when only the total is limited.
    table: Option<CallerTable>,
    /// By group index: the default (0), then the overrides in the order they were given.
    groups: Box<[Group]>,
    overrides: Box<[Override]>,
    total: Option<Total>,
    clock: LimitClock,
}

/// Which limit refused a request.
#[derive(Debug)]
pub(super) struct Refused<'a> {
    pub(super) group: &'a Group,
    pub(super) reason: LimitReason,
    pub(super) retry_after: std::time::Duration,
}

impl Limits {
    /// Admits a request of `caller`, with its in-flight permit if it needs one, or says which
    /// limit refuses it. The caller's own limit is checked before the total, so a caller over
    /// its own limit does not use up the total.
    #[inline]
    pub(super) fn admit(&self, caller: &PeerIdentity) -> Result<Option<Permit>, Refused<'_>> {
        let permit = match &self.table {
            None => None,
            Some(table) => table
                .admit_peer(caller, || self.group_of(caller.spiffe_id()))
                .map_err(|refusal| self.refused(refusal))?,
        };
        if let Some(total) = &self.total
            && let Err(not_until) = total.limiter.check()
        {
            return Err(Refused {
                group: &total.group,
                reason: LimitReason::Total,
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        Ok(permit)
    }

    /// The group of a new caller: its most specific override's, or the default.
    fn group_of(&self, caller: &SpiffeId) -> usize {
        self.overrides
            .iter()
            .find(|o| o.matcher.matches(caller))
            .map_or(0, |o| o.group)
    }

    fn refused(&self, refusal: Refusal) -> Refused<'_> {
        Refused {
            group: self.groups.get(refusal.group).unwrap_or(&self.groups[0]),
            reason: refusal.reason,
            retry_after: refusal.retry_after,
        }
    }

    /// The time on the layer's clock, in nanoseconds (for the audit sampler).
    pub(super) fn now(&self) -> u64 {
        self.clock.now().as_u64()
    }

    /// How many callers the layer keeps state for.
    fn tracked_callers(&self) -> usize {
        self.table.as_ref().map_or(0, CallerTable::len)
    }

    fn max_callers(&self) -> usize {
        self.table.as_ref().map_or(0, CallerTable::max_callers)
    }
}

/// Limits each caller's request rate and requests in flight by its verified SPIFFE ID, and
/// optionally the rate of all callers together; see the [module docs](super).
pub struct RateLimitLayer<R = DefaultResponder> {
    pub(super) limits: Arc<Limits>,
    pub(super) responder: R,
}

impl RateLimitLayer {
    /// A builder with no limit yet.
    pub fn builder() -> RateLimitBuilder {
        RateLimitBuilder {
            default: Limit::default(),
            overrides: Vec::new(),
            total: None,
            max_callers: DEFAULT_MAX_CALLERS,
            clock: None,
        }
    }
}

impl<R: RejectionResponder> RateLimitLayer<R> {
    /// Replaces the responder that turns rejections into responses; the limits and their state
    /// are shared with `self`.
    pub fn responder<R2: RejectionResponder>(self, responder: R2) -> RateLimitLayer<R2> {
        RateLimitLayer {
            limits: self.limits,
            responder,
        }
    }
}

impl<R> RateLimitLayer<R> {
    /// How many callers the layer keeps state for now (idle ones are dropped as new callers
    /// arrive); at most [`max_callers`](Self::max_callers).
    pub fn tracked_callers(&self) -> usize {
        self.limits.tracked_callers()
    }

    /// The bound on [`tracked_callers`](Self::tracked_callers) (0 when only the total is
    /// limited: no caller has state).
    pub fn max_callers(&self) -> usize {
        self.limits.max_callers()
    }
}

/// Clones share the limits and their state: every service made from the layer (and its
/// clones) counts the same callers.
impl<R: Clone> Clone for RateLimitLayer<R> {
    fn clone(&self) -> Self {
        Self {
            limits: Arc::clone(&self.limits),
            responder: self.responder.clone(),
        }
    }
}

impl<R> std::fmt::Debug for RateLimitLayer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.limits.groups.iter().map(|g| &*g.name).collect();
        f.debug_struct("RateLimitLayer")
            .field("limits", &names)
            .field("total", &self.limits.total.is_some())
            .field("tracked_callers", &self.tracked_callers())
            .finish_non_exhaustive()
    }
}

impl<S, R: Clone> Layer<S> for RateLimitLayer<R> {
    type Service = RateLimit<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limits: Arc::clone(&self.limits),
            responder: self.responder.clone(),
        }
    }
}

/// The source label of this layer's refusals.
pub(super) const SOURCE: LimitSource = LimitSource::Layer;
