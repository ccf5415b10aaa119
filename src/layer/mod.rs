//! Tower layers for HTTP and gRPC services, and the one place where their rejections become
//! responses.
//!
//! Each layer is a module with its layer, its service and their named `ResponseFuture`:
//! [`jwt`] ([`JwtLayer`](jwt::JwtLayer), [`Jwt`](jwt::Jwt)), [`authorize`]
//! ([`AuthorizeLayer`](authorize::AuthorizeLayer), [`Authorize`](authorize::Authorize)),
//! [`rate_limit`] ([`RateLimitLayer`](rate_limit::RateLimitLayer),
//! [`RateLimit`](rate_limit::RateLimit)) and [`client_token`]
//! ([`ClientTokenLayer`](client_token::ClientTokenLayer),
//! [`ClientToken`](client_token::ClientToken)). Every rejection a layer makes is a
//! [`Rejection`]; [`RejectionResponder`] turns it into a response (HTTP status and headers, or a
//! gRPC status for `application/grpc` requests). The default responder can be replaced, and the
//! rejection is stored in the response's extensions so that logging layers further out can see
//! why a request was refused.
//!
//! Every layer's `ResponseFuture` panics, naming itself, when it is polled again after it
//! returned its output (a bug in the caller, as with most futures), whatever the inner
//! service's future would have done.
//!
//! The tokens [`ClientTokenLayer`](client_token::ClientTokenLayer) attaches
//! ([`BearerToken`](crate::jwt::BearerToken), [`TokenProvider`](crate::jwt::TokenProvider),
//! [`CachedTokenProvider`](crate::jwt::CachedTokenProvider)) live in [`jwt`](crate::jwt).

#[macro_use]
mod macros;

mod answer;
pub mod authorize;
pub mod client_token;
pub mod jwt;
mod peer;
pub mod rate_limit;
mod rejection;

pub use crate::limit::LimitReason;
pub use peer::peer_identity;
pub use rejection::{
    DefaultResponder, LimitExceeded, LimitSource, Rejection, RejectionBody, RejectionKind,
    RejectionResponder, is_grpc,
};

/// What every response future of this room does when polled again after it returned its
/// output: panic, naming the future.
#[cold]
#[track_caller]
fn polled_after_completion(future: &'static str) -> ! {
    panic!("`{future}` polled after completion")
}

#[cfg(test)]
mod test_support {
    use std::future::Future;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::task::{Context, Waker};

    /// Drives `future` to completion, polls it once more and returns the message of the panic
    /// that poll must raise.
    pub(super) async fn second_poll_panic<F: Future>(future: F) -> String {
        let mut future = Box::pin(future);
        let _ = (&mut future).await;
        let payload = catch_unwind(AssertUnwindSafe(|| {
            let _ = future
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()));
        }))
        .err()
        .unwrap_or_else(|| panic!("polling after completion did not panic"));
        match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .unwrap_or_default(),
        }
    }

    /// An inner service that is never ready (a concurrency limit that is full, say).
    #[derive(Clone, Debug)]
    pub(super) struct NeverReady;

    impl<B> tower_service::Service<http::Request<B>> for NeverReady {
        type Response = http::Response<String>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<http::Response<String>, std::convert::Infallible>>;

        fn poll_ready(
            &mut self,
            _: &mut Context<'_>,
        ) -> std::task::Poll<Result<(), std::convert::Infallible>> {
            std::task::Poll::Pending
        }

        fn call(&mut self, _: http::Request<B>) -> Self::Future {
            std::future::ready(Ok(http::Response::new("called".to_owned())))
        }
    }

    /// Whether `service` says it is ready when polled once.
    pub(super) async fn is_ready<S: tower_service::Service<R>, R>(service: &mut S) -> bool {
        std::future::poll_fn(|cx| std::task::Poll::Ready(service.poll_ready(cx).is_ready())).await
    }
}
