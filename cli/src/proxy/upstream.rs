//! The inbound proxy's connections to the backend for one inbound connection: made when its
//! requests need them, driven by tasks on the same thread, made again whenever the backend
//! closed one, and dropped with the inbound connection. No shared pool: nothing to check out
//! under a lock, and no task per request to put a connection back (what hyper-util's pooled
//! client does).

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::proxy::local::LocalAddr;

/// The most backend connections one inbound connection keeps between its requests: an
/// HTTP/2 caller's burst opens as many as it has requests at once, and those beyond this close
/// after their response, so the backend is not left holding a caller's peak for as long as
/// the caller stays connected.
const MAX_KEPT: usize = 4;

/// Why a request got no answer from the backend.
pub(crate) type UpstreamError = Box<dyn std::error::Error + Send + Sync>;

/// One inbound connection's HTTP/1.1 connections to the backend (none until its first
/// request), in the extensions of each of its requests
/// (`integration::hyper::Serve::connection_extension`). An inbound HTTP/1.1 connection sends
/// one request at a time and keeps one; an HTTP/2 one keeps as many as it had requests at once.
#[derive(Clone, Default)]
pub(crate) struct Upstream(Arc<Mutex<Vec<SendRequest<Body>>>>);

impl Upstream {
    /// Sends `request` (origin-form, with a `Host` header) on one of these connections,
    /// connecting first when none is free or the backend has closed them. `one_at_a_time`
    /// (an inbound HTTP/1.1 connection): waits for the kept connection to finish the previous
    /// response rather than opening another. A request that a kept connection did not take
    /// (the backend closed it meanwhile) is sent once more on a new connection; one that may
    /// have reached the backend never is.
    pub(crate) async fn send(
        &self,
        backend: &LocalAddr,
        mut request: Request<Body>,
        one_at_a_time: bool,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let kept = self.take(one_at_a_time);
        let mut reused = kept.is_some();
        let mut sender = match kept {
            Some(sender) => sender,
            None => connect(backend).await?,
        };
        loop {
            if let Err(error) = sender.ready().await {
                if !reused {
                    return Err(error.into());
                }
                sender = connect(backend).await?;
                reused = false;
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    // Back for the next request, which finds it ready once this response's
                    // body has been read. One not kept closes after this response.
                    let mut kept = self.lock();
                    if kept.len() < MAX_KEPT {
                        kept.push(sender);
                    }
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => {
                        tracing::debug!(error = %error.error(), "a kept backend connection closed; connecting again");
                        request = unsent;
                        sender = connect(backend).await?;
                        reused = false;
                    }
                    _ => return Err(error.into_error().into()),
                },
            }
        }
    }

    /// A kept connection that is ready for a request (or, `one_at_a_time`, any that is still
    /// open); the closed ones are dropped. Taken out while in use.
    fn take(&self, one_at_a_time: bool) -> Option<SendRequest<Body>> {
        let mut kept = self.lock();
        kept.retain(|sender| !sender.is_closed());
        let free = match kept.iter().position(SendRequest::is_ready) {
            Some(free) => Some(free),
            None if one_at_a_time => kept.len().checked_sub(1),
            None => None,
        };
        free.map(|free| kept.swap_remove(free))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<Body>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A new HTTP/1.1 connection to `backend` (bounded by the connect timeout), its driver spawned
/// on this thread's runtime; it ends when its sender is dropped or the backend closes it.
async fn connect(backend: &LocalAddr) -> Result<SendRequest<Body>, UpstreamError> {
    let stream = backend.connect().await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::Barrier;

    /// A backend that answers each request once `burst` requests have arrived together, and
    /// counts its connections.
    async fn backend(burst: usize) -> (LocalAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = LocalAddr::parse(&listener.local_addr().unwrap().to_string()).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(burst));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    let mut first = true;
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                        if !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            continue;
                        }
                        head.clear();
                        if first {
                            barrier.wait().await;
                            first = false;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, connections)
    }

    fn request() -> Request<Body> {
        Request::builder()
            .uri("/")
            .header(http::header::HOST, "backend")
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_burst_leaves_at_most_a_few_connections_kept() {
        const BURST: usize = 3 * MAX_KEPT;
        let (addr, connections) = backend(BURST).await;
        let upstream = Upstream::default();
        let mut sends = tokio::task::JoinSet::new();
        for _ in 0..BURST {
            let (upstream, addr) = (upstream.clone(), addr.clone());
            sends.spawn(async move {
                let response = upstream.send(&addr, request(), false).await.unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            });
        }
        let answers = tokio::time::timeout(Duration::from_secs(10), sends.join_all())
            .await
            .unwrap();
        assert!(answers.iter().all(|body| body.as_ref() == b"ok"));
        // Every request of the burst had a connection of its own, and only a few are kept.
        assert_eq!(connections.load(Ordering::SeqCst), BURST);
        assert_eq!(upstream.lock().len(), MAX_KEPT);
        // The kept ones serve the next requests: no new connection.
        for _ in 0..MAX_KEPT {
            let response = tokio::time::timeout(
                Duration::from_secs(10),
                upstream.send(&addr, request(), true),
            )
            .await
            .unwrap()
            .unwrap();
            response.into_body().collect().await.unwrap();
        }
        assert_eq!(connections.load(Ordering::SeqCst), BURST);
    }
}
