//! Code every service of this room repeats, written once.

/// `get_ref`, `get_mut` and `into_inner` for a service whose inner service `S` is its field
/// `inner`; expanded inside the service's `impl<S, ..>` block.
macro_rules! define_inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Unwraps the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

/// The response future of a layer that calls its inner service or refuses the request: a
/// named, unboxed wrapper around [`Answer`](crate::layer::answer::Answer), with `called`,
/// `rejected`, `Future` and `Debug`. `$name` is what its panic names; `$service` the
/// service it belongs to (for its docs); `$permit` says what counts the request in flight.
macro_rules! define_answer_future {
    ($name:literal, $service:literal, $permit:literal) => {
        use std::future::Future;
        use std::pin::Pin;
        use std::task::{Context, Poll};

        use http::Response;
        use pin_project_lite::pin_project;

        use crate::layer::answer::Answer;
        use crate::limit::Permit;

        pin_project! {
            #[doc = concat!("The response future of [`", $service, "`](super::", $service, ").")]
            ///
            #[doc = $permit]
            ///
            /// Like every response future of this crate's layers, it panics when polled again
            /// after it returned its output.
            pub struct ResponseFuture<F, B> {
                #[pin]
                answer: Answer<F, B>,
            }
        }

        impl<F, B> ResponseFuture<F, B> {
            /// The inner service was called; `permit` counts the request in flight.
            #[inline(always)]
            pub(super) fn called(future: F, permit: Option<Permit>) -> Self {
                Self {
                    answer: Answer::called(future, permit),
                }
            }

            /// The request was refused with `response`.
            pub(super) fn rejected(response: Response<B>) -> Self {
                Self {
                    answer: Answer::rejected(response),
                }
            }
        }

        impl<F, B, E> Future for ResponseFuture<F, B>
        where
            F: Future<Output = Result<Response<B>, E>>,
        {
            type Output = Result<Response<B>, E>;

            /// Panics when polled again after it returned its output.
            #[inline]
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                self.project().answer.poll_answer(cx, $name)
            }
        }

        impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("ResponseFuture").finish_non_exhaustive()
            }
        }
    };
}
