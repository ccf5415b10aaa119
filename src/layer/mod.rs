//! Tower layers for HTTP and gRPC services, and the one place where their rejections become
//! responses.
//!
//! Each layer is a module with its layer, its service and their named `ResponseFuture`:
//! [`jwt`] ([`JwtLayer`](jwt::JwtLayer), [`Jwt`](jwt::Jwt)), [`authorize`]
//! ([`AuthorizeLayer`](authorize::AuthorizeLayer), [`Authorize`](authorize::Authorize)) and
//! [`client_token`] ([`ClientTokenLayer`](client_token::ClientTokenLayer),
//! [`ClientToken`](client_token::ClientToken)). Every rejection a layer makes is a
//! [`Rejection`]; [`RejectionResponder`] turns it into a response (HTTP status and headers, or a
//! gRPC status for `application/grpc` requests). The default responder can be replaced, and the
//! rejection is stored in the response's extensions so that logging layers further out can see
//! why a request was refused.
//!
//! The tokens [`ClientTokenLayer`](client_token::ClientTokenLayer) attaches
//! ([`BearerToken`](crate::jwt::BearerToken), [`TokenProvider`](crate::jwt::TokenProvider),
//! [`CachedTokenProvider`](crate::jwt::CachedTokenProvider)) live in [`jwt`](crate::jwt).

#[macro_use]
mod macros;

pub mod authorize;
pub mod client_token;
pub mod jwt;
mod peer;
mod rejection;

pub use peer::peer_identity;
pub use rejection::{
    DefaultResponder, Rejection, RejectionBody, RejectionKind, RejectionResponder, is_grpc,
};
