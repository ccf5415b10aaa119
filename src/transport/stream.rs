//! A TLS stream whose peer proved a SPIFFE identity.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustls::{ClientConfig, HandshakeKind, NamedGroup, ProtocolVersion, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsStream;

use crate::identity::{PeerIdentity, PeerRejection};
use crate::tls::SvidVerifier;
use crate::transport::cutoff::{CutOffSignal, CutState};
use crate::transport::error::ConnectionError;
use crate::transport::registry::{Registration, Registry};

/// A mutually authenticated TLS stream and the identity its peer proved.
///
/// Reads and writes application data like the underlying `tokio-rustls` stream.
///
/// The stream stays registered with its channel while it lives: when trust changes so that its
/// peer would be refused now (a bundle, the admission policy, a revocation list or a deny-list
/// changed, or the peer's certificate expired), it is cut off. Its
/// [`cut_off_signal`](Self::cut_off_signal) completes at once; after the channel's grace period
/// (see [`cut_off_grace`](crate::SecureChannelBuilder::cut_off_grace)) every read and write
/// fails with `ConnectionAborted`.
#[derive(Debug)]
pub struct SecureStream<IO> {
    inner: TlsStream<IO>,
    peer: PeerIdentity,
    idle: Option<IdleTimer>,
    /// The listener's connection slot and the open-connections gauge, released on drop.
    _slot: Option<ConnectionSlot>,
    /// The cut-off state shared with the registry (`None`: not registered).
    cut: Option<Arc<CutState>>,
    /// The registry entry, removed on drop.
    _registration: Option<Registration>,
}

/// Closes a connection on which no byte moved, in either direction, for a while.
///
/// Progress only sets a flag (no clock read per read or write); a timer ticking every half
/// timeout closes the connection after two ticks without progress, that is between 1x and 1.5x
/// the timeout after the last byte.
///
/// The tick is polled (which registers the task's waker with the timer) only when it may have
/// fired or the waker changed: a pending read or write on a busy connection then costs an
/// atomic load and a pointer comparison, not a timer registration.
#[derive(Debug)]
struct IdleTimer {
    half: Duration,
    tick: Pin<Box<tokio::time::Sleep>>,
    /// The waker the tick was last polled with (`None` before the first poll).
    registered: Option<Waker>,
    active: bool,
    idle_ticks: u8,
}

impl IdleTimer {
    fn new(timeout: Duration) -> Self {
        let half = (timeout / 2).max(Duration::from_millis(1));
        Self {
            half,
            tick: Box::pin(tokio::time::sleep(half)),
            registered: None,
            active: false,
            idle_ticks: 0,
        }
    }

    fn touch(&mut self) {
        self.active = true;
    }

    /// Whether the connection has been idle too long (registers the waker otherwise).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let registered = self
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if registered && !self.tick.is_elapsed() {
            // The timer holds this task's waker and has not fired: it will wake the task.
            return false;
        }
        self.registered = Some(cx.waker().clone());
        while self.tick.as_mut().poll(cx).is_ready() {
            if std::mem::take(&mut self.active) {
                self.idle_ticks = 0;
            } else {
                self.idle_ticks += 1;
                if self.idle_ticks >= 2 {
                    return true;
                }
            }
            self.tick
                .as_mut()
                .reset(crate::transport::instant_after(self.half));
        }
        // The loop ends with a pending poll of the current tick, which registered the waker.
        false
    }
}

/// A listener's hold on one of its connection slots.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _gauge: crate::telemetry::ConnectionGauge,
}

impl ConnectionSlot {
    pub(crate) fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        Self {
            _permit: permit,
            _gauge: crate::telemetry::connection_opened(),
        }
    }
}

/// Keeps the idle timer: progress resets it; waiting past it fails the operation.
fn account<T>(
    idle: &mut Option<IdleTimer>,
    cx: &mut Context<'_>,
    poll: Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    let Some(idle) = idle else { return poll };
    match poll {
        Poll::Ready(result) => {
            idle.touch();
            Poll::Ready(result)
        }
        Poll::Pending if idle.expired(cx) => Poll::Ready(Err(idle_error())),
        Poll::Pending => Poll::Pending,
    }
}

/// The error for an operation on a connection that was closed after being cut off.
fn closed(cut: Option<&CutState>) -> Option<io::Error> {
    cut.filter(|cut| cut.is_closed())
        .map(CutState::closed_error)
}

/// A pending operation is woken by the hard close of a cut-off connection, and then fails.
fn watch_cut_off<T>(
    cut: Option<&CutState>,
    cx: &mut Context<'_>,
    write: bool,
    poll: Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match (poll, cut) {
        (Poll::Pending, Some(cut)) if cut.register(cx, write) => {
            Poll::Ready(Err(cut.closed_error()))
        }
        (poll, _) => poll,
    }
}

fn idle_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "connection closed after being idle",
    )
}

impl<IO> SecureStream<IO> {
    fn new(inner: TlsStream<IO>, peer: PeerIdentity) -> Self {
        Self {
            inner,
            peer,
            idle: None,
            _slot: None,
            cut: None,
            _registration: None,
        }
    }

    fn registered(mut self, registration: Registration, cut: Arc<CutState>) -> Self {
        self._registration = Some(registration);
        self.cut = Some(cut);
        self
    }

    /// The connection's cut-off signal: completes when the peer is no longer trusted; see
    /// [`CutOffSignal`].
    pub fn cut_off_signal(&self) -> CutOffSignal {
        CutOffSignal::new(self.cut.clone().unwrap_or_default())
    }

    /// Closes the stream (reads and writes fail with `TimedOut`) once no byte has moved for
    /// `timeout` (at most 1.5 times `timeout`).
    pub(crate) fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle = Some(IdleTimer::new(timeout));
        self
    }

    pub(crate) fn with_slot(mut self, slot: ConnectionSlot) -> Self {
        self._slot = Some(slot);
        self
    }

    /// The identity the peer proved in the handshake.
    pub fn peer_identity(&self) -> &PeerIdentity {
        &self.peer
    }

    /// The negotiated ALPN protocol (`h2`, `http/1.1`), if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.inner.get_ref().1.alpn_protocol()
    }

    /// The negotiated TLS version.
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.get_ref().1.protocol_version()
    }

    /// The negotiated key exchange group: `X25519MLKEM768` (hybrid post-quantum) by default,
    /// or a classical group (`X25519`, `secp256r1`, `secp384r1`) with a peer without it.
    pub fn key_exchange_group(&self) -> Option<NamedGroup> {
        self.inner
            .get_ref()
            .1
            .negotiated_key_exchange_group()
            .map(|group| group.name())
    }

    /// Whether this connection was a full handshake or a resumed session.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.inner.get_ref().1.handshake_kind()
    }

    /// The underlying transport.
    pub fn get_ref(&self) -> &IO {
        self.inner.get_ref().0
    }

    /// The underlying tokio-rustls stream.
    pub fn tls_stream(&self) -> &TlsStream<IO> {
        &self.inner
    }

    /// Splits into the tokio-rustls stream and the peer identity.
    ///
    /// The tokio-rustls stream is no longer cut off when its peer stops being trusted: it
    /// leaves the channel's registry. Keep the [`cut_off_signal`](Self::cut_off_signal) taken
    /// before, and close the stream yourself when it completes.
    pub fn into_parts(self) -> (TlsStream<IO>, PeerIdentity) {
        (self.inner, self.peer)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for SecureStream<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(closed) = closed(this.cut.as_deref()) {
            return Poll::Ready(Err(closed));
        }
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        let poll = watch_cut_off(this.cut.as_deref(), cx, false, poll);
        account(&mut this.idle, cx, poll)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SecureStream<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(closed) = closed(this.cut.as_deref()) {
            return Poll::Ready(Err(closed));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        let poll = watch_cut_off(this.cut.as_deref(), cx, true, poll);
        account(&mut this.idle, cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(closed) = closed(this.cut.as_deref()) {
            return Poll::Ready(Err(closed));
        }
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        watch_cut_off(this.cut.as_deref(), cx, true, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(closed) = closed(this.cut.as_deref()) {
            return Poll::Ready(Err(closed));
        }
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        watch_cut_off(this.cut.as_deref(), cx, true, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(closed) = closed(this.cut.as_deref()) {
            return Poll::Ready(Err(closed));
        }
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        let poll = watch_cut_off(this.cut.as_deref(), cx, true, poll);
        account(&mut this.idle, cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The error of a failed handshake: the verifier's rejection when it made one.
fn handshake_error(error: io::Error, captured: Option<PeerRejection>) -> ConnectionError {
    match captured.or_else(|| PeerRejection::from_io(&error)) {
        Some(rejection) => ConnectionError::PeerRejected(rejection),
        None => ConnectionError::Handshake(error),
    }
}

/// Client side: a certificate alert from the server is a refusal of our SVID.
fn client_handshake_error(
    error: io::Error,
    captured: Option<PeerRejection>,
    own_id: &spiffe::SpiffeId,
) -> ConnectionError {
    let alert = match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => Some(*alert),
        _ => None,
    };
    match alert {
        Some(alert) if captured.is_none() && crate::tls::refuses_certificate(alert) => {
            ConnectionError::RefusedByServer {
                own_id: own_id.clone(),
                alert,
            }
        }
        _ => handshake_error(error, captured),
    }
}

/// Bounds on the client's wait for the server's verdict after a TLS 1.3 handshake: twice the
/// handshake's own duration (at least one round trip), within these.
const VERDICT_WAIT_MIN: Duration = Duration::from_millis(100);
const VERDICT_WAIT_MAX: Duration = Duration::from_secs(1);

/// TLS 1.3 client side: the server judges our certificate after our last handshake message, so
/// its verdict comes after the handshake has finished here: a refusal as an alert, an
/// acceptance as its first record (a session ticket, or data). Reads until that first record
/// is complete, at most `wait`, and hands it to rustls (whatever it holds stays buffered there
/// for the stream's reader); returns the error rustls raised on it, if any.
async fn await_server_verdict<IO>(
    stream: &mut tokio_rustls::client::TlsStream<IO>,
    wait: Duration,
) -> Result<(), rustls::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (io, conn) = stream.get_mut();
    let mut buf = vec![0u8; 4096];
    // The first record's header (5 bytes: type, version, length) and the bytes read so far.
    let mut header = [0u8; 5];
    let mut read = 0usize;
    let verdict = std::future::poll_fn(|cx| {
        loop {
            let mut chunk = ReadBuf::new(&mut buf);
            match Pin::new(&mut *io).poll_read(cx, &mut chunk) {
                Poll::Pending => return Poll::Pending,
                // EOF or an I/O error: the stream's reader will meet it.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) if chunk.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {}
            }
            let mut data = chunk.filled();
            for (i, byte) in data.iter().enumerate().take(5usize.saturating_sub(read)) {
                header[read + i] = *byte;
            }
            read += data.len();
            while !data.is_empty() {
                match conn.read_tls(&mut data) {
                    Ok(0) | Err(_) => return Poll::Ready(Ok(())),
                    Ok(_) => {}
                }
                let state = conn.process_new_packets()?;
                if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() {
                    return Poll::Ready(Ok(()));
                }
            }
            let first_record = 5 + usize::from(u16::from_be_bytes([header[3], header[4]]));
            if read >= first_record {
                return Poll::Ready(Ok(()));
            }
        }
    });
    tokio::time::timeout(wait, verdict).await.unwrap_or(Ok(()))
}

/// What the transport checks a finished handshake's peer with, and registers its connection in.
#[derive(Clone, Copy)]
pub(crate) struct PeerCheck<'a> {
    pub(crate) verifier: &'a Arc<SvidVerifier>,
    pub(crate) registry: &'a Arc<Registry>,
}

/// The finished handshake's peer, verified (a resumed session re-validated at `now`) and its
/// connection registered; a refused peer's connection is closed.
async fn identified<IO: AsyncRead + AsyncWrite + Unpin>(
    mut stream: TlsStream<IO>,
    check: PeerCheck<'_>,
    side: &'static str,
    now: rustls_pki_types::UnixTime,
) -> Result<SecureStream<IO>, ConnectionError> {
    let sweeps = check.registry.sweeps();
    let (_, conn) = stream.get_ref();
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let chain = conn.peer_certificates().unwrap_or_default();
    match check.verifier.identify(chain, resumed, now) {
        Ok(admitted) => {
            let peer = admitted.identity.clone();
            let (registration, cut) =
                check
                    .registry
                    .register(side, admitted, check.verifier.clone(), sweeps);
            Ok(SecureStream::new(stream, peer).registered(registration, cut))
        }
        Err(rejection) => {
            let error = ConnectionError::from(rejection);
            use tokio::io::AsyncWriteExt;
            // The caller gets the error (the listener logs it briefly, rate-limited): its text
            // may carry the whole allow-list, so only at debug level here.
            tracing::debug!(%error, "resumed session refused");
            // Best effort: tell the peer we are closing, bounded so a stuck peer cannot hold us.
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
            Err(error)
        }
    }
}

/// How long a server-side handshake may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandshakeDeadlines {
    /// The whole handshake.
    pub(crate) total: Duration,
    /// Receiving the client's ClientHello, from the start (at most `total`).
    pub(crate) client_hello: Option<Duration>,
}

/// Records a handshake's outcome in the metrics.
fn record<IO>(side: &'static str, result: &Result<SecureStream<IO>, ConnectionError>) {
    match result {
        Ok(stream) => {
            crate::telemetry::handshake(side, "accepted", "ok", stream.key_exchange_group());
        }
        Err(error @ ConnectionError::PeerRejected(_)) => {
            crate::telemetry::handshake(side, "refused", error.metric_reason(), None);
        }
        Err(error) => crate::telemetry::handshake(side, "failed", error.metric_reason(), None),
    }
}

/// Server side: runs the handshake on `io` and returns the verified stream.
///
/// `now` is read once the handshake is done, so a resumed session is re-validated at the time
/// it is accepted, not at the time the handshake started.
pub(crate) async fn accept<IO>(
    config: Arc<ServerConfig>,
    check: PeerCheck<'_>,
    now: impl FnOnce() -> rustls_pki_types::UnixTime,
    io: IO,
    deadlines: HandshakeDeadlines,
) -> Result<SecureStream<IO>, ConnectionError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let result = async move {
        let start = tokio::time::Instant::now();
        let deadline = start + deadlines.total;
        let hello_deadline = deadlines
            .client_hello
            .map_or(deadline, |hello| (start + hello).min(deadline));
        // The ClientHello first, under its own (shorter) deadline: a silent client holds a
        // handshake slot only that long.
        let hello = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
        let hello = tokio::time::timeout_at(hello_deadline, hello)
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout)?
            .map_err(|error| handshake_error(error, None))?;
        let (stream, captured) =
            crate::tls::capture(tokio::time::timeout_at(deadline, hello.into_stream(config))).await;
        let stream = stream
            .map_err(|_| ConnectionError::HandshakeTimeout)?
            .map_err(|error| handshake_error(error, captured))?;
        identified(TlsStream::Server(stream), check, "server", now()).await
    }
    .await;
    record("server", &result);
    result
}

/// Client side: runs the handshake on `io` and returns the verified stream.
///
/// `now` is read once the handshake is done (see [`accept`]).
pub(crate) async fn connect<IO>(
    config: Arc<ClientConfig>,
    check: PeerCheck<'_>,
    now: impl FnOnce() -> rustls_pki_types::UnixTime,
    server_name: ServerName<'static>,
    io: IO,
    timeout: Duration,
    own_id: &spiffe::SpiffeId,
) -> Result<SecureStream<IO>, ConnectionError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let result = async move {
        let connector = tokio_rustls::TlsConnector::from(config);
        let started = tokio::time::Instant::now();
        let (stream, captured) = crate::tls::capture(tokio::time::timeout(
            timeout,
            connector.connect(server_name, io),
        ))
        .await;
        let mut stream = stream
            .map_err(|_| ConnectionError::HandshakeTimeout)?
            .map_err(|error| client_handshake_error(error, captured, own_id))?;
        let (_, conn) = stream.get_ref();
        // A resumed session carries no certificate for the server to judge in the handshake.
        if conn.protocol_version() == Some(ProtocolVersion::TLSv1_3)
            && conn.handshake_kind() != Some(HandshakeKind::Resumed)
        {
            let wait = (started.elapsed() * 2).clamp(VERDICT_WAIT_MIN, VERDICT_WAIT_MAX);
            if let Err(error) = await_server_verdict(&mut stream, wait).await {
                return Err(match error {
                    rustls::Error::AlertReceived(alert)
                        if crate::tls::refuses_certificate(alert) =>
                    {
                        ConnectionError::RefusedByServer {
                            own_id: own_id.clone(),
                            alert,
                        }
                    }
                    other => ConnectionError::Handshake(io::Error::new(
                        io::ErrorKind::InvalidData,
                        other,
                    )),
                });
            }
        }
        identified(TlsStream::Client(stream), check, "client", now()).await
    }
    .await;
    record("client", &result);
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

    use super::*;

    /// A waker that says which task it stands for.
    struct Named(UnboundedSender<&'static str>, &'static str);

    impl std::task::Wake for Named {
        fn wake(self: Arc<Self>) {
            let _ = self.0.send(self.1);
        }
    }

    #[tokio::test]
    async fn the_idle_timer_wakes_the_task_that_polled_it_last_and_expires() {
        let (tx, mut woken) = unbounded_channel();
        let a = Waker::from(Arc::new(Named(tx.clone(), "a")));
        let b = Waker::from(Arc::new(Named(tx, "b")));
        let mut timer = IdleTimer::new(Duration::from_millis(40));
        assert!(!timer.expired(&mut Context::from_waker(&a)));
        assert!(!timer.expired(&mut Context::from_waker(&a)));
        // The stream moved to another task: that task is the one the timer must wake.
        assert!(!timer.expired(&mut Context::from_waker(&b)));
        let first = tokio::time::timeout(Duration::from_secs(5), woken.recv()).await;
        assert_eq!(first.unwrap(), Some("b"));
        // No progress since: the second tick closes the connection.
        let mut polls = 0;
        while !timer.expired(&mut Context::from_waker(&b)) {
            polls += 1;
            assert!(polls < 10, "the idle timer never expired");
            let next = tokio::time::timeout(Duration::from_secs(5), woken.recv()).await;
            assert_eq!(next.unwrap(), Some("b"));
        }
    }

    #[tokio::test]
    async fn progress_keeps_the_idle_timer_from_expiring() {
        let (tx, mut woken) = unbounded_channel();
        let waker = Waker::from(Arc::new(Named(tx, "task")));
        let mut timer = IdleTimer::new(Duration::from_millis(40));
        for _ in 0..4 {
            timer.touch();
            assert!(!timer.expired(&mut Context::from_waker(&waker)));
            let tick = tokio::time::timeout(Duration::from_secs(5), woken.recv()).await;
            assert_eq!(tick.unwrap(), Some("task"));
        }
    }
}
