//! The secure listener: TCP accepts, with TLS handshakes run off the accept loop.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::transport::Handshaker;
use crate::transport::SecureStream;
use crate::transport::error::ConnectionError;
use crate::transport::stream::{ConnectionSlot, HandshakeDeadlines};

/// Default cap on handshakes in progress at once.
pub const DEFAULT_MAX_CONCURRENT_HANDSHAKES: usize = 512;
/// Default cap on handshakes in progress at once from one source (an IPv4 address, or an IPv6
/// /64).
pub const DEFAULT_MAX_HANDSHAKES_PER_SOURCE: usize = 64;
/// Default deadline for a client's ClientHello, from the start of its handshake.
pub const DEFAULT_CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Default cap on open connections (handshaking or established).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default idle timeout: a connection on which no byte moved for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Accepts TCP connections and yields only those whose client completed the mutual TLS
/// handshake and was allowed.
///
/// Handshakes run in their own tasks, each bounded by the handshake timeout (default 10 s), its
/// ClientHello by a shorter deadline (default 2 s), and all together by a cap on concurrent
/// handshakes (default 512) and a cap per source address (default 64; an IPv6 source is its
/// /64); open connections are capped (default 10,000) and closed after being idle (default 5
/// minutes). A client that sends nothing holds a handshake slot until the ClientHello deadline,
/// one that stalls mid-handshake until the handshake timeout; neither blocks other accepts, and
/// one source's silent connections cannot take every slot (its connections beyond its cap wait,
/// without a slot, within the handshake timeout). Failed handshakes are logged through
/// `tracing` (target `secure_channel::transport`, WARN, at most 10 lines a second with a count
/// of those left out) with the peer address, the reason's kind and the presented SPIFFE ID
/// where there is one, and never end the accept loop. Dropping the listener stops accepting;
/// connections already handed out are unaffected.
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
    handshaker: Handshaker,
    handshake_timeout: Option<Duration>,
    client_hello_timeout: Duration,
    max_concurrent_handshakes: usize,
    max_handshakes_per_source: usize,
    max_connections: usize,
    idle_timeout: Option<Duration>,
}

impl Drop for SecureListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl SecureListenerBuilder {
    /// A listener builder with the default limits, for the channel that hands `handshaker` down.
    pub(crate) fn new(handshaker: Handshaker) -> Self {
        Self {
            handshaker,
            handshake_timeout: None,
            client_hello_timeout: DEFAULT_CLIENT_HELLO_TIMEOUT,
            max_concurrent_handshakes: DEFAULT_MAX_CONCURRENT_HANDSHAKES,
            max_handshakes_per_source: DEFAULT_MAX_HANDSHAKES_PER_SOURCE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }

    /// Bounds each handshake (default: the channel's, 10 s unless changed).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }

    /// Bounds the wait for a client's ClientHello, from the start of its handshake (default
    /// 2 s, never more than the handshake timeout): a client that connects and sends nothing
    /// gives its handshake slot back after this long.
    pub fn client_hello_timeout(mut self, timeout: Duration) -> Self {
        self.client_hello_timeout = timeout;
        self
    }

    /// Caps the handshakes in progress at once (default 512, at least 1). When the cap is
    /// reached, new TCP connections wait in the kernel's backlog.
    pub fn max_concurrent_handshakes(mut self, max: usize) -> Self {
        self.max_concurrent_handshakes = max.max(1);
        self
    }

    /// Caps the handshakes in progress at once from one source: an IPv4 address, or an IPv6
    /// /64 (default 64, at least 1). A source's connections beyond its cap wait, without taking
    /// a handshake slot, until one of its handshakes ends; one that waits longer than the
    /// handshake timeout is closed. Behind a proxy that hides client addresses, every client
    /// is one source: raise the cap (up to [`max_concurrent_handshakes`](Self::max_concurrent_handshakes)).
    pub fn max_handshakes_per_source(mut self, max: usize) -> Self {
        self.max_handshakes_per_source = max.max(1);
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
    let sources = Arc::new(Sources::new(config.max_handshakes_per_source));
    let failures = Arc::new(FailureLog::default());
    let timeout = config
        .handshake_timeout
        .unwrap_or_else(|| config.handshaker.handshake_timeout());
    let client_hello = config.client_hello_timeout;
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
        let handshaker = config.handshaker.clone();
        let accepted = accepted.clone();
        let stats = stats.clone();
        let slots = slots.clone();
        let sources = sources.clone();
        let failures = failures.clone();
        tokio::spawn(async move {
            let deadline = crate::transport::instant_after(timeout);
            let result = match admit(&sources, &slots, slot, addr.ip(), deadline).await {
                Some(_permits) => {
                    let deadlines = HandshakeDeadlines {
                        total: deadline.saturating_duration_since(Instant::now()),
                        client_hello: Some(client_hello),
                    };
                    handshaker.accept(stream, deadlines).await
                }
                None => Err(ConnectionError::HandshakeTimeout),
            };
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
                    failures.log(addr, &error);
                }
            }
        });
    }
}

/// Takes the source's handshake permit and a handshake slot, the slot taken before the accept
/// given back while the source is over its cap; `None` if that did not happen by `deadline`.
async fn admit(
    sources: &Arc<Sources>,
    slots: &Arc<Semaphore>,
    slot: OwnedSemaphorePermit,
    ip: IpAddr,
    deadline: Instant,
) -> Option<(SourcePermit, OwnedSemaphorePermit)> {
    if let Some(permit) = sources.try_acquire(ip) {
        return Some((permit, slot));
    }
    drop(slot);
    let Ok(permit) = tokio::time::timeout_at(deadline, sources.acquire(ip)).await else {
        // The wait (and its hold on the source's entry) is over: forget the source if idle.
        sources.forget_if_idle(Sources::source(ip));
        return None;
    };
    let permit = permit?;
    let slot = tokio::time::timeout_at(deadline, slots.clone().acquire_owned())
        .await
        .ok()?
        .ok()?;
    Some((permit, slot))
}

/// Handshakes in progress per source, each source capped.
#[derive(Debug)]
struct Sources {
    max: usize,
    /// One semaphore per source with handshakes in progress or waiting; removed when the last
    /// permit is returned and nobody waits.
    active: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

/// A handshake permit of one source; returning the last one forgets the source.
#[derive(Debug)]
struct SourcePermit {
    permit: Option<OwnedSemaphorePermit>,
    source: IpAddr,
    sources: Arc<Sources>,
}

impl Drop for SourcePermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.sources.forget_if_idle(self.source);
    }
}

impl Sources {
    fn new(max: usize) -> Self {
        Self {
            max,
            active: Mutex::new(HashMap::new()),
        }
    }

    /// The source an address counts against: an IPv4 address, or an IPv6 /64 (one host's, or
    /// one site's, addresses).
    fn source(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
            v4 => v4,
        }
    }

    /// Removes the source's entry if no permit is out and nobody waits (both hold a clone).
    fn forget_if_idle(&self, source: IpAddr) {
        let mut active = self
            .active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if active
            .get(&source)
            .is_some_and(|semaphore| Arc::strong_count(semaphore) == 1)
        {
            active.remove(&source);
        }
    }

    fn semaphore(&self, source: IpAddr) -> Arc<Semaphore> {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(source)
            .or_insert_with(|| Arc::new(Semaphore::new(self.max)))
            .clone()
    }

    fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<SourcePermit> {
        let source = Self::source(ip);
        let permit = self.semaphore(source).try_acquire_owned().ok();
        // Built even on failure, so that dropping it forgets an unused entry.
        let permit = SourcePermit {
            permit,
            source,
            sources: self.clone(),
        };
        permit.permit.is_some().then_some(permit)
    }

    async fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<SourcePermit> {
        let source = Self::source(ip);
        let semaphore = self.semaphore(source);
        let permit = semaphore.acquire_owned().await.ok()?;
        Some(SourcePermit {
            permit: Some(permit),
            source,
            sources: self.clone(),
        })
    }
}

/// Lines about failed handshakes, at most [`FailureLog::LINES_PER_SECOND`] a second; the number
/// left out is reported with the next line written.
#[derive(Debug, Default)]
struct FailureLog {
    state: Mutex<FailureLogState>,
}

#[derive(Debug, Default)]
struct FailureLogState {
    window: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl FailureLog {
    const LINES_PER_SECOND: u32 = 10;

    /// Logs a failed handshake briefly: the kind of failure and the presented SPIFFE ID, never
    /// the allow-list.
    fn log(&self, addr: SocketAddr, error: &ConnectionError) {
        let Some(suppressed) = self.take_line() else {
            return;
        };
        let reason = error.metric_reason();
        let (presented, not_allowed) = presented_id(error);
        // A refused ID's error text carries the whole allow-list: the reason says enough.
        let detail = (!not_allowed).then(|| error.to_string());
        tracing::warn!(
            target: "secure_channel::transport",
            peer_addr = %addr,
            presented = presented.map(tracing::field::display),
            reason,
            error = detail.as_deref(),
            suppressed,
            "TLS handshake failed"
        );
    }

    /// Whether a line may be written now, and how many were left out before it.
    fn take_line(&self) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if state
            .window
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            state.window = Some(now);
            state.written = 0;
        }
        if state.written >= Self::LINES_PER_SECOND {
            state.suppressed += 1;
            return None;
        }
        state.written += 1;
        Some(std::mem::take(&mut state.suppressed))
    }
}

/// The SPIFFE ID a refused peer presented, if the refusal names one, and whether it was refused
/// for not being allowed.
fn presented_id(error: &ConnectionError) -> (Option<&spiffe::SpiffeId>, bool) {
    use crate::identity::PeerRejection as R;
    let ConnectionError::PeerRejected(rejection) = error else {
        return (None, false);
    };
    let mut rejection: &R = rejection;
    loop {
        match rejection {
            R::NotAllowed { presented, .. } => return (Some(presented), true),
            R::UnknownTrustDomain { presented } | R::InvalidChain { presented, .. } => {
                return (Some(presented), false);
            }
            R::ResumedSessionInvalid(inner) => rejection = inner,
            _ => return (None, false),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn tracked(sources: &Sources) -> usize {
        sources.active.lock().unwrap().len()
    }

    #[tokio::test]
    async fn a_source_is_capped_and_forgotten_when_its_last_handshake_ends() {
        let sources = Arc::new(Sources::new(2));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let first = sources.try_acquire(ip).unwrap();
        let second = sources.try_acquire(ip).unwrap();
        assert!(sources.try_acquire(ip).is_none(), "the cap holds");
        // Another source is not affected.
        let other = sources.try_acquire("192.0.2.8".parse().unwrap()).unwrap();
        assert_eq!(tracked(&sources), 2);
        // A waiter gets the permit the first one gives back.
        let waiter = tokio::spawn({
            let sources = sources.clone();
            async move { sources.acquire(ip).await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(first);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .unwrap()
                .unwrap()
        );
        drop((second, other));
        assert_eq!(tracked(&sources), 0, "no entry outlives its handshakes");
        // A waiter that gives up leaves nothing behind once the holder is gone.
        let sources = Arc::new(Sources::new(1));
        let held = sources.try_acquire(ip).unwrap();
        let slots = Arc::new(Semaphore::new(1));
        let slot = slots.clone().acquire_owned().await.unwrap();
        let gave_up = admit(&sources, &slots, slot, ip, Instant::now()).await;
        assert!(gave_up.is_none());
        drop(held);
        assert_eq!(tracked(&sources), 0);
        // A failed try leaves nothing behind either.
        let sources = Arc::new(Sources::new(1));
        let held = sources.try_acquire(ip).unwrap();
        assert!(sources.try_acquire(ip).is_none());
        drop(held);
        assert_eq!(tracked(&sources), 0);
    }

    #[test]
    fn an_ipv6_source_is_its_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Sources::source(a), Sources::source(b));
        assert_ne!(Sources::source(a), Sources::source(c));
        assert_eq!(
            Sources::source("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }
}
