//! The bound on a forwarded request (`--backend-timeout`, `--target-timeout`): once the request
//! has been sent whole, the next hop has that long to answer (status and headers); while its
//! body is still being sent, no pause in it may last that long. A pause is told apart by who
//! is waited for: the next hop not taking more of the body (504, as for an answer that does not
//! come) or the caller not sending it (408: an upload that keeps moving is never cut off,
//! however long it takes). Then, while the answer's body comes, no pause in it may last that
//! long either ([`bound_pauses`]): the caller's answer ends there, cut short.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::watch;

/// The progress of a request's body as it is sent.
pub(crate) struct Sent(Option<Progress>);

struct Progress {
    /// Changes with each part of the body sent; closed when the body has been sent whole (or
    /// is gone: an error, or the next hop's connection dropped it).
    parts: watch::Receiver<()>,
    /// Whether the body is waiting for the caller to send more.
    waiting_on_caller: Arc<AtomicBool>,
}

/// Who did not move within the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stalled {
    /// The next hop: it did not answer, or stopped taking the request's body.
    NextHop,
    /// The caller: it stopped sending the request's body.
    Caller,
}

/// `body` as forwarded, and its progress. A body that is empty (or whose end is known
/// already) is sent at once, and kept as it is.
pub(crate) fn watch_progress(body: Body) -> (Body, Sent) {
    if http_body::Body::is_end_stream(&body) {
        return (body, Sent(None));
    }
    let (parts, watched_parts) = watch::channel(());
    let waiting_on_caller = Arc::new(AtomicBool::new(false));
    let watched = Watched {
        inner: body,
        parts: Some(parts),
        waiting_on_caller: Arc::clone(&waiting_on_caller),
    };
    let progress = Progress {
        parts: watched_parts,
        waiting_on_caller,
    };
    (Body::new(watched), Sent(Some(progress)))
}

/// Waits for `answer` (which sends the request and yields the next hop's answer), bounded by
/// `timeout` as the module says; `Err` names who stalled, and `answer` is dropped.
pub(crate) async fn answer_within<T>(
    timeout: Duration,
    sent: Sent,
    answer: impl Future<Output = T>,
) -> Result<T, Stalled> {
    let mut answer = std::pin::pin!(answer);
    if let Sent(Some(mut progress)) = sent {
        loop {
            tokio::select! {
                biased;
                output = &mut answer => return Ok(output),
                more = progress.parts.changed() => match more {
                    // Another part went on: the pause starts again.
                    Ok(()) => continue,
                    Err(_) => break,
                },
                () = tokio::time::sleep(timeout) => {
                    return Err(if progress.waiting_on_caller.load(Ordering::Acquire) {
                        Stalled::Caller
                    } else {
                        Stalled::NextHop
                    });
                }
            }
        }
    }
    tokio::time::timeout(timeout, answer)
        .await
        .map_err(|_| Stalled::NextHop)
}

/// `body` (the next hop's answer) as forwarded to the caller, ended with an error when no part
/// of it comes for `timeout`: a next hop that stops in the middle of its answer does not hold
/// the caller without bound.
pub(crate) fn bound_pauses<B>(body: B, timeout: Duration) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Body::new(PauseBounded {
        inner: body,
        timeout,
        pause: None,
    })
}

/// The next hop stopped sending the answer's body for longer than the bound.
#[derive(Debug)]
struct AnswerStalled(Duration);

impl std::fmt::Display for AnswerStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the answer's body stalled for {:?}", self.0)
    }
}

impl std::error::Error for AnswerStalled {}

/// An answer's body with a bound on each pause in it.
struct PauseBounded<B> {
    inner: B,
    timeout: Duration,
    /// The current pause's deadline (made at the first pause, reset at the next ones).
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> http_body::Body for PauseBounded<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(pause) = &mut this.pause {
                // The next pause starts at the next wait.
                pause
                    .as_mut()
                    .reset(tokio::time::Instant::now() + this.timeout);
            }
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let pause = this
            .pause
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match pause.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(AnswerStalled(timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that reports each part read from it, whether it waits for the caller, and
/// its end.
struct Watched {
    inner: Body,
    parts: Option<watch::Sender<()>>,
    waiting_on_caller: Arc<AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.waiting_on_caller
            .store(polled.is_pending(), Ordering::Release);
        let Poll::Ready(frame) = polled else {
            return Poll::Pending;
        };
        if matches!(frame, Some(Ok(_))) && !self.inner.is_end_stream() {
            if let Some(parts) = &self.parts {
                parts.send_replace(());
            }
        } else {
            // The end (or an error): closing the channel says so.
            self.parts = None;
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

    /// A streamed body (its chunks sent on the returned channel), watched.
    fn streamed() -> (tokio::sync::mpsc::Sender<Bytes>, Body, Progress) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (body, Sent(Some(progress))) = watch_progress(Body::new(Chunks(rx))) else {
            panic!("a streamed body is not at its end");
        };
        (tx, body, progress)
    }

    #[tokio::test]
    async fn an_empty_body_is_sent_at_once_and_kept_as_it_is() {
        let (body, sent) = watch_progress(Body::empty());
        assert!(sent.0.is_none());
        assert!(http_body::Body::is_end_stream(&body));
    }

    #[tokio::test]
    async fn each_part_and_the_end_of_a_body_are_reported() {
        let (tx, mut body, mut progress) = streamed();
        tx.send(Bytes::from_static(b"part")).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "part");
        assert!(progress.parts.has_changed().unwrap(), "a part went on");
        progress.parts.mark_unchanged();
        assert!(!progress.waiting_on_caller.load(Ordering::Acquire));
        // Nothing to read: the body waits for the caller.
        let pending = futures_poll(&mut body);
        assert!(pending);
        assert!(progress.waiting_on_caller.load(Ordering::Acquire));
        drop(tx);
        assert!(body.frame().await.is_none());
        assert!(progress.parts.has_changed().is_err(), "the end closes it");
    }

    /// Polls `body` once; whether it was pending.
    fn futures_poll(body: &mut Body) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        http_body::Body::poll_frame(Pin::new(body), &mut cx).is_pending()
    }

    #[tokio::test(start_paused = true)]
    async fn the_bound_is_on_each_pause_then_on_the_answer() {
        let bound = Duration::from_secs(1);
        // Parts every 0.6 s for 3 s, then the end, then an answer 0.9 s later: within the
        // bound all along, 3.9 s in all.
        let (tx, mut body, progress) = streamed();
        let sender = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(600)).await;
                tx.send(Bytes::from_static(b"part")).await.unwrap();
            }
        });
        let answer = async move {
            while body.frame().await.is_some() {}
            tokio::time::sleep(Duration::from_millis(900)).await;
            "answered"
        };
        let started = tokio::time::Instant::now();
        let answered = answer_within(bound, Sent(Some(progress)), answer).await;
        assert_eq!(answered, Ok("answered"));
        assert_eq!(started.elapsed(), Duration::from_millis(3900));
        sender.await.unwrap();

        // Sent whole at once, an answer 2 s away: the next hop stalled.
        let late = tokio::time::sleep(Duration::from_secs(2));
        assert_eq!(
            answer_within(bound, Sent(None), late).await,
            Err(Stalled::NextHop)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_keeps_coming_is_forwarded_and_one_that_stops_is_cut_short() {
        let bound = Duration::from_secs(1);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut body = bound_pauses(Chunks(rx), bound);
        let sender = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(900)).await;
                tx.send(Bytes::from_static(b"part")).await.unwrap();
            }
            // Then nothing, the answer unfinished.
            std::future::pending::<()>().await;
        });
        let started = tokio::time::Instant::now();
        for _ in 0..4 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "part");
        }
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.to_string().contains("stalled for 1s"), "{error}");
        assert_eq!(started.elapsed(), Duration::from_millis(4600));
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_in_the_body_names_who_stalled() {
        let bound = Duration::from_secs(1);
        // The caller sends one part and then nothing: the body waits on it.
        let (tx, mut body, progress) = streamed();
        tx.send(Bytes::from_static(b"part")).await.unwrap();
        let reading = async move { while body.frame().await.is_some() {} };
        let started = tokio::time::Instant::now();
        assert_eq!(
            answer_within(bound, Sent(Some(progress)), reading).await,
            Err(Stalled::Caller)
        );
        assert_eq!(started.elapsed(), bound);

        // The next hop reads one part and then no more, with more there to read.
        let (tx, mut body, progress) = streamed();
        tx.send(Bytes::from_static(b"one")).await.unwrap();
        tx.send(Bytes::from_static(b"two")).await.unwrap();
        let stuck = async move {
            body.frame().await;
            std::future::pending::<()>().await;
        };
        assert_eq!(
            answer_within(bound, Sent(Some(progress)), stuck).await,
            Err(Stalled::NextHop)
        );
    }
}
