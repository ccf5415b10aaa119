//! Per-identity rate and concurrency limits: each caller is limited by its verified SPIFFE ID,
//! not by its address.
//!
//! ```
//! use secure_channel::layer::rate_limit::{Limit, Rate, RateLimitLayer};
//!
//! let limits = RateLimitLayer::builder()
//!     // Every caller: 100 requests a second (bursts of 20), 8 in flight.
//!     .rate(Rate::per_second(100).burst(20))
//!     .concurrency(8)
//!     // The batch workloads get more; their concurrency stays the default's.
//!     .limit_for("batch", "spiffe://example.org/batch/*", Limit::new().rate(Rate::per_second(1_000)))
//!     // One caller gets less.
//!     .limit_for("legacy", "spiffe://example.org/legacy", Limit::new().rate("10/m".parse()?))
//!     // And all callers together: 5,000 a second.
//!     .total_rate(Rate::per_second(5_000))
//!     .build()?;
//! assert_eq!(limits.tracked_callers(), 0);
//!
//! // Apply it like any tower layer, in front of the JWT and authorization layers (a flood is
//! // refused before any token is checked): with axum, `integration::axum::serve(..)
//! // .rate_limit(limits)`, or `layer_before_routing(router, limits)`.
//! let service = tower::ServiceBuilder::new()
//!     .layer(limits)
//!     .service_fn(|_: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     });
//! # let _ = service;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Limits can also be written on the rules of the authorization policy (`rate = "100/s"`,
//! `burst = 20`, `concurrency = 8`, see [`authz`](crate::authz)): the
//! [`AuthorizeLayer`](crate::layer::authorize::AuthorizeLayer) then applies a rule's limits to
//! each caller the rule admits. This layer is for limits that do not depend on the route.
//!
//! # What is limited
//!
//! - **Rate**: a GCRA per caller ([`Rate`]: requests per second, minute or hour, and a
//!   burst), from the `governor` crate.
//! - **Concurrency**: the caller's requests in flight. A request counts from when the layer
//!   admits it until the inner service's response future completes (the response head is
//!   ready) or is dropped. The response body is not counted: a streaming response or a
//!   download holds no permit while its body is sent, so that this layer keeps the response
//!   type of the service it wraps (axum's `Response`, tonic's) unchanged.
//! - **Total**: the rate of all callers together ([`RateLimitBuilder::total_rate`]), checked
//!   after the caller's own limits: a caller over its own limit does not use up the total.
//!
//! A caller gets the default limit, or the limit of its most specific override
//! ([`RateLimitBuilder::limit_for`]): an exact SPIFFE ID, then the longest path prefix
//! (`spiffe://td/batch/nightly/*` over `spiffe://td/batch/*`), then its trust domain. What an
//! override leaves unset is the default's. A caller that matches no override and has no
//! default is limited only by the total.
//!
//! # Over the limit
//!
//! The request is refused through the layer's [`RejectionResponder`](crate::layer::RejectionResponder) with
//! [`RejectionKind::TooManyRequests`](crate::layer::RejectionKind::TooManyRequests): HTTP 429
//! with `Retry-After` (whole seconds, rounded up: the exact wait for a rate, 1 for the other
//! limits), gRPC RESOURCE_EXHAUSTED. [`Rejection::limit_exceeded`](crate::layer::Rejection::limit_exceeded)
//! tells a custom responder which limit refused and why ([`LimitReason`](crate::layer::LimitReason)).
//! Every refusal is counted in [`RATE_LIMITED`](crate::telemetry::RATE_LIMITED) by limit name
//! (`default`, `total`, an override's name) and reason, never by caller. The audit line (target
//! [`AUDIT_TARGET`](crate::authz::AUDIT_TARGET), INFO) names the caller, and is sampled: at most
//! one a second per limit, the next one saying how many were held back (`suppressed`), so a
//! flood cannot flood the log.
//!
//! # Memory
//!
//! The layer keeps state for each caller seen recently, about 90 bytes each (resident memory,
//! measured in `benches/rate_limit.rs`; see BENCHMARKS.md): a caller's state is dropped once it
//! is idle (nothing in flight, its rate back to a full burst) and unused for a second or two, by
//! sweeps that run as new callers arrive (at most one a second, when the state has doubled since
//! the last one, and at least every 10 seconds). A caller's state is also kept while one of its
//! connections is open: the connection's verified identity holds it, so that the connection's
//! requests after the first go straight to it (no lookup by ID). It never keeps more than
//! [`max_callers`](RateLimitBuilder::max_callers) callers (100,000 by default, so about 9 MiB):
//! a new caller that finds it full of callers that are not idle is refused with 429
//! ([`LimitReason::Capacity`](crate::layer::LimitReason::Capacity)) rather than let in unlimited
//! or allowed to evict a busy caller (which would reset that caller's limits). Reaching it takes
//! that many distinct SPIFFE IDs active within one refill period or connected at once, each a
//! workload the channel authenticated: raise it for meshes that large.
//!
//! # Security
//!
//! A request without a verified [`PeerIdentity`](crate::PeerIdentity) in its extensions (a
//! service not behind the secure listener) is refused with
//! [`RejectionKind::MissingPeerIdentity`](crate::layer::RejectionKind::MissingPeerIdentity):
//! the layer fails closed rather than let an unidentified request pass unlimited. The 429
//! says nothing about the limits beyond the wait.

mod future;
mod layer;
mod service;
#[cfg(test)]
mod tests;

pub use crate::limit::{Rate, RateParseError};
pub use future::ResponseFuture;
pub use layer::{Limit, RateLimitBuilder, RateLimitError, RateLimitLayer};
pub use service::RateLimit;

pub(crate) use service::LimitHit;
