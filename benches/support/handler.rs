//! The handler the layer benchmarks wrap, and how they run one request through a stack (each
//! includes this file as a module).

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use secure_channel::layer::peer_identity;
use tower::{Service, ServiceExt};

/// The request and response body.
pub(crate) type Body = Full<Bytes>;

/// The handler: answers 200, reading the caller's identity when there is one.
#[derive(Clone)]
pub(crate) struct Handler;

impl Service<Request<Body>> for Handler {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        std::hint::black_box(peer_identity(request.extensions()));
        ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

/// Runs a request through a clone of `service` to completion (no layer here waits).
pub(crate) fn oneshot<S>(service: &S, request: Request<Body>) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    let mut fut = pin!(service.clone().oneshot(request));
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result.unwrap(),
        Poll::Pending => panic!("a layer waited"),
    }
}
