//! The inbound proxy's tcp mode: admitted callers' bytes forwarded both ways to the backend,
//! half-closes honoured, optionally after a PROXY protocol v2 header.

use std::net::SocketAddr;

use secure_channel::SecureListener;
use secure_channel::SecureStream;
use tokio::io::{AsyncWriteExt, copy_bidirectional};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::proxy::admin::BACKEND_ERRORS;
use crate::proxy::local::LocalAddr;
use crate::proxy::{Tracked, proxy_protocol};

/// Accepts until `stop`, then waits for the open connections to end (the caller bounds that
/// wait with the drain grace).
pub(crate) async fn serve(
    mut listener: SecureListener,
    backend: LocalAddr,
    proxy_protocol: bool,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let connections = Tracked::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                let backend = backend.clone();
                connections.spawn(async move { relay(stream, peer, &backend, proxy_protocol).await });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    connections.drained().await;
    Ok(())
}

/// One connection: the backend is dialled (a backend that is down closes the caller's
/// connection), the PROXY header sent, then bytes copied both ways until both sides are done
/// or the connection is cut off.
async fn relay(
    mut stream: SecureStream<TcpStream>,
    peer: SocketAddr,
    backend: &LocalAddr,
    proxy_protocol: bool,
) {
    let id = stream.peer_identity().spiffe_id().clone();
    let mut upstream = match backend.connect().await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::warn!(peer = %id, %error, %backend, "backend unreachable: closing the connection");
            metrics::counter!(BACKEND_ERRORS, "mode" => "tcp").increment(1);
            let _ = stream.shutdown().await;
            return;
        }
    };
    if proxy_protocol {
        let local = stream.get_ref().local_addr().unwrap_or(peer);
        let header = proxy_protocol::header(
            peer,
            local,
            &id.to_string(),
            stream.peer_identity().thumbprint_sha256(),
        );
        if let Err(error) = upstream.write_all(&header).await {
            tracing::warn!(peer = %id, %error, "backend closed before the PROXY header");
            return;
        }
    }
    let cut_off = stream.cut_off_signal();
    tokio::select! {
        result = copy_bidirectional(&mut stream, &mut upstream) => match result {
            Ok((up, down)) => tracing::debug!(peer = %id, up, down, "connection closed"),
            Err(error) => tracing::debug!(peer = %id, %error, "connection ended with an error"),
        },
        cut = cut_off.cut_off() => {
            tracing::info!(peer = %id, %cut, "connection cut off");
        }
    }
}
