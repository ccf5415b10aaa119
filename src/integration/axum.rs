//! axum 0.8: serve over a [`SecureListener`] and extract the caller's [`PeerIdentity`].
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
//! axum::serve(
//!     channel.listener(tcp)?,
//!     app.into_make_service_with_connect_info::<PeerIdentity>(),
//! )
//! .await
//! # }
//! ```
//!
//! axum hands per-connection data to requests only through `ConnectInfo`, so serve the app with
//! `into_make_service_with_connect_info::<PeerIdentity>()`: the [`PeerIdentity`] extractor and
//! this crate's layers then find the caller. Served as a plain `app`, the TLS is the same but
//! every extraction is refused with 401 (fail closed).

use std::io;
use std::net::SocketAddr;

use axum::extract::FromRequestParts;
use axum::extract::connect_info::Connected;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use http::request::Parts;
use tokio::net::TcpStream;

use crate::identity::PeerIdentity;
use crate::layer::{DefaultResponder, Rejection, RejectionKind, RejectionResponder};
use crate::transport::{SecureListener, SecureStream};

impl axum::serve::Listener for SecureListener {
    type Io = SecureStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match SecureListener::accept(self).await {
            Ok(pair) => pair,
            // The accept loop only stops when the listener is being dropped.
            Err(_) => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(SecureListener::local_addr(self))
    }
}

impl Connected<IncomingStream<'_, SecureListener>> for PeerIdentity {
    fn connect_info(stream: IncomingStream<'_, SecureListener>) -> Self {
        stream.io().peer_identity().clone()
    }
}

/// Connect info carrying both the caller's verified identity and its socket address, for
/// handlers that need the address too (axum's `ConnectInfo<SocketAddr>` is not available when
/// the app is served with a secure listener's identity).
///
/// Serve with `into_make_service_with_connect_info::<PeerConnectInfo>()`; the [`PeerIdentity`]
/// extractor and this crate's layers find the identity in it as well.
///
/// ```no_run
/// use axum::extract::ConnectInfo;
/// use axum::{Router, routing::get};
/// use secure_channel::integration::axum::PeerConnectInfo;
///
/// async fn whoami(ConnectInfo(peer): ConnectInfo<PeerConnectInfo>) -> String {
///     format!("{} from {}", peer.identity().spiffe_id(), peer.remote_addr())
/// }
///
/// # async fn run(listener: secure_channel::SecureListener) -> std::io::Result<()> {
/// let app = Router::new().route("/whoami", get(whoami));
/// axum::serve(listener, app.into_make_service_with_connect_info::<PeerConnectInfo>()).await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PeerConnectInfo {
    identity: PeerIdentity,
    remote_addr: SocketAddr,
}

impl PeerConnectInfo {
    /// The caller's verified identity.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// The caller's socket address (as seen by this listener: a proxy's, behind one).
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }
}

impl Connected<IncomingStream<'_, SecureListener>> for PeerConnectInfo {
    fn connect_info(stream: IncomingStream<'_, SecureListener>) -> Self {
        Self {
            identity: stream.io().peer_identity().clone(),
            remote_addr: *stream.remote_addr(),
        }
    }
}

/// The rejection of the [`PeerIdentity`] extractor: the request did not arrive over a secure
/// listener with connect info (401).
#[derive(Debug, Clone, Copy, Default)]
pub struct MissingPeerIdentity;

impl IntoResponse for MissingPeerIdentity {
    fn into_response(self) -> Response {
        let rejection = Rejection::new(
            RejectionKind::MissingPeerIdentity,
            "no verified peer identity: serve with into_make_service_with_connect_info::<PeerIdentity>() over a secure listener",
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
/// [`AuthorizeLayer`](crate::layer::AuthorizeLayer)) is the one that gets routed.
///
/// Use it for this crate's layers. `Router::layer` runs middleware after routing, on the raw
/// path: a request such as `/admin/../public/x` could then be authorized as `/public/x` but
/// routed by the raw path to an `/admin/{*rest}` route. So an
/// [`AuthorizeLayer`](crate::layer::AuthorizeLayer) that finds the request already routed
/// (axum's `MatchedPath` in its extensions, after `Router::layer` or `Router::route_layer`)
/// refuses it with 403 whatever the policy says, and logs an error naming
/// `layer_before_routing` (fail closed).
///
/// The result serves like a `Router` (`into_make_service_with_connect_info`,
/// `into_make_service`), for layers whose service answers axum's `Response` and never fails, as
/// this crate's do; it is the layered router itself, with no second `Router` around it (which
/// would box every request's future once more).
///
/// ```no_run
/// # async fn run(
/// #     policy: secure_channel::authz::PolicySource,
/// #     listener: secure_channel::SecureListener,
/// # ) -> std::io::Result<()> {
/// use axum::{Router, routing::get};
/// use secure_channel::PeerIdentity;
/// use secure_channel::integration::axum::layer_before_routing;
/// use secure_channel::layer::AuthorizeLayer;
///
/// let routes = Router::new().route("/public/hello", get(|| async { "hello" }));
/// let app = layer_before_routing(routes, AuthorizeLayer::new(policy));
/// axum::serve(listener, app.into_make_service_with_connect_info::<PeerIdentity>()).await
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

/// A router whose layers run before its routing, made by [`layer_before_routing`]; served like
/// a `Router`.
#[derive(Debug, Clone)]
pub struct LayeredRouter<S> {
    service: S,
}

impl<S> LayeredRouter<S>
where
    S: tower_service::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    /// A make-service for `axum::serve`, as `Router::into_make_service`.
    pub fn into_make_service(self) -> axum::routing::IntoMakeService<Self> {
        axum::ServiceExt::<axum::extract::Request>::into_make_service(self)
    }

    /// A make-service for `axum::serve` that puts `C` (for this crate, [`PeerIdentity`]) in
    /// every request's extensions, as `Router::into_make_service_with_connect_info`.
    pub fn into_make_service_with_connect_info<C>(
        self,
    ) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Self, C> {
        axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info(self)
    }

    /// The layered router.
    pub fn into_inner(self) -> S {
        self.service
    }
}

impl<S> tower_service::Service<axum::extract::Request> for LayeredRouter<S>
where
    S: tower_service::Service<axum::extract::Request>,
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

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        self.service.call(request)
    }
}

/// The claims of the request's validated token, set by [`JwtLayer`](crate::layer::JwtLayer);
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
