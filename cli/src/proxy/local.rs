//! Plaintext on this machine only: an inbound proxy's backend and an outbound proxy's listener
//! are a loopback TCP address or a unix socket; the streams over either; a hyper-util
//! connector that always dials the backend.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// How long connecting to the backend may take before the request gets 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where plaintext is spoken: never off this machine.
#[derive(Debug, Clone)]
pub(crate) enum LocalAddr {
    /// A loopback address.
    Tcp(SocketAddr),
    /// A unix socket.
    Unix(PathBuf),
}

impl LocalAddr {
    /// `ADDR` (a loopback `IP:PORT`, or `localhost:PORT`) or `unix:PATH`. Anything that would
    /// send plaintext over a network is refused.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a PATH".into());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let addr = match text.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => match text.strip_prefix("localhost:") {
                Some(port) => {
                    let port = port
                        .parse::<u16>()
                        .map_err(|e| format!("port {port:?}: {e}"))?;
                    // `localhost` resolves to loopback by definition (RFC 6761); no lookup.
                    SocketAddr::from(([127, 0, 0, 1], port))
                }
                None => {
                    return Err(
                        "expected a loopback IP:PORT (such as 127.0.0.1:8080), localhost:PORT or unix:PATH"
                            .into(),
                    );
                }
            },
        };
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address: plaintext stays on this machine (a loopback address or unix:PATH)"
            ));
        }
        Ok(Self::Tcp(addr))
    }

    /// The authority requests to the backend carry in their URI (the pool's key).
    pub(crate) fn authority(&self) -> String {
        match self {
            Self::Tcp(addr) => addr.to_string(),
            Self::Unix(_) => "localhost".into(),
        }
    }

    /// Connects, bounded by [`CONNECT_TIMEOUT`].
    pub(crate) async fn connect(&self) -> io::Result<LocalStream> {
        let connect = async {
            match self {
                Self::Tcp(addr) => {
                    let stream = TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    Ok(LocalStream::Tcp(stream))
                }
                Self::Unix(path) => Ok(LocalStream::Unix(UnixStream::connect(path).await?)),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting to the backend"))?
    }
}

/// A listener for plaintext on this machine (the outbound proxy's).
#[derive(Debug)]
pub(crate) enum LocalListener {
    /// On a loopback address.
    Tcp(tokio::net::TcpListener),
    /// On a unix socket.
    Unix(tokio::net::UnixListener),
}

impl LocalListener {
    /// Binds `addr`. A unix socket left by an earlier run is replaced; any other file there is
    /// not.
    pub(crate) async fn bind(addr: &LocalAddr) -> io::Result<Self> {
        match addr {
            LocalAddr::Tcp(addr) => Ok(Self::Tcp(tokio::net::TcpListener::bind(addr).await?)),
            LocalAddr::Unix(path) => {
                use std::os::unix::fs::FileTypeExt;
                if let Ok(meta) = std::fs::symlink_metadata(path)
                    && meta.file_type().is_socket()
                {
                    std::fs::remove_file(path)?;
                }
                Ok(Self::Unix(tokio::net::UnixListener::bind(path)?))
            }
        }
    }

    /// Where it listens (the port chosen for `:0`).
    pub(crate) fn local_addr(&self) -> io::Result<LocalAddr> {
        match self {
            Self::Tcp(listener) => listener.local_addr().map(LocalAddr::Tcp),
            Self::Unix(listener) => {
                let addr = listener.local_addr()?;
                let path = addr.as_pathname().map(PathBuf::from).unwrap_or_default();
                Ok(LocalAddr::Unix(path))
            }
        }
    }

    /// The next connection, with the client's address when it has one.
    pub(crate) async fn accept(&self) -> io::Result<(LocalStream, Option<SocketAddr>)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok((LocalStream::Tcp(stream), Some(peer)))
            }
            Self::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok((LocalStream::Unix(stream), None))
            }
        }
    }
}

impl std::fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A plaintext connection on this machine.
#[derive(Debug)]
pub(crate) enum LocalStream {
    /// Over loopback TCP.
    Tcp(TcpStream),
    /// Over a unix socket.
    Unix(UnixStream),
}

impl AsyncRead for LocalStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LocalStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Connection for LocalStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// hyper-util's connector for the backend: whatever the URI, it dials the backend.
#[derive(Debug, Clone)]
pub(crate) struct BackendConnector {
    backend: std::sync::Arc<LocalAddr>,
}

impl BackendConnector {
    pub(crate) fn new(backend: LocalAddr) -> Self {
        Self {
            backend: std::sync::Arc::new(backend),
        }
    }
}

impl tower::Service<http::Uri> for BackendConnector {
    type Response = TokioIo<LocalStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let backend = self.backend.clone();
        Box::pin(async move { backend.connect().await.map(TokioIo::new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_backends() {
        assert!(matches!(
            LocalAddr::parse("127.0.0.1:8080"),
            Ok(LocalAddr::Tcp(_))
        ));
        assert!(matches!(
            LocalAddr::parse("[::1]:8080"),
            Ok(LocalAddr::Tcp(_))
        ));
        assert!(matches!(
            LocalAddr::parse("localhost:8080"),
            Ok(LocalAddr::Tcp(_))
        ));
        assert!(matches!(
            LocalAddr::parse("unix:/run/app.sock"),
            Ok(LocalAddr::Unix(_))
        ));
        for refused in [
            "10.0.0.7:8080",
            "0.0.0.0:8080",
            "example.org:80",
            "unix:",
            "localhost:x",
            "8080",
        ] {
            assert!(LocalAddr::parse(refused).is_err(), "{refused}");
        }
    }
}
