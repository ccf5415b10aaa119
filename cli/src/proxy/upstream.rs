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
                    // body has been read.
                    self.lock().push(sender);
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
