//! The secure listener: TCP accepts, with TLS handshakes run off the accept loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::SecureChannel;
use crate::transport::SecureStream;
use crate::transport::stream::ConnectionSlot;

/// Default cap on handshakes in progress at once.
pub const DEFAULT_MAX_CONCURRENT_HANDSHAKES: usize = 512;
/// Default cap on open connections (handshaking or established).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default idle timeout: a connection on which no byte moved for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Accepts TCP connections and yields only those whose client completed the mutual TLS
/// handshake and was allowed.
///
/// Handshakes run in their own tasks, each bounded by the handshake timeout (default 10 s) and
/// all together by a cap on concurrent handshakes (default 512); open connections are capped
/// (default 10,000) and closed after being idle (default 5 minutes). A client that sends nothing,
/// sends garbage or stalls mid-handshake holds one slot until its timeout and never blocks other
/// accepts. Failed handshakes are logged through `tracing` (target `secure_channel::transport`)
/// with the peer address and the reason, and never end the accept loop. Dropping the listener
/// stops accepting; connections already handed out are unaffected.
///
/// Serve it with axum (feature `axum`), tonic (feature `tonic`), or hyper
/// ([`serve`](crate::integration::hyper::serve)), or take streams with
/// [`accept`](Self::accept).
#[derive(Debug)]
pub struct SecureListener {
    local_addr: SocketAddr,
    stats: Arc<ListenerStats>,
    accepted: mpsc::Receiver<(SecureStream<TcpStream>, SocketAddr)>,
    accept_loop: JoinHandle<()>,
}

/// Counters of a [`SecureListener`], readable while it is being served.
#[derive(Debug, Default)]
pub struct ListenerStats {
    accepted: AtomicU64,
    failed: AtomicU64,
}

impl ListenerStats {
    /// Connections whose handshake succeeded.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections whose handshake failed or timed out.
    pub fn failed_handshakes(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Options of a [`SecureListener`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SecureListenerBuilder {
    channel: SecureChannel,
    handshake_timeout: Option<Duration>,
    max_concurrent_handshakes: usize,
    max_connections: usize,
    idle_timeout: Option<Duration>,
}

impl Drop for SecureListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl SecureChannel {
    /// A secure listener on `tcp` with default limits; see [`SecureListener`].
    ///
    /// Must be called within a tokio runtime (the accept loop is spawned).
    pub fn listener(&self, tcp: TcpListener) -> io::Result<SecureListener> {
        self.listener_builder().bind(tcp)
    }

    /// A secure listener with options.
    pub fn listener_builder(&self) -> SecureListenerBuilder {
        SecureListenerBuilder {
            channel: self.clone(),
            handshake_timeout: None,
            max_concurrent_handshakes: DEFAULT_MAX_CONCURRENT_HANDSHAKES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

impl SecureListenerBuilder {
    /// Bounds each handshake (default: the channel's, 10 s unless changed).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }

    /// Caps the handshakes in progress at once (default 512, at least 1). When the cap is
    /// reached, new TCP connections wait in the kernel's backlog.
    pub fn max_concurrent_handshakes(mut self, max: usize) -> Self {
        self.max_concurrent_handshakes = max.max(1);
        self
    }

    /// Caps the connections open at once, handshaking or established (default 10,000, at least
    /// 1). At the cap, new TCP connections wait in the kernel's backlog until one closes.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Closes a connection on which no byte moved, in either direction, for `timeout` (default
    /// 5 minutes; the close comes between 1x and 1.5x the timeout after the last byte); `None`
    /// never closes idle connections.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Starts accepting on `tcp`.
    pub fn bind(self, tcp: TcpListener) -> io::Result<SecureListener> {
        let local_addr = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(self.max_concurrent_handshakes);
        let stats = Arc::new(ListenerStats::default());
        let accept_loop = tokio::spawn(accept_loop(self, tcp, tx, stats.clone()));
        Ok(SecureListener {
            local_addr,
            stats,
            accepted,
            accept_loop,
        })
    }
}

impl SecureListener {
    /// The next connection whose handshake succeeded, with the client's address.
    ///
    /// Returns an error only if the accept loop has stopped.
    pub async fn accept(&mut self) -> io::Result<(SecureStream<TcpStream>, SocketAddr)> {
        self.accepted
            .recv()
            .await
            .ok_or_else(|| io::Error::other("secure listener stopped accepting"))
    }

    #[cfg(feature = "tonic")]
    /// Polls for the next accepted connection (`None` once the accept loop has stopped).
    pub(crate) fn poll_accept(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<(SecureStream<TcpStream>, SocketAddr)>> {
        self.accepted.poll_recv(cx)
    }

    /// The listener's counters; the handle stays valid after the listener moved into a server.
    pub fn stats(&self) -> Arc<ListenerStats> {
        self.stats.clone()
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

async fn accept_loop(
    config: SecureListenerBuilder,
    tcp: TcpListener,
    accepted: mpsc::Sender<(SecureStream<TcpStream>, SocketAddr)>,
    stats: Arc<ListenerStats>,
) {
    let slots = Arc::new(Semaphore::new(config.max_concurrent_handshakes));
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let timeout = config.handshake_timeout;
    let idle_timeout = config.idle_timeout;
    loop {
        let Ok(connection) = connections.clone().acquire_owned().await else {
            return;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, addr) = match tcp.accept().await {
            Ok(pair) => pair,
            Err(error) => {
                // Typically EMFILE/ENFILE: wait a little instead of spinning.
                tracing::error!(target: "secure_channel::transport", %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if accepted.is_closed() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let channel = config.channel.clone();
        let accepted = accepted.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let result = match timeout {
                Some(timeout) => channel.accept_with_timeout(stream, timeout).await,
                None => channel.accept(stream).await,
            };
            drop(slot);
            match result {
                Ok(stream) => {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    let stream = stream.with_slot(ConnectionSlot::new(connection));
                    let stream = match idle_timeout {
                        Some(timeout) => stream.with_idle_timeout(timeout),
                        None => stream,
                    };
                    tracing::debug!(
                        target: "secure_channel::transport",
                        peer_addr = %addr,
                        peer = %stream.peer_identity().spiffe_id(),
                        "connection accepted"
                    );
                    let _ = accepted.send((stream, addr)).await;
                }
                Err(error) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        target: "secure_channel::transport",
                        peer_addr = %addr,
                        %error,
                        "TLS handshake failed"
                    );
                }
            }
        });
    }
}
