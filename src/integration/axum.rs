//! axum 0.8: serve a `Router` over a [`SecureListener`] with this crate's layers in the right
//! order, and extract the caller's [`PeerIdentity`].
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use secure_channel::{PeerIdentity, SecureChannel};
//!
//! async fn whoami(peer: PeerIdentity) -> String {
//!     peer.spiffe_id().to_string()
//! }
//!
//! # async fn run(channel: SecureChannel) -> std::io::Result<()> {
//! let app = Router::new().route("/whoami", get(whoami));
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! secure_channel::integration::axum::serve(channel.listener(tcp)?, app).await
//! # }
//! ```
//!
//! [`serve`] is the one call that assembles a secure server: the identity and the client's
//! address (axum's `ConnectInfo<SocketAddr>`) in every request, the rate limits outside the JWT
//! layer, the JWT layer outside the authorization layer, all before routing
//! ([`Serve::rate_limit`], [`Serve::jwt`], [`Serve::authorize`]),
//! connection spans, bounded request headers, and graceful shutdown. The pieces it is made of
//! stay available: [`layer_before_routing`], the layers in [`layer`](crate::layer), and
//! [`integration::hyper::serve`](crate::integration::hyper::serve).
//!
//! `axum::serve` cannot take a [`SecureListener`]: it hands connection data to requests only
//! through `ConnectInfo`, which this crate's layers do not trust to be the verified identity.

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use hyper::body::Incoming;
use tower_layer::{Identity, Layer};

use crate::identity::PeerIdentity;
use crate::integration::hyper::{DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_HEADER_SIZE};
use crate::layer::authorize::AuthorizeLayer;
use crate::layer::jwt::JwtLayer;
use crate::layer::rate_limit::RateLimitLayer;
use crate::layer::{DefaultResponder, Rejection, RejectionBody, RejectionKind, RejectionResponder};
use crate::transport::SecureListener;

/// Serves `router` on every connection of `listener`, with the caller's [`PeerIdentity`] in
/// every request; add [`jwt`](Serve::jwt) and [`authorize`](Serve::authorize) for tokens and
/// authorization, then await it (or call [`with_graceful_shutdown`](Serve::with_graceful_shutdown)).
///
/// ```no_run
/// # async fn run(
/// #     listener: secure_channel::SecureListener,
/// #     policy: secure_channel::authz::PolicySource,
/// #     tokens: secure_channel::jwt::JwtValidator,
/// # ) -> std::io::Result<()> {
/// use axum::{Router, routing::get};
/// use secure_channel::layer::{authorize::AuthorizeLayer, jwt::JwtLayer};
///
/// let app = Router::new().route("/orders", get(|| async { "[]" }));
/// secure_channel::integration::axum::serve(listener, app)
///     .jwt(JwtLayer::new(tokens))
///     .authorize(AuthorizeLayer::new(policy))
///     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
///     .await
/// # }
/// ```
pub fn serve(listener: SecureListener, router: axum::Router) -> Serve {
    Serve {
        listener,
        router,
        rate_limit: Identity::new(),
        jwt: Identity::new(),
        authorize: Identity::new(),
        max_header_size: DEFAULT_MAX_HEADER_SIZE,
        header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
    }
}

/// A server being assembled by [`serve`]. Whatever order the calls come in, requests pass the
/// rate limits first, then the JWT layer, then the authorization layer, all before axum routes
/// them.
#[derive(Debug)]
#[must_use = "a server does nothing until awaited"]
pub struct Serve<J = Identity, A = Identity, L = Identity> {
    listener: SecureListener,
    router: axum::Router,
    rate_limit: L,
    jwt: J,
    authorize: A,
    max_header_size: usize,
    header_read_timeout: Option<Duration>,
}

impl<J, A, L> Serve<J, A, L> {
    /// Limits each caller's requests by its SPIFFE ID before anything else: a caller over its
    /// limit is refused before its token is checked (a flood costs no signature checks).
    pub fn rate_limit<R>(self, layer: RateLimitLayer<R>) -> Serve<J, A, RateLimitLayer<R>> {
        self.replace_layers(|_| layer, |jwt| jwt, |authorize| authorize)
    }

    /// Validates bearer tokens (certificate-bound when the validator says so) before
    /// authorization, so rules can require scopes and claims.
    pub fn jwt<R>(self, layer: JwtLayer<R>) -> Serve<JwtLayer<R>, A, L> {
        self.replace_layers(|limits| limits, |_| layer, |authorize| authorize)
    }

    /// Authorizes each request by its caller, method and normalized path before routing (see
    /// [`layer_before_routing`] for why before), applying the limits of the rule that admits
    /// it.
    pub fn authorize<R>(self, layer: AuthorizeLayer<R>) -> Serve<J, AuthorizeLayer<R>, L> {
        self.replace_layers(|limits| limits, |jwt| jwt, |_| layer)
    }

    fn replace_layers<J2, A2, L2>(
        self,
        rate_limit: impl FnOnce(L) -> L2,
        jwt: impl FnOnce(J) -> J2,
        authorize: impl FnOnce(A) -> A2,
    ) -> Serve<J2, A2, L2> {
        Serve {
            listener: self.listener,
            router: self.router,
            rate_limit: rate_limit(self.rate_limit),
            jwt: jwt(self.jwt),
            authorize: authorize(self.authorize),
            max_header_size: self.max_header_size,
            header_read_timeout: self.header_read_timeout,
        }
    }

    /// Bounds a request's header section (default 32 KiB, at least 8 KiB); see
    /// [`integration::hyper::Serve::max_header_size`](crate::integration::hyper::Serve::max_header_size).
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes;
        self
    }

    /// Bounds the time a client takes to send a request's header section (default 30 s); see
    /// [`integration::hyper::Serve::header_read_timeout`](crate::integration::hyper::Serve::header_read_timeout).
    pub fn header_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.header_read_timeout = timeout;
        self
    }
}

impl<J, A, L> Serve<J, A, L>
where
    A: Layer<axum::Router>,
    J: Layer<A::Service>,
    L: Layer<J::Service>,
    L::Service: tower_service::Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    <L::Service as tower_service::Service<Request>>::Future: Send + 'static,
{
    /// Runs until `signal` completes, then stops accepting and waits for the requests in flight
    /// to finish.
    pub async fn with_graceful_shutdown<F>(self, signal: F) -> io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let service = self
            .rate_limit
            .layer(self.jwt.layer(self.authorize.layer(self.router)));
        crate::integration::hyper::serve(self.listener, service)
            .max_header_size(self.max_header_size)
            .header_read_timeout(self.header_read_timeout)
            .with_graceful_shutdown(signal)
            .await
    }
}

type Request = http::Request<Incoming>;

impl<J, A, L> IntoFuture for Serve<J, A, L>
where
    J: Send + 'static,
    A: Send + 'static,
    L: Send + 'static,
    A: Layer<axum::Router>,
    J: Layer<A::Service>,
    L: Layer<J::Service>,
    L::Service: tower_service::Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    <L::Service as tower_service::Service<Request>>::Future: Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.with_graceful_shutdown(std::future::pending()))
    }
}

/// Rejections of this crate's layers answer with axum's body type.
impl RejectionBody for axum::body::Body {
    fn from_bytes(bytes: bytes::Bytes) -> Self {
        Self::from(bytes)
    }
}

/// The rejection of the [`PeerIdentity`] extractor: the request did not arrive through
/// [`serve`] (or [`integration::hyper::serve`](crate::integration::hyper::serve)) over a secure
/// listener (401).
#[derive(Debug, Clone, Copy, Default)]
pub struct MissingPeerIdentity;

impl IntoResponse for MissingPeerIdentity {
    fn into_response(self) -> Response {
        let rejection = Rejection::new(
            RejectionKind::MissingPeerIdentity,
            "no verified peer identity: serve the app with secure_channel::integration::axum::serve over a secure listener",
        );
        DefaultResponder.respond(&rejection, false)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PeerIdentity {
    type Rejection = MissingPeerIdentity;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        crate::layer::peer_identity(&parts.extensions)
            .cloned()
            .ok_or(MissingPeerIdentity)
    }
}

/// Applies `layer` to the whole `router`, routing included: the layer sees each request before
/// axum matches its path, and the path it passes on (normalized, for
/// [`AuthorizeLayer`]) is the one that gets routed.
///
/// Use it for this crate's layers. `Router::layer` runs middleware after routing, on the raw
/// path: a request such as `/admin/../public/x` could then be authorized as `/public/x` but
/// routed by the raw path to an `/admin/{*rest}` route. So an
/// [`AuthorizeLayer`] that finds the request already routed
/// (axum's `MatchedPath` in its extensions, after `Router::layer` or `Router::route_layer`)
/// refuses it with 403 whatever the policy says, and logs an error naming
/// `layer_before_routing` (fail closed).
///
/// [`serve`] does this for the rate-limit, JWT and authorization layers; use this piece for
/// other layers,
/// or to serve with [`integration::hyper::serve`](crate::integration::hyper::serve) directly.
/// The result is the layered router itself, with no second `Router` around it (which would box
/// every request's future once more).
///
/// ```no_run
/// # async fn run(
/// #     policy: secure_channel::authz::PolicySource,
/// #     listener: secure_channel::SecureListener,
/// # ) -> std::io::Result<()> {
/// use axum::{Router, routing::get};
/// use secure_channel::integration::axum::layer_before_routing;
/// use secure_channel::layer::authorize::AuthorizeLayer;
///
/// let routes = Router::new().route("/public/hello", get(|| async { "hello" }));
/// let app = layer_before_routing(routes, AuthorizeLayer::new(policy));
/// secure_channel::integration::hyper::serve(listener, app).await
/// # }
/// ```
pub fn layer_before_routing<L>(router: axum::Router, layer: L) -> LayeredRouter<L::Service>
where
    L: tower_layer::Layer<axum::Router>,
{
    LayeredRouter {
        service: layer.layer(router),
    }
}

/// A router whose layers run before its routing, made by [`layer_before_routing`]; a tower
/// service like a `Router`.
#[derive(Debug, Clone)]
pub struct LayeredRouter<S> {
    service: S,
}

impl<S> LayeredRouter<S> {
    /// The layered router.
    pub fn into_inner(self) -> S {
        self.service
    }
}

impl<S, B> tower_service::Service<http::Request<B>> for LayeredRouter<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.service.call(request)
    }
}

/// The claims of the request's validated token, set by [`JwtLayer`];
/// without one (no JWT layer in front of the handler), the request is refused with 401.
impl<S: Send + Sync> FromRequestParts<S> for crate::jwt::VerifiedClaims {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or_else(|| {
            let rejection = Rejection::new(RejectionKind::InvalidToken, "no validated token");
            DefaultResponder.respond(&rejection, false)
        })
    }
}
