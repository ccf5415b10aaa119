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
//! and in time ([`Serve::header_read_timeout`]). [`Serve::connection_extension`] gives each
//! connection state of its own that all its requests see (a proxy's connection to its upstream).
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
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

use tracing::Instrument;

use crate::identity::PeerIdentity;
use crate::transport::{CutOffSignal, SecureListener};

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
        connection_extension: None,
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
    connection_extension: Option<MakeExtension>,
}

/// Puts one connection's value (a clone of it) into a request's extensions.
type InsertExtension = Arc<dyn Fn(&mut http::Extensions) + Send + Sync>;

/// Makes a connection's [`InsertExtension`] when the connection is accepted.
#[derive(Clone)]
struct MakeExtension(Arc<dyn Fn() -> InsertExtension + Send + Sync>);

impl std::fmt::Debug for MakeExtension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MakeExtension")
    }
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

    /// Gives every connection a value of its own, made by `make` when the connection is
    /// accepted: each of the connection's requests carries a clone of it in its extensions (so
    /// share state through an `Arc`), and it is dropped once the connection and its requests
    /// are. For state that lives as long as one client connection and that its requests share,
    /// such as a proxy's connection to its upstream. A request carries it however many layers
    /// it passes; it says nothing about who the caller is (that is the [`PeerIdentity`]).
    pub fn connection_extension<T, F>(mut self, make: F) -> Self
    where
        F: Fn() -> T + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
    {
        self.connection_extension = Some(MakeExtension(Arc::new(move || {
            let value = make();
            Arc::new(move |extensions: &mut http::Extensions| {
                extensions.insert(value.clone());
            })
        })));
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
            connection_extension,
        } = self;
        // Each connection holds a receiver: a send asks them to wind down, and the sender's
        // `closed` completes once they all have.
        let (shutdown, _) = watch::channel(());
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
                    let cut_off = stream.cut_off_signal();
                    let service = TowerToHyperService::new(AddPeerIdentity {
                        inner: service.clone(),
                        peer,
                        cut_off: cut_off.clone(),
                        remote_addr: peer_addr,
                        span: span.clone(),
                        extension: connection_extension.as_ref().map(|make| (make.0)()),
                    });
                    let builder = builder.clone();
                    let stop = shutdown.subscribe();
                    tokio::spawn(
                        async move {
                            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            if let Err(error) = serve_connection(connection, stop, cut_off).await {
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
        let _ = shutdown.send(());
        shutdown.closed().await;
        Ok(())
    }
}

/// Drives one connection; winds it down (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close` on the
/// response in flight, an idle connection closed) when the server shuts down or the connection
/// is cut off. A cut-off connection still busy when the grace period ends is closed by its
/// stream.
async fn serve_connection<C, E>(
    connection: C,
    mut stop: watch::Receiver<()>,
    cut_off: CutOffSignal,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>> + WindDown,
{
    tokio::pin!(connection);
    // Made once, not on every wake of the connection's task: each would register (and drop) a
    // waiter on every poll of a busy connection.
    let stopped = stop.changed();
    let cut = cut_off.cut_off();
    tokio::pin!(stopped, cut);
    let mut winding_down = false;
    loop {
        // Biased: a cut-off is applied before the connection makes progress, so a response
        // completed after it says `Connection: close`.
        tokio::select! {
            biased;
            _ = &mut stopped, if !winding_down => {
                winding_down = true;
                connection.as_mut().wind_down();
            }
            cut = &mut cut, if !winding_down => {
                winding_down = true;
                tracing::debug!(target: "secure_channel::transport", %cut, "winding the connection down");
                connection.as_mut().wind_down();
            }
            result = connection.as_mut() => return result,
        }
    }
}

/// A connection that can stop taking requests and close once those in flight are answered.
trait WindDown {
    fn wind_down(self: Pin<&mut Self>);
}

impl<I, S, E, B> WindDown for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn wind_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
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

/// Inserts the connection's peer identity and cut-off signal into each request (and, with the
/// `axum` feature, axum's `ConnectInfo<SocketAddr>` with the client's address).
#[derive(Clone)]
struct AddPeerIdentity<S> {
    inner: S,
    peer: PeerIdentity,
    cut_off: CutOffSignal,
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    remote_addr: std::net::SocketAddr,
    /// The connection's span: the parent of every request span.
    span: tracing::Span,
    /// The connection's own value ([`Serve::connection_extension`]).
    extension: Option<InsertExtension>,
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
        // The connection's own value first: were it a `PeerIdentity` or any of the values
        // below, the server's own replace it, so it can never stand in for the verified peer.
        if let Some(insert) = &self.extension {
            insert(request.extensions_mut());
        }
        request.extensions_mut().insert(self.peer.clone());
        request.extensions_mut().insert(self.cut_off.clone());
        #[cfg(feature = "axum")]
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.remote_addr));
        let _entered = span.enter();
        self.inner.call(request).instrument(span.clone())
    }
}

/// Keeps hyper-util's client from reusing a pooled connection once its server is cut off (no
/// longer trusted): wraps a `hyper_util::client::legacy::Client` built on a
/// [`SecureConnector`](crate::SecureConnector).
///
/// Without it, a cut-off connection stays in the pool until the channel's grace period closes
/// it, and new requests may be sent on it meanwhile. With it, each connection's pool entry is
/// poisoned (`Connected::poison`) at the cut-off: requests in flight finish, no new one is sent.
/// It costs each request one small allocation (hyper-util's `capture_connection`).
///
/// ```no_run
/// # async fn run(channel: secure_channel::SecureChannel) -> Result<(), Box<dyn std::error::Error>> {
/// use http_body_util::Empty;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use secure_channel::integration::hyper::EvictCutOffLayer;
/// use tower::{Layer, ServiceExt};
///
/// let client = Client::builder(TokioExecutor::new())
///     .build::<_, Empty<bytes::Bytes>>(channel.connector());
/// let client = EvictCutOffLayer::new().layer(client);
/// let request = http::Request::get("https://127.0.0.1:8443/").body(Empty::new())?;
/// let response = client.oneshot(request).await?;
/// # drop(response);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct EvictCutOffLayer {
    _private: (),
}

impl EvictCutOffLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> tower_layer::Layer<S> for EvictCutOffLayer {
    type Service = EvictCutOff<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EvictCutOff { inner }
    }
}

/// The service of [`EvictCutOffLayer`].
#[derive(Debug, Clone)]
pub struct EvictCutOff<S> {
    inner: S,
}

impl<S> EvictCutOff<S> {
    /// The wrapped client.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the client.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, R> tower_service::Service<Request<B>> for EvictCutOff<S>
where
    S: tower_service::Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = EvictCutOffFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let capture = hyper_util::client::legacy::connect::capture_connection(&mut request);
        EvictCutOffFuture {
            inner: self.inner.call(request),
            capture: Some(capture),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`EvictCutOff`].
    pub struct EvictCutOffFuture<F> {
        #[pin]
        inner: F,
        capture: Option<hyper_util::client::legacy::connect::CaptureConnection>,
    }
}

impl<F> std::fmt::Debug for EvictCutOffFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvictCutOffFuture").finish_non_exhaustive()
    }
}

impl<F, R, E> Future for EvictCutOffFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(capture)) = (&output, this.capture.take())
            && let Some(signal) = response.extensions().get::<CutOffSignal>()
        {
            // The capture shares the pooled connection's poison pill: poisoning it at the
            // cut-off keeps the pool from handing the connection out again.
            signal.on_cut_off(move || {
                if let Some(connected) = capture.connection_metadata().as_ref() {
                    connected.poison();
                }
            });
        }
        std::task::Poll::Ready(output)
    }
}
