use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::layer::Config;
use super::service::{admit, token_rejection};
use crate::PeerIdentity;
use crate::layer::{RejectionBody, RejectionResponder, polled_after_completion};

/// The name a panic gives when this future is polled after completion.
const NAME: &str = "layer::jwt::ResponseFuture";

/// The key refresh a request waits for.
pub(super) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A request waiting for a key refresh.
pub(super) struct Pending<S, B, R> {
    pub(super) service: S,
    pub(super) request: Request<B>,
    pub(super) token: Box<[u8]>,
    pub(super) peer: PeerIdentity,
    pub(super) config: Arc<Config>,
    pub(super) responder: R,
    pub(super) grpc: bool,
}

pin_project! {
    /// The response future of [`Jwt`](super::Jwt).
    ///
    /// Like every response future of this crate's layers, it panics when polled again after it
    /// returned its output.
    pub struct ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, R>,
    }
}

impl<S, ReqBody, R> ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    /// The inner service was called.
    pub(super) fn called(future: S::Future) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    /// The request was refused with `response`.
    pub(super) fn rejected(response: S::Response) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }

    /// The request waits for `refresh` before its token is checked again.
    pub(super) fn refreshing(refresh: BoxFuture, pending: Pending<S, ReqBody, R>) -> Self {
        Self {
            state: State::Refreshing {
                refresh,
                pending: Some(pending),
            },
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        Called {
            #[pin]
            future: S::Future,
        },
        Rejected {
            response: Option<S::Response>,
        },
        Refreshing {
            refresh: BoxFuture,
            pending: Option<Pending<S, ReqBody, R>>,
        },
        /// The output was returned.
        Done,
    }
}

impl<S, ReqBody, R> fmt::Debug for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Rejected { .. } => "rejected",
            State::Refreshing { .. } => "refreshing keys",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, ReqBody, ResBody, R> Future for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RejectionResponder,
    ResBody: RejectionBody,
{
    type Output = Result<Response<ResBody>, S::Error>;

    /// Panics when polled again after it returned its output.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let output = ready!(self.as_mut().poll_state(cx));
        self.project().state.set(State::Done);
        Poll::Ready(output)
    }
}

impl<S, ReqBody, ResBody, R> ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RejectionResponder,
    ResBody: RejectionBody,
{
    fn poll_state(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<ResBody>, S::Error>> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Called { future } => return future.poll(cx),
                StateProj::Rejected { response } => match response.take() {
                    Some(response) => return Poll::Ready(Ok(response)),
                    None => polled_after_completion(NAME),
                },
                StateProj::Refreshing { refresh, pending } => {
                    ready!(refresh.as_mut().poll(cx));
                    let Some(pending) = pending.take() else {
                        polled_after_completion(NAME)
                    };
                    let Pending {
                        mut service,
                        mut request,
                        token,
                        peer,
                        config,
                        responder,
                        grpc,
                    } = pending;
                    let outcome = config
                        .validator
                        .attempt_once(&token, &peer)
                        .map_err(|error| token_rejection(&error))
                        .and_then(|claims| admit(&config, claims, &mut request));
                    match outcome {
                        Ok(()) => State::Called {
                            future: service.call(request),
                        },
                        Err(rejection) => State::Rejected {
                            response: Some(responder.respond(&rejection, grpc)),
                        },
                    }
                }
                StateProj::Done => polled_after_completion(NAME),
            };
            self.as_mut().project().state.set(next);
        }
    }
}
