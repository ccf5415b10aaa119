//! Attaching a bearer token to outgoing requests: [`ClientTokenLayer`], [`ClientToken`] and its
//! [`ResponseFuture`].
//!
//! ```
//! use secure_channel::jwt::BearerToken;
//! use secure_channel::layer::client_token::ClientTokenLayer;
//!
//! let layer = ClientTokenLayer::new(BearerToken::new("eyJhbGciOiJFUzI1NiJ9.e30.c2ln")?);
//! // Wrap the client of the secure connector with it: the token goes only to servers whose
//! // SPIFFE identity the connector verified.
//! # let _ = layer;
//! # Ok::<(), secure_channel::jwt::TokenProviderError>(())
//! ```
//!
//! # Security
//!
//! The layer replaces any `Authorization` header already on the request, so a header carried
//! over from an incoming request is never forwarded in place of this workload's token. Put it
//! inside the secure connector's client, so tokens are sent only after the server's identity
//! was verified.

mod future;
mod layer;
mod service;
#[cfg(test)]
mod tests;

pub use future::ResponseFuture;
pub use layer::ClientTokenLayer;
pub use service::ClientToken;
