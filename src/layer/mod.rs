//! Tower layers for HTTP and gRPC services, and the one place where their rejections become
//! responses.
//!
//! Each layer lives in its own module with `XLayer`, `X<S>` and a named `ResponseFuture`. Every
//! rejection a layer makes is a [`Rejection`]; [`RejectionResponder`] turns it into a response
//! (HTTP status and headers, or a gRPC status for `application/grpc` requests). The default
//! responder can be replaced, and the rejection is stored in the response's extensions so that
//! logging layers further out can see why a request was refused.

mod authorize;
mod client_token;
mod jwt;
mod peer;
mod rejection;

pub use peer::peer_identity;

/// Re-exported from [`jwt`](crate::jwt), where tokens live, for use with [`ClientTokenLayer`].
pub use crate::jwt::{BearerToken, CachedTokenProvider, TokenProvider, TokenProviderError};
pub use authorize::{Authorize, AuthorizeLayer, ResponseFuture as AuthorizeResponseFuture};
pub use client_token::{
    ClientToken, ClientTokenLayer, ResponseFuture as ClientTokenResponseFuture,
};
pub use jwt::{Jwt, JwtLayer, ResponseFuture as JwtResponseFuture};
pub use rejection::{
    DefaultResponder, Rejection, RejectionBody, RejectionKind, RejectionResponder, is_grpc,
};
