//! The authorization layer: every request is decided by the current policy.
//!
//! ```
//! use http::Method;
//! use secure_channel::authz::{Policy, PolicySource, Rule};
//! use secure_channel::layer::authorize::AuthorizeLayer;
//!
//! let policy = Policy::builder()
//!     .rule(Rule::allow("web").principal("spiffe://example.org/web").route(Method::GET, "/orders/*"))
//!     .build()?;
//! // Or `PolicySource::from_file("policy.toml").start()?`, reloaded when the file changes.
//! let layer = AuthorizeLayer::new(PolicySource::new(policy));
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Security
//!
//! A request without a verified [`PeerIdentity`](crate::PeerIdentity) in its extensions (a service not behind the
//! secure listener) is refused with [`RejectionKind::MissingPeerIdentity`](crate::layer::RejectionKind::MissingPeerIdentity): the layer fails
//! closed. A denied request is refused with [`RejectionKind::Forbidden`](crate::layer::RejectionKind::Forbidden) and a description that
//! says nothing of the policy; the deciding rule is in the audit event. When the normalized path
//! differs from the request's, the request goes on with its URI path rewritten to the normalized
//! one, so that the inner service routes exactly the path that was authorized. The [`Decision`](crate::authz::Decision)
//! is stored in the request extensions for handlers.
//!
//! When the rule that allowed the request has limits (`rate`, `burst`, `concurrency`; see
//! [`authz`](crate::authz)), the caller is held to them: over them the request is refused with
//! [`RejectionKind::TooManyRequests`](crate::layer::RejectionKind::TooManyRequests) (429 with
//! `Retry-After`, gRPC RESOURCE_EXHAUSTED), the rule's name in its
//! [`limit_exceeded`](crate::layer::Rejection::limit_exceeded) cause but not in the response;
//! the concurrency counts the request until the inner service's response future completes or
//! is dropped (see [`rate_limit`](crate::layer::rate_limit) for what that means for streamed
//! bodies).
//!
//! That holds only when the layer runs *before* routing. With the `axum` feature, a request
//! that axum already routed (it carries a `MatchedPath`: the layer was applied with
//! `Router::layer` or `Router::route_layer`) is refused with 403 whatever the policy says, and
//! an error is logged naming `layer_before_routing`: axum routed the raw path, which can differ
//! from the path the policy would authorize (`/admin/../orders/1` routed to `/admin/{*rest}`,
//! authorized as `/orders/1`). Apply the layer with
//! `integration::axum::layer_before_routing` (feature `axum`) instead.

mod future;
mod layer;
mod service;
#[cfg(test)]
mod tests;

pub use future::ResponseFuture;
pub use layer::AuthorizeLayer;
pub use service::Authorize;
