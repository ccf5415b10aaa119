//! The bundle endpoint server: a tower service serving our trust domain's current bundle, and
//! an HTTPS accept loop for it.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::ConfigError;
use crate::federation::bundle::SpiffeBundle;
use crate::federation::error::BundleError;
use crate::jwt::JwtBundles;
use crate::source::CredentialSource;

/// The default refresh hint served (5 minutes).
pub const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many connections are served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 256;
/// The default bound on a connection's wait for a request (see
/// [`BundleEndpointServer::idle_timeout`]).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection is served at most: a bundle is one small document, and a client that
/// keeps an HTTP/2 connection open (answering pings, sending nothing) must not hold one of the
/// connection slots for ever.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// Serves the SPIFFE bundle of our own trust domain (a tower `Service` for axum, hyper or
/// [`BundleEndpointServer`]): the X.509 authorities of the credential source's own trust
/// domain, the JWT authorities of the [`JwtBundles`] given for it, a `spiffe_sequence` and a
/// `spiffe_refresh_hint`.
///
/// Every request reads the current credentials, so a rotated bundle is served at once. The
/// sequence number grows with every change of the authorities served: it is the Unix time in
/// seconds of the change, or one more than the last when changes come faster, so it keeps
/// growing across restarts of the server (clients refuse a sequence that goes backwards).
///
/// `GET` and `HEAD` are answered with `200` and `application/json`; other methods with `405`.
/// The service answers on whatever path it is mounted at.
#[derive(Clone)]
pub struct BundleEndpointService {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    source: CredentialSource,
    jwt: Option<JwtBundles>,
    refresh_hint: Duration,
    rendered: Mutex<Option<Rendered>>,
}

/// The document last served and what it was made from.
struct Rendered {
    /// The credential and JWT bundle revisions it reflects.
    revisions: (u64, u64),
    bundle: SpiffeBundle,
    body: Bytes,
}

impl std::fmt::Debug for BundleEndpointService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleEndpointService")
            .field("source", &self.inner.source)
            .field("refresh_hint", &self.inner.refresh_hint)
            .finish_non_exhaustive()
    }
}

impl BundleEndpointService {
    /// Serves the bundle of `source`'s own trust domain (the trust domain of its SVID).
    pub fn new(source: &CredentialSource) -> Self {
        Self::build(source.clone(), None, DEFAULT_REFRESH_HINT)
    }

    /// Also serves the JWT authorities `bundles` holds for our trust domain (such as
    /// [`JwtSvidSource::bundles`](crate::jwt::JwtSvidSource::bundles)).
    #[must_use]
    pub fn jwt_authorities(self, bundles: &JwtBundles) -> Self {
        Self::build(
            self.inner.source.clone(),
            Some(bundles.clone()),
            self.inner.refresh_hint,
        )
    }

    /// The refresh hint served (default 5 minutes; whole seconds).
    #[must_use]
    pub fn refresh_hint(self, hint: Duration) -> Self {
        Self::build(self.inner.source.clone(), self.inner.jwt.clone(), hint)
    }

    fn build(source: CredentialSource, jwt: Option<JwtBundles>, refresh_hint: Duration) -> Self {
        Self {
            inner: Arc::new(ServiceInner {
                source,
                jwt,
                refresh_hint,
                rendered: Mutex::new(None),
            }),
        }
    }

    /// The bundle served now.
    pub fn current(&self) -> Result<SpiffeBundle, BundleError> {
        self.inner.current().map(|(bundle, _)| bundle)
    }
}

impl ServiceInner {
    /// The bundle and document for the current credentials, rendered again only when they
    /// changed.
    fn current(&self) -> Result<(SpiffeBundle, Bytes), BundleError> {
        let revisions = (
            self.source.revision(),
            self.jwt.as_ref().map_or(0, JwtBundles::revision),
        );
        let mut rendered = self.rendered.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = rendered.as_ref()
            && last.revisions == revisions
        {
            return Ok((last.bundle.clone(), last.body.clone()));
        }
        let credentials = self.source.current();
        let own = credentials.svid().spiffe_id().trust_domain();
        let Some(x509) = credentials.bundles().get(own) else {
            return Err(BundleError::NoX509Authority);
        };
        let mut bundle = SpiffeBundle::new(x509.clone());
        if let Some(keys) = self.jwt.as_ref().and_then(|jwt| jwt.authorities(own)) {
            bundle = bundle.with_jwt_authorities(keys);
        }
        let sequence = match rendered.as_ref() {
            Some(last) if last.bundle.same_authorities(&bundle) => {
                last.bundle.sequence().unwrap_or(0)
            }
            Some(last) => unix_seconds().max(last.bundle.sequence().unwrap_or(0) + 1),
            None => unix_seconds(),
        };
        let bundle = bundle
            .with_sequence(sequence)
            .with_refresh_hint(self.refresh_hint);
        let body = Bytes::from(bundle.to_json()?);
        *rendered = Some(Rendered {
            revisions,
            bundle: bundle.clone(),
            body: body.clone(),
        });
        Ok((bundle, body))
    }

    fn answer(&self, method: &Method) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match self.current() {
            Ok((_, body)) => {
                let body = if method == Method::HEAD {
                    Bytes::new()
                } else {
                    body
                };
                let mut response = Response::new(Full::new(body));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(error) => {
                tracing::error!(%error, "the bundle endpoint has no bundle to serve");
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                response
            }
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl<B> tower_service::Service<Request<B>> for BundleEndpointService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.inner.answer(request.method())))
    }
}

/// Serves a [`BundleEndpointService`] over HTTPS: the `https_spiffe` profile (our current
/// X.509-SVID, read at each handshake) or `https_web` (a WebPKI certificate). Clients are not
/// asked for a certificate: a bundle is public.
///
/// HTTP/1.1 and HTTP/2; a TLS handshake must complete within 10 s; a connection that sends no
/// request for the [idle timeout](Self::idle_timeout) is closed, and none is served longer
/// than 5 minutes; at most 256 connections at once (the next wait to be accepted).
#[derive(Clone)]
pub struct BundleEndpointServer {
    tls: Arc<ServerConfig>,
    idle_timeout: Duration,
}

impl std::fmt::Debug for BundleEndpointServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleEndpointServer")
            .finish_non_exhaustive()
    }
}

impl BundleEndpointServer {
    /// `https_spiffe`: presents `source`'s current X.509-SVID (its SPIFFE ID is the endpoint
    /// SPIFFE ID clients configure).
    pub fn https_spiffe(source: &CredentialSource) -> Result<Self, ConfigError> {
        Ok(Self {
            tls: crate::tls::svid_server_config(source)?,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        })
    }

    /// `https_web`: presents `chain` (leaf first, a WebPKI certificate for the endpoint's host
    /// name) with `key`.
    pub fn https_web(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            tls: crate::tls::web_server_config(chain, key)?,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        })
    }

    /// Bounds how long a connection may keep the server waiting (default 10 s, at least 1 ms):
    /// an HTTP/1.1 connection that has not sent a whole request header within `timeout` of the
    /// server's starting to wait for one (first request or kept alive) is closed, and so is an
    /// HTTP/2 connection that does not answer a keep-alive ping, sent after `timeout` of
    /// silence, within `timeout`. (Any connection is closed after 5 minutes.)
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The rustls configuration, for serving with another HTTPS stack.
    pub fn tls_config(&self) -> Arc<ServerConfig> {
        self.tls.clone()
    }

    /// Serves `service` (a [`BundleEndpointService`], or a router that mounts one) on
    /// `listener` until `shutdown` completes; open connections are then closed.
    pub async fn serve<S, B>(
        self,
        listener: TcpListener,
        service: S,
        shutdown: impl Future<Output = ()>,
    ) where
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut connections = tokio::task::JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                () = &mut shutdown => return,
                slot = Arc::clone(&slots).acquire_owned() => slot,
            };
            let Ok(slot) = slot else { return };
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::debug!(%error, "bundle endpoint: accept failed");
                        continue;
                    }
                },
            };
            while connections.try_join_next().is_some() {}
            let acceptor = acceptor.clone();
            let service = service.clone();
            let idle_timeout = self.idle_timeout;
            connections.spawn(async move {
                let _slot = slot;
                let tls =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "bundle endpoint: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "bundle endpoint: TLS handshake timed out");
                            return;
                        }
                    };
                let mut builder = auto::Builder::new(TokioExecutor::new());
                // The protocol as ALPN chose it (HTTP/1.1 without ALPN): guessing it from the
                // first bytes would wait for them without any timeout.
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    builder = builder.http2_only();
                } else {
                    builder = builder.http1_only();
                }
                // Without a timer hyper ignores its timeouts.
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(idle_timeout);
                builder
                    .http2()
                    .timer(TokioTimer::new())
                    .keep_alive_interval(idle_timeout)
                    .keep_alive_timeout(idle_timeout);
                let connection =
                    builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
                match tokio::time::timeout(MAX_CONNECTION_AGE, connection).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "bundle endpoint: connection ended with an error");
                    }
                    Err(_) => tracing::debug!(%peer, "bundle endpoint: connection closed at its maximum age"),
                }
            });
        }
    }
}
