//! A TLS stream whose peer proved a SPIFFE identity.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::{ClientConfig, HandshakeKind, ProtocolVersion, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsStream;

use crate::Error;
use crate::identity::PeerIdentity;
use crate::tls::{PeerRejection, SvidVerifier};

/// A mutually authenticated TLS stream and the identity its peer proved.
///
/// Reads and writes application data like the underlying `tokio-rustls` stream.
#[derive(Debug)]
pub struct SecureStream<IO> {
    inner: TlsStream<IO>,
    peer: PeerIdentity,
}

impl<IO> SecureStream<IO> {
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for SecureStream<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn handshake_error(error: io::Error) -> Error {
    match PeerRejection::from_io(&error) {
        Some(rejection) => Error::PeerRejected(rejection),
        None => Error::Handshake(error),
    }
}

/// Establishes the peer identity of a finished handshake (and re-validates a resumed one).
fn identify(
    kind: Option<HandshakeKind>,
    chain: Option<&[rustls_pki_types::CertificateDer<'static>]>,
    verifier: &SvidVerifier,
    now: rustls_pki_types::UnixTime,
) -> Result<PeerIdentity, Error> {
    let resumed = kind == Some(HandshakeKind::Resumed);
    Ok(verifier.identify(chain.unwrap_or_default(), resumed, now)?)
}

async fn refuse<IO: AsyncRead + AsyncWrite + Unpin>(mut stream: TlsStream<IO>, error: &Error) {
    use tokio::io::AsyncWriteExt;
    tracing::info!(%error, "resumed session refused");
    // Best effort: tell the peer we are closing, bounded so a stuck peer cannot hold us.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// Server side: runs the handshake on `io` and returns the verified stream.
pub(crate) async fn accept<IO>(
    config: Arc<ServerConfig>,
    verifier: &SvidVerifier,
    now: rustls_pki_types::UnixTime,
    io: IO,
    timeout: Duration,
) -> Result<SecureStream<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let stream = tokio::time::timeout(timeout, acceptor.accept(io))
        .await
        .map_err(|_| Error::HandshakeTimeout)?
        .map_err(handshake_error)?;
    let (_, conn) = stream.get_ref();
    match identify(
        conn.handshake_kind(),
        conn.peer_certificates(),
        verifier,
        now,
    ) {
        Ok(peer) => Ok(SecureStream {
            inner: TlsStream::Server(stream),
            peer,
        }),
        Err(error) => {
            refuse(TlsStream::Server(stream), &error).await;
            Err(error)
        }
    }
}

/// Client side: runs the handshake on `io` and returns the verified stream.
pub(crate) async fn connect<IO>(
    config: Arc<ClientConfig>,
    verifier: &SvidVerifier,
    now: rustls_pki_types::UnixTime,
    server_name: ServerName<'static>,
    io: IO,
    timeout: Duration,
) -> Result<SecureStream<IO>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = tokio::time::timeout(timeout, connector.connect(server_name, io))
        .await
        .map_err(|_| Error::HandshakeTimeout)?
        .map_err(handshake_error)?;
    let (_, conn) = stream.get_ref();
    match identify(
        conn.handshake_kind(),
        conn.peer_certificates(),
        verifier,
        now,
    ) {
        Ok(peer) => Ok(SecureStream {
            inner: TlsStream::Client(stream),
            peer,
        }),
        Err(error) => {
            refuse(TlsStream::Client(stream), &error).await;
            Err(error)
        }
    }
}
