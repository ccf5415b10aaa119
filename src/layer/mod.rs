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

/// Helpers for the layers' tests.
#[cfg(test)]
mod test_support {
    use std::convert::Infallible;
    use std::future::{Ready, poll_fn};
    use std::task::{Context, Poll};

    use http::{Request, Response};
    use tower_service::Service;

    /// An inner service that is never ready (a concurrency limit that is full, say).
    #[derive(Clone, Debug)]
    pub(super) struct NeverReady;

    impl<B> Service<Request<B>> for NeverReady {
        type Response = Response<String>;
        type Error = Infallible;
        type Future = Ready<Result<Response<String>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Pending
        }

        fn call(&mut self, _: Request<B>) -> Self::Future {
            std::future::ready(Ok(Response::new("called".to_owned())))
        }
    }

    /// Whether `service` says it is ready when polled once.
    pub(super) async fn is_ready<S: Service<R>, R>(service: &mut S) -> bool {
        poll_fn(|cx| Poll::Ready(service.poll_ready(cx).is_ready())).await
    }
}
