//! Plain hyper: serve a tower service over a [`SecureListener`] with hyper-util's automatic
//! HTTP/1.1 + HTTP/2 builder, the caller's [`PeerIdentity`] in every request's extensions.
//!
//! Works for any tower service; for an axum `Router`, [`integration::axum::serve`](crate::integration::axum::serve) assembles
//! this crate's layers in front of it and serves it here. With the `axum` feature every request
//! also carries axum's `ConnectInfo<SocketAddr>` (the client's address).
//!
//! Each connection runs in a `tracing` span
//! `connection` with the peer's SPIFFE ID and address; each request in a child span `request`
//! with its method and path. Request headers are bounded in size ([`Serve::max_header_size`])
//! and in time ([`Serve::header_read_timeout`]).
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use secure_channel::integration::hyper::serve;
//! use secure_channel::{PeerIdentity, SecureChannel};
//!
//! # async fn run(channel: SecureChannel) -> std::io::Result<()> {
//! let service = tower::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
//!     let caller = request.extensions().get::<PeerIdentity>().map(|p| p.spiffe_id().to_string());
//!     Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(bytes::Bytes::from(
//!         caller.unwrap_or_default(),
//!     ))))
//! });
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! serve(channel.listener(tcp)?, service)
//!     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use tracing::Instrument;

use crate::identity::PeerIdentity;
use crate::transport::SecureListener;

/// Serves `service` on every connection of `listener`; see the [module docs](self).
pub fn serve<S, B>(listener: SecureListener, service: S) -> Serve<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Serve {
        listener,
        service,
        max_header_size: DEFAULT_MAX_HEADER_SIZE,
        header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
    }
}

/// Default bound on a request's header section (HTTP/1.1 read buffer, HTTP/2 header list).
pub const DEFAULT_MAX_HEADER_SIZE: usize = 32 * 1024;

/// Default bound on the time an HTTP/1.1 client takes to send a request's header section.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A server being set up by [`serve`]; await it to run until the process ends, or add
/// [`with_graceful_shutdown`](Self::with_graceful_shutdown).
#[derive(Debug)]
#[must_use = "a server does nothing until awaited"]
pub struct Serve<S> {
    listener: SecureListener,
    service: S,
    max_header_size: usize,
    header_read_timeout: Option<Duration>,
}

impl<S, B> Serve<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Bounds a request's header section (default 32 KiB, at least 8 KiB): larger HTTP/1.1
    /// headers get 431, larger HTTP/2 header lists are refused by the protocol.
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes.max(8 * 1024);
        self
    }

    /// Closes an HTTP/1.1 connection whose client has not sent a whole request header section
    /// within `timeout` (default 30 s; `None` never does). The time runs from when the server
    /// starts waiting for a request, so it also bounds how long a kept-alive connection waits
    /// idle for its next request; a client that sends half a header and stalls is cut off.
    pub fn header_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// Runs until `signal` completes, then stops accepting and waits for the requests in flight
    /// on every connection to finish (idle keep-alive connections are closed).
    pub async fn with_graceful_shutdown<F>(self, signal: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Serve {
            mut listener,
            service,
            max_header_size,
            header_read_timeout,
        } = self;
        let graceful = GracefulShutdown::new();
        let mut builder = Builder::new(TokioExecutor::new());
        // Without a timer hyper silently ignores its header read timeout.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(max_header_size);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX));
        tokio::pin!(signal);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer_addr) = accepted?;
                    let peer = stream.peer_identity().clone();
                    // One span per connection; each request's span is its child.
                    let span = tracing::info_span!(
                        target: "secure_channel::transport",
                        "connection",
                        peer = %peer.spiffe_id(),
                        %peer_addr,
                    );
                    let service = TowerToHyperService::new(AddPeerIdentity {
                        inner: service.clone(),
                        peer,
                        remote_addr: peer_addr,
                        span: span.clone(),
                    });
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(
                        async move {
                            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            if let Err(error) = watcher.watch(connection).await {
                                tracing::debug!(target: "secure_channel::transport", %error, "connection ended with an error");
                            }
                        }
                        .instrument(span),
                    );
                }
                () = &mut signal => break,
            }
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

impl<S, B> IntoFuture for Serve<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.with_graceful_shutdown(std::future::pending()))
    }
}

/// Inserts the connection's peer identity into each request (and, with the `axum` feature,
/// axum's `ConnectInfo<SocketAddr>` with the client's address).
#[derive(Clone)]
struct AddPeerIdentity<S> {
    inner: S,
    peer: PeerIdentity,
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    remote_addr: std::net::SocketAddr,
    /// The connection's span: the parent of every request span.
    span: tracing::Span,
}

impl<S, ReqBody> tower_service::Service<Request<ReqBody>> for AddPeerIdentity<S>
where
    S: tower_service::Service<Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let span = tracing::info_span!(
            target: "secure_channel::transport",
            parent: &self.span,
            "request",
            method = %request.method(),
            path = %request.uri().path(),
        );
        request.extensions_mut().insert(self.peer.clone());
        #[cfg(feature = "axum")]
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.remote_addr));
        let _entered = span.enter();
        self.inner.call(request).instrument(span.clone())
    }
}
