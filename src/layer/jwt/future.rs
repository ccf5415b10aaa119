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
use crate::layer::{DefaultResponder, Rejection, RejectionBody, RejectionKind, RejectionResponder};

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

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Called { future } => return future.poll(cx),
                StateProj::Rejected { response } => {
                    return match response.take() {
                        Some(response) => Poll::Ready(Ok(response)),
                        // Polled after completion: answer again rather than panic.
                        None => Poll::Ready(Ok(DefaultResponder.respond(
                            &Rejection::new(
                                RejectionKind::InvalidToken,
                                "request already answered",
                            ),
                            false,
                        ))),
                    };
                }
                StateProj::Refreshing { refresh, pending } => {
                    ready!(refresh.as_mut().poll(cx));
                    let Some(pending) = pending.take() else {
                        return Poll::Ready(Ok(DefaultResponder.respond(
                            &Rejection::new(
                                RejectionKind::InvalidToken,
                                "request already answered",
                            ),
                            false,
                        )));
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
            };
            self.as_mut().project().state.set(next);
        }
    }
}
