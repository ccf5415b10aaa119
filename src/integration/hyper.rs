//! Plain hyper: serve a tower service over a [`SecureListener`] with hyper-util's automatic
//! HTTP/1.1 + HTTP/2 builder, the caller's [`PeerIdentity`] in every request's extensions.
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

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

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
    Serve { listener, service }
}

/// A server being set up by [`serve`]; await it to run until the process ends, or add
/// [`with_graceful_shutdown`](Self::with_graceful_shutdown).
#[derive(Debug)]
#[must_use = "a server does nothing until awaited"]
pub struct Serve<S> {
    listener: SecureListener,
    service: S,
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
    /// Runs until `signal` completes, then stops accepting and waits for the requests in flight
    /// on every connection to finish (idle keep-alive connections are closed).
    pub async fn with_graceful_shutdown<F>(self, signal: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Serve {
            mut listener,
            service,
        } = self;
        let graceful = GracefulShutdown::new();
        let builder = Builder::new(TokioExecutor::new());
        tokio::pin!(signal);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = accepted?;
                    let peer = stream.peer_identity().clone();
                    let service = TowerToHyperService::new(AddPeerIdentity { inner: service.clone(), peer });
                    let builder = builder.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        if let Err(error) = watcher.watch(connection).await {
                            tracing::debug!(target: "secure_channel::transport", %error, "connection ended with an error");
                        }
                    });
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

/// Inserts the connection's peer identity into each request.
#[derive(Clone)]
struct AddPeerIdentity<S> {
    inner: S,
    peer: PeerIdentity,
}

impl<S, ReqBody> tower_service::Service<Request<ReqBody>> for AddPeerIdentity<S>
where
    S: tower_service::Service<Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        self.inner.call(request)
    }
}
