//! Glue for the servers and clients people write: axum, tonic, and plain hyper.
//!
//! - [`hyper`]: serve any tower service over a [`SecureListener`](crate::transport::SecureListener)
//!   with hyper-util's HTTP/1.1 + HTTP/2 builder, the caller's identity in every request, and
//!   graceful shutdown.
//! - `axum` (feature `axum`): `serve`, one call that serves a `Router` with this crate's
//!   layers in the right order; [`PeerIdentity`](crate::PeerIdentity) is an extractor.
//! - [`jwks`]: fetching a token issuer's JWK set over HTTPS for the JWT layer.
//! - `tonic` (feature `tonic`): an incoming stream for `Server::serve_with_incoming` whose
//!   connections carry the caller's identity into every request.

#[cfg(feature = "axum")]
pub mod axum;
pub mod hyper;
pub mod jwks;
#[cfg(feature = "tonic")]
pub mod tonic;
