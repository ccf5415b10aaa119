//! Bearer token validation per request: [`JwtLayer`], [`Jwt`] and its [`ResponseFuture`].
//!
//! ```
//! use secure_channel::jwt::{JwtValidator, KeySource};
//! use secure_channel::layer::jwt::JwtLayer;
//!
//! # let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256",
//! #     "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
//! #     "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
//! let validator = JwtValidator::access_tokens("https://api.example.org")
//!     .issuer("https://issuer.example.org")
//!     .key_source(KeySource::from_jwks(jwks)?)
//!     .build()?;
//! // Wrap the service (after the secure listener has put the caller's PeerIdentity in the
//! // request extensions): handlers see `VerifiedClaims` in theirs.
//! let layer = JwtLayer::new(validator).require_scope("orders:read");
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Security
//!
//! - The token is taken only from the `Authorization: Bearer` header (one such header); a token
//!   in the query string or a form body is not looked at, so such a request has no token.
//! - Validation is against the [`PeerIdentity`](crate::PeerIdentity) the secure listener put in the request
//!   extensions (the certificate of this connection); a request without one is refused.
//! - Every failure is a [`Rejection`](crate::layer::Rejection) answered by the
//!   [`RejectionResponder`](crate::layer::RejectionResponder) (401
//!   `invalid_token`, 403 `insufficient_scope`, or their gRPC statuses); the inner service is
//!   not called. Nothing here answers 500 or panics on any input (a [`ResponseFuture`] polled
//!   again after it completed panics, as most futures do: that is the caller's bug, not input).

mod future;
mod layer;
mod service;
#[cfg(test)]
#[cfg(feature = "testkit")]
mod tests;

pub use future::ResponseFuture;
pub use layer::JwtLayer;
pub use service::Jwt;
