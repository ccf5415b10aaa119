//! `proxy inbound`: SPIFFE mutual TLS in front of a plaintext service that cannot link the
//! crate, admitting callers exactly as the library does.

mod admin;
mod answer_timeout;
mod flags;
mod http_in;
mod inbound;
mod limits;
mod local;
mod outbound;
mod proxy_protocol;
mod tcp_in;
mod token_file;
mod trust;
mod upstream;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_in::strip_hop_by_hop;
pub(crate) use inbound::InboundArgs;
pub(crate) use outbound::OutboundArgs;

use crate::cli::ProxyCommand;
use crate::failure::{Failure, Outcome};

/// Runs `proxy ...` on a multi-threaded runtime.
pub(crate) fn run(command: ProxyCommand) -> Outcome {
    let workers = match &command {
        // http mode serves on threads of its own (`http_in::serve_sharded`): this runtime only
        // reloads, sweeps and answers the admin listener.
        ProxyCommand::Inbound(args) if args.mode == inbound::Mode::Http => Some(1),
        ProxyCommand::Inbound(args) => args.worker_threads,
        ProxyCommand::Outbound(args) => args.worker_threads,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| Failure::Invalid(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        match command {
            ProxyCommand::Inbound(args) => inbound::run(*args).await,
            ProxyCommand::Outbound(args) => outbound::run(*args).await,
        }
    })
}

/// The bound on the next hop's answer and on pauses in the bodies either way (see
/// `answer_timeout`), in seconds, unless `--backend-timeout`/`--target-timeout` say otherwise:
/// nginx's `proxy_read_timeout` default.
const DEFAULT_RESPONSE_TIMEOUT: u64 = 60;

/// The answer to a request that stalled (see `answer_timeout`): 504 when the next hop (`what`)
/// did not answer, or stopped taking the request's body, within `timeout`; 408 when the caller
/// stopped sending it.
fn stalled(
    stalled: answer_timeout::Stalled,
    what: &str,
    timeout: Duration,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let secs = timeout.as_secs();
    let (status, text) = match stalled {
        answer_timeout::Stalled::NextHop => (
            http::StatusCode::GATEWAY_TIMEOUT,
            format!("gateway timeout: the {what} did not answer within {secs} s\n"),
        ),
        answer_timeout::Stalled::Caller => (
            http::StatusCode::REQUEST_TIMEOUT,
            format!("request timeout: the request's body stalled for {secs} s\n"),
        ),
    };
    (status, [(http::header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// `uri`'s path and query sent to `scheme://authority` instead (the target of a proxy hop).
fn retarget(uri: &http::Uri, scheme: &str, authority: &str) -> Result<http::Uri, http::Error> {
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    http::Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
}

/// The connections a server spawned, so that draining can wait for them.
struct Tracked {
    open: tokio::sync::mpsc::Sender<()>,
    all_closed: tokio::sync::mpsc::Receiver<()>,
}

impl Tracked {
    fn new() -> Self {
        let (open, all_closed) = tokio::sync::mpsc::channel(1);
        Self { open, all_closed }
    }

    /// Runs `connection` in its own task, tracked.
    fn spawn(&self, connection: impl Future<Output = ()> + Send + 'static) {
        let open = self.open.clone();
        tokio::spawn(async move {
            connection.await;
            drop(open);
        });
    }

    /// Completes when every tracked connection has ended.
    async fn drained(self) {
        let Self {
            open,
            mut all_closed,
        } = self;
        drop(open);
        let _ = all_closed.recv().await;
    }
}

/// Completes on SIGTERM or SIGINT.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only SIGINT stops the proxy");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
    }
}

/// Runs `serve` (given a future that completes when it is to stop accepting) until SIGTERM or
/// SIGINT, then lets it finish the work in flight for up to `grace`. Exits cleanly either way:
/// what is still in flight after the grace period is dropped, with a warning.
async fn serve_until_terminated<S, F>(grace: Duration, draining: &AtomicBool, serve: S) -> Outcome
where
    S: FnOnce(tokio::sync::oneshot::Receiver<()>) -> F,
    F: Future<Output = std::io::Result<()>> + Send + 'static,
{
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let mut server = tokio::spawn(serve(stopped));
    tokio::select! {
        result = &mut server => {
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Failure::Invalid(format!("the server stopped: {e}"))),
                Err(e) => Err(Failure::Invalid(format!("the server failed: {e}"))),
            };
        }
        () = terminated() => {}
    }
    draining.store(true, Ordering::Relaxed);
    let _ = stop.send(());
    match tokio::time::timeout(grace, &mut server).await {
        Ok(_) => tracing::info!("drained: every request in flight was answered"),
        Err(_) => {
            server.abort();
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "the drain grace period ended with work in flight; closing it"
            );
        }
    }
    Ok(())
}
