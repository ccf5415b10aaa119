//! `proxy inbound`: SPIFFE mutual TLS in front of a plaintext service that cannot link the
//! crate, admitting callers exactly as the library does.

mod admin;
mod backend;
mod flags;
mod http_in;
mod inbound;
mod proxy_protocol;
mod tcp_in;
mod trust;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub(crate) use inbound::InboundArgs;

use crate::cli::ProxyCommand;
use crate::failure::{Failure, Outcome};

/// Runs `proxy ...` on a multi-threaded runtime.
pub(crate) fn run(command: ProxyCommand) -> Outcome {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Invalid(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        match command {
            ProxyCommand::Inbound(args) => inbound::run(*args).await,
        }
    })
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
