//! The wait for the next hop's answer to a request (`--backend-timeout`, `--target-timeout`),
//! bounded from when the request has been handed over whole: while the caller is still
//! sending its body, the pace is the caller's, and an upload slower than the bound is not the
//! next hop failing to answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;

/// Resolves once a request's body has been read to its end, failed, or been dropped.
pub(crate) struct Sent(Option<oneshot::Receiver<()>>);

/// `body` as forwarded, and when it has been sent whole. A body that is empty (or whose end
/// is known already) is sent at once, and kept as it is.
pub(crate) fn watch_end(body: Body) -> (Body, Sent) {
    if http_body::Body::is_end_stream(&body) {
        return (body, Sent(None));
    }
    let (end, sent) = oneshot::channel();
    let watched = Watched {
        inner: body,
        end: Some(end),
    };
    (Body::new(watched), Sent(Some(sent)))
}

/// Waits for `answer`; from when the request was `sent`, for at most `timeout` (`Err`: it
/// did not come in time, and `answer` is dropped).
pub(crate) async fn answer_within<T>(
    timeout: Duration,
    sent: Sent,
    answer: impl Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    let mut answer = std::pin::pin!(answer);
    if let Sent(Some(end)) = sent {
        tokio::select! {
            biased;
            output = &mut answer => return Ok(output),
            // Sent whole, or the body is gone (an error, or the next hop stopped reading it).
            _ = end => {}
        }
    }
    tokio::time::timeout(timeout, answer).await
}

/// A request body that says when it has been read to its end.
struct Watched {
    inner: Body,
    end: Option<oneshot::Sender<()>>,
}

impl Watched {
    fn ended(&mut self) {
        if let Some(end) = self.end.take() {
            let _ = end.send(());
        }
    }
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) || self.inner.is_end_stream() {
            self.ended();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::BodyExt;

    #[tokio::test]
    async fn an_empty_body_is_sent_at_once_and_kept_as_it_is() {
        let (body, sent) = watch_end(Body::empty());
        assert!(sent.0.is_none());
        assert!(http_body::Body::is_end_stream(&body));
    }

    /// A body of the chunks sent on a channel, ending when the channel closes.
    struct Chunks(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
        }
    }

    #[tokio::test]
    async fn a_body_is_sent_when_read_to_its_end() {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let (mut body, Sent(Some(mut sent))) = watch_end(Body::new(Chunks(rx))) else {
            panic!("a streamed body is not at its end");
        };
        tx.send(Bytes::from_static(b"part")).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "part");
        assert!(sent.try_recv().is_err(), "not sent whole yet");
        drop(tx);
        assert!(body.frame().await.is_none());
        assert_eq!(sent.try_recv(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_bound_starts_when_the_request_was_sent() {
        // Not sent yet: no bound, however long the answer takes.
        let (end, sent) = oneshot::channel();
        let late = tokio::time::sleep(Duration::from_secs(10));
        let answered = answer_within(Duration::from_secs(1), Sent(Some(sent)), late);
        let answered = tokio::spawn(answered);
        tokio::time::sleep(Duration::from_secs(9)).await;
        // Sent now: the answer (1 s away) is within the bound.
        end.send(()).unwrap();
        assert!(answered.await.unwrap().is_ok());
        // Sent at once: an answer 2 s away is not.
        let late = tokio::time::sleep(Duration::from_secs(2));
        assert!(
            answer_within(Duration::from_secs(1), Sent(None), late)
                .await
                .is_err()
        );
    }
}
