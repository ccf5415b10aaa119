//! The answer of a layer that either calls its inner service or refuses the request: what the
//! authorization and rate-limit layers' response futures are made of.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use crate::layer::polled_after_completion;
use crate::limit::Permit;

pin_project! {
    /// The inner service's future, holding the request's in-flight permit (if a concurrency
    /// limit counts it) until that future completes or is dropped; or the response of a
    /// rejection.
    pub(crate) struct Answer<F, B> {
        #[pin]
        kind: Kind<F, B>,
        permit: Option<Permit>,
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

impl<F, B> Answer<F, B> {
    /// The inner service was called; `permit` counts the request in flight until the response
    /// (its head: see the rate-limit layer's docs) is ready.
    // Always inlined (here, in the response futures' `called` and in the layers' `call`): the
    // future is then built in place in the caller's frame; otherwise it is moved through each
    // frame, which callgrind counted as a third of the rate-limit layer's instructions.
    #[inline(always)]
    pub(crate) fn called(future: F, permit: Option<Permit>) -> Self {
        Self {
            kind: Kind::Inner { future },
            permit,
        }
    }

    /// The request was refused with `response`.
    pub(crate) fn rejected(response: Response<B>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
            permit: None,
        }
    }

    /// Polls the answer; panics naming `future` when polled again after it returned its
    /// output.
    #[inline]
    pub(crate) fn poll_answer<E>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        future: &'static str,
    ) -> Poll<Result<Response<B>, E>>
    where
        F: Future<Output = Result<Response<B>, E>>,
    {
        let mut this = self.project();
        let output = match this.kind.as_mut().project() {
            KindProj::Inner { future } => ready!(future.poll(cx)),
            KindProj::Rejected { response } => match response.take() {
                Some(response) => Ok(response),
                None => polled_after_completion(future),
            },
            KindProj::Done => polled_after_completion(future),
        };
        this.kind.set(Kind::Done);
        *this.permit = None;
        Poll::Ready(output)
    }
}
