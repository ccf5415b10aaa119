use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use crate::layer::polled_after_completion;

/// The name a panic gives when this future is polled after completion.
const NAME: &str = "layer::authorize::ResponseFuture";

pin_project! {
    /// The response future of [`Authorize`](super::Authorize).
    ///
    /// Like every response future of this crate's layers, it panics when polled again after it
    /// returned its output.
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

impl<F, B> ResponseFuture<F, B> {
    /// The inner service was called.
    pub(super) fn called(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    /// The request was refused with `response`.
    pub(super) fn rejected(response: Response<B>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<B>> },
        /// The output was returned.
        Done,
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    /// Panics when polled again after it returned its output.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let output = match self.as_mut().project().kind.project() {
            KindProj::Inner { future } => ready!(future.poll(cx)),
            KindProj::Rejected { response } => match response.take() {
                Some(response) => Ok(response),
                None => polled_after_completion(NAME),
            },
            KindProj::Done => polled_after_completion(NAME),
        };
        self.project().kind.set(Kind::Done);
        Poll::Ready(output)
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
