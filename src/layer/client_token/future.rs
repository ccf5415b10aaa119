use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Request;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::service::attach;
use crate::jwt::{BearerToken, TokenProviderError};
use crate::layer::polled_after_completion;

/// The name a panic gives when this future is polled after completion.
const NAME: &str = "layer::client_token::ResponseFuture";

/// The token a request waits for.
pub(super) type TokenFuture =
    Pin<Box<dyn Future<Output = Result<BearerToken, TokenProviderError>> + Send + 'static>>;

pin_project! {
    /// The response future of [`ClientToken`](super::ClientToken).
    ///
    /// Like every response future of this crate's layers, it panics when polled again after it
    /// returned its output.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    /// The inner service was called.
    pub(super) fn calling(future: S::Future) -> Self {
        Self {
            state: State::Calling { future },
        }
    }

    /// `request` waits for `token` before `service` is called with it.
    pub(super) fn fetching(token: TokenFuture, service: S, request: Request<B>) -> Self {
        Self {
            state: State::Fetching {
                token,
                pending: Some((service, request)),
            },
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Fetching {
            token: TokenFuture,
            pending: Option<(S, Request<B>)>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        /// The output was returned.
        Done,
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Fetching { .. } => "fetching token",
            State::Calling { .. } => "calling",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<TokenProviderError>,
{
    type Output = Result<S::Response, TokenProviderError>;

    /// Panics when polled again after it returned its output.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let output = ready!(self.as_mut().poll_state(cx));
        self.project().state.set(State::Done);
        Poll::Ready(output)
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<TokenProviderError>,
{
    fn poll_state(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Response, TokenProviderError>> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Calling { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                StateProj::Fetching { token, pending } => {
                    let token = ready!(token.as_mut().poll(cx))?;
                    let Some((mut service, mut request)) = pending.take() else {
                        polled_after_completion(NAME)
                    };
                    attach(&mut request, &token);
                    State::Calling {
                        future: service.call(request),
                    }
                }
                StateProj::Done => polled_after_completion(NAME),
            };
            self.as_mut().project().state.set(next);
        }
    }
}
