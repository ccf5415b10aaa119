//! The authorization layer: every request is decided by the current policy.
//!
//! ```
//! use http::Method;
//! use secure_channel::authz::{Policy, PolicySource, Rule};
//! use secure_channel::layer::AuthorizeLayer;
//!
//! let policy = Policy::builder()
//!     .rule(Rule::allow("web").principal("spiffe://example.org/web").route(Method::GET, "/orders/*"))
//!     .build()?;
//! // Or `PolicySource::from_file("policy.toml").start()?`, reloaded when the file changes.
//! let layer = AuthorizeLayer::new(PolicySource::new(policy));
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Security
//!
//! A request without a verified [`PeerIdentity`](crate::PeerIdentity) in its extensions (a service not behind the
//! secure listener) is refused with [`RejectionKind::MissingPeerIdentity`]: the layer fails
//! closed. A denied request is refused with [`RejectionKind::Forbidden`] and a description that
//! says nothing of the policy; the deciding rule is in the audit event. When the normalized path
//! differs from the request's, the request goes on with its URI path rewritten to the normalized
//! one, so that the inner service routes exactly the path that was authorized. The [`Decision`]
//! is stored in the request extensions for handlers.
//!
//! That holds only when the layer runs *before* routing. With the `axum` feature, a request
//! that axum already routed (it carries a `MatchedPath`: the layer was applied with
//! `Router::layer` or `Router::route_layer`) is refused with 403 whatever the policy says, and
//! an error is logged naming `layer_before_routing`: axum routed the raw path, which can differ
//! from the path the policy would authorize (`/admin/../orders/1` routed to `/admin/{*rest}`,
//! authorized as `/orders/1`). Apply the layer with
//! `integration::axum::layer_before_routing` (feature `axum`) instead.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::authz::{AUDIT_TARGET, AuthzRequest, Decision, PolicySource, encode_normalized};
use crate::jwt::VerifiedClaims;
use crate::layer::{
    DefaultResponder, Rejection, RejectionBody, RejectionKind, RejectionResponder, is_grpc,
};

/// What a denied caller is told: nothing about the policy.
const FORBIDDEN: &str = "the caller is not allowed to call this route";
const NO_IDENTITY: &str = "no verified peer identity";

struct Config<R> {
    policy: PolicySource,
    responder: R,
    /// Whether the misuse "applied after routing" was already logged at ERROR.
    #[cfg(feature = "axum")]
    after_routing_reported: std::sync::atomic::AtomicBool,
}

impl<R> Config<R> {
    fn new(policy: PolicySource, responder: R) -> Self {
        Self {
            policy,
            responder,
            #[cfg(feature = "axum")]
            after_routing_reported: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// Applies an authorization policy to every request.
///
/// Reads the caller's [`PeerIdentity`](crate::PeerIdentity) (and [`VerifiedClaims`], if a token layer validated one)
/// from the request extensions, decides with the current policy, and refuses denied requests
/// through the [`RejectionResponder`]: 403 `forbidden` (gRPC PERMISSION_DENIED), or 401 when
/// the identity is missing. Allowed requests carry their [`Decision`] in their extensions, and
/// go on with the normalized path.
pub struct AuthorizeLayer<R = DefaultResponder> {
    config: Arc<Config<R>>,
}

impl AuthorizeLayer {
    /// A layer deciding with `policy` (a [`Policy`](crate::authz::Policy) or a live
    /// [`PolicySource`]), answering denials with the [`DefaultResponder`].
    pub fn new(policy: impl Into<PolicySource>) -> Self {
        Self {
            config: Arc::new(Config::new(policy.into(), DefaultResponder)),
        }
    }
}

impl<R: RejectionResponder> AuthorizeLayer<R> {
    /// Replaces the responder that turns rejections into responses.
    pub fn responder<R2: RejectionResponder>(self, responder: R2) -> AuthorizeLayer<R2> {
        AuthorizeLayer {
            config: Arc::new(Config::new(self.config.policy.clone(), responder)),
        }
    }

    /// The policy source the layer reads.
    pub fn policy(&self) -> &PolicySource {
        &self.config.policy
    }
}

impl<R> Clone for AuthorizeLayer<R> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<R> std::fmt::Debug for AuthorizeLayer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizeLayer")
            .field("policy", &self.config.policy)
            .finish_non_exhaustive()
    }
}

impl<S, R> Layer<S> for AuthorizeLayer<R> {
    type Service = Authorize<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service of [`AuthorizeLayer`].
pub struct Authorize<S, R = DefaultResponder> {
    inner: S,
    config: Arc<Config<R>>,
}

impl<S> Authorize<S> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: S, policy: impl Into<PolicySource>) -> Self {
        AuthorizeLayer::new(policy).layer(inner)
    }

    /// A layer for `policy`; same as [`AuthorizeLayer::new`].
    pub fn layer(policy: impl Into<PolicySource>) -> AuthorizeLayer {
        AuthorizeLayer::new(policy)
    }
}

impl<S, R> Authorize<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, R> Clone for Authorize<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: std::fmt::Debug, R> std::fmt::Debug for Authorize<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorize")
            .field("inner", &self.inner)
            .field("policy", &self.config.policy)
            .finish_non_exhaustive()
    }
}

/// What the layer does with one request.
enum Outcome {
    Pass {
        decision: Decision,
        rewrite: Option<String>,
    },
    Reject(Rejection),
}

/// The route axum matched, when the request was already routed: the layer then runs after
/// routing (`Router::layer`, `Router::route_layer`), on a path that may not be the routed one.
#[cfg(feature = "axum")]
fn routed_by_axum<B>(request: &Request<B>) -> Option<&str> {
    request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
}

/// Refuses a request that axum routed before this layer saw it (fail closed), logging the
/// misuse at ERROR once per layer (then at DEBUG, so that the log is not flooded).
#[cfg(feature = "axum")]
fn refuse_after_routing<R, B>(config: &Config<R>, request: &Request<B>) -> Option<Rejection> {
    let route = routed_by_axum(request)?;
    let first = !config
        .after_routing_reported
        .swap(true, std::sync::atomic::Ordering::Relaxed);
    if first {
        tracing::error!(
            target: AUDIT_TARGET,
            method = %request.method(),
            path = ?request.uri().path(),
            route,
            reason = "layer_before_routing",
            "AuthorizeLayer runs after axum routing (Router::layer or route_layer), so the routed \
             path may not be the authorized one: every request is refused with 403. Apply it with \
             secure_channel::integration::axum::layer_before_routing(router, layer)"
        );
    } else {
        tracing::debug!(
            target: AUDIT_TARGET,
            method = %request.method(),
            path = ?request.uri().path(),
            route,
            reason = "layer_before_routing",
            "request refused: AuthorizeLayer runs after axum routing"
        );
    }
    Some(Rejection::new(RejectionKind::Forbidden, FORBIDDEN))
}

fn decide<B>(policy: &PolicySource, request: &Request<B>) -> Outcome {
    let Some(peer) = crate::layer::peer_identity(request.extensions()) else {
        tracing::info!(
            target: AUDIT_TARGET,
            method = %request.method(),
            path = ?request.uri().path(),
            decision = "deny",
            reason = "missing-peer-identity",
            "request refused: no verified peer identity"
        );
        return Outcome::Reject(Rejection::new(
            RejectionKind::MissingPeerIdentity,
            NO_IDENTITY,
        ));
    };
    let policy = policy.load();
    let authz = AuthzRequest::new(peer.spiffe_id(), request.method(), request.uri().path())
        .with_claims(request.extensions().get::<VerifiedClaims>());
    let (decision, normalized) = policy.decide(&authz);
    policy.record(&authz, &decision);
    if !decision.passes() {
        return Outcome::Reject(Rejection::new(RejectionKind::Forbidden, FORBIDDEN));
    }
    let rewrite = match normalized {
        Ok(Cow::Owned(path)) => Some(encode_normalized(&path)),
        Ok(Cow::Borrowed(_)) | Err(_) => None,
    };
    Outcome::Pass { decision, rewrite }
}

fn rewrite_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}")).ok()?,
        None => PathAndQuery::try_from(path).ok()?,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).ok()
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for Authorize<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RejectionResponder,
    ResBody: RejectionBody,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // Whether the caller speaks gRPC matters only for a rejection's form.
        let rejected = |rejection: Rejection, request: &Request<ReqBody>| ResponseFuture {
            kind: Kind::Rejected {
                response: Some(self.config.responder.respond(&rejection, is_grpc(request))),
            },
        };
        #[cfg(feature = "axum")]
        if let Some(rejection) = refuse_after_routing(&self.config, &request) {
            return rejected(rejection, &request);
        }
        match decide(&self.config.policy, &request) {
            Outcome::Reject(rejection) => rejected(rejection, &request),
            Outcome::Pass { decision, rewrite } => {
                if let Some(path) = rewrite {
                    match rewrite_path(request.uri(), &path) {
                        Some(uri) => *request.uri_mut() = uri,
                        // Cannot happen with an encoded path; fail closed all the same.
                        None if decision.is_allowed() => {
                            return rejected(
                                Rejection::new(RejectionKind::Forbidden, FORBIDDEN),
                                &request,
                            );
                        }
                        None => {}
                    }
                }
                request.extensions_mut().insert(decision);
                ResponseFuture {
                    kind: Kind::Inner {
                        future: self.inner.call(request),
                    },
                }
            }
        }
    }
}

pin_project! {
    /// The response future of [`Authorize`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<B>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            // Polling again after completion never resolves (rather than panicking).
            KindProj::Rejected { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use crate::identity::PeerIdentity;
    use http::{HeaderValue, Method, StatusCode, header};
    use std::convert::Infallible;
    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::authz::{DenyReason, Policy, Rule};

    fn policy() -> Policy {
        Policy::builder()
            .rule(
                Rule::allow("web-reads")
                    .principal("spiffe://example.org/web")
                    .route(Method::GET, "/orders/*")
                    .route_any_method("/orders.v1.Orders/*"),
            )
            .rule(
                Rule::allow("scoped")
                    .principal("spiffe://example.org/web")
                    .route(Method::POST, "/orders")
                    .require_scope("orders.write"),
            )
            .build()
            .unwrap()
    }

    fn request(caller: Option<&str>, method: Method, uri: &str) -> Request<String> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(String::new())
            .unwrap();
        if let Some(caller) = caller {
            request
                .extensions_mut()
                .insert(PeerIdentity::for_tests(caller));
        }
        request
    }

    /// An inner service that answers with the path (and query) it saw and the deciding rule.
    async fn echo(request: Request<String>) -> Result<Response<String>, Infallible> {
        let rule = request
            .extensions()
            .get::<Decision>()
            .and_then(|d| d.rule_name().map(str::to_owned))
            .unwrap_or_default();
        let body = format!(
            "{} {rule}",
            request.uri().path_and_query().map_or("", |p| p.as_str())
        );
        Ok(Response::new(body))
    }

    async fn call(layer: &AuthorizeLayer, request: Request<String>) -> Response<String> {
        layer
            .layer(service_fn(echo))
            .oneshot(request)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn allowed_requests_pass_through() {
        let layer = AuthorizeLayer::new(policy());
        let response = call(
            &layer,
            request(
                Some("spiffe://example.org/web"),
                Method::GET,
                "/orders/1?x=1",
            ),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body(), "/orders/1?x=1 web-reads");
        assert!(response.extensions().get::<Rejection>().is_none());
        assert_eq!(layer.policy().stats().allowed(), 1);
    }

    #[tokio::test]
    async fn denied_requests_get_403_json_without_detail() {
        let layer = AuthorizeLayer::new(policy());
        for (caller, method, uri) in [
            ("spiffe://example.org/other", Method::GET, "/orders/1"),
            ("spiffe://example.org/web", Method::DELETE, "/orders/1"),
            ("spiffe://example.org/web", Method::GET, "/orders"),
            ("spiffe://example.org/web", Method::GET, "/ordersx/1"),
            ("spiffe://example.org/web", Method::GET, "/orders/../admin"),
            ("spiffe://example.org/web", Method::GET, "/orders/a%2Fb"),
            // A rule with conditions does not match without validated claims.
            ("spiffe://example.org/web", Method::POST, "/orders"),
        ] {
            let response = call(&layer, request(Some(caller), method.clone(), uri)).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} {uri}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
            assert_eq!(body["error"], "forbidden");
            assert_eq!(body["error_description"], FORBIDDEN);
            assert!(!response.body().contains("web-reads"));
            let rejection = response.extensions().get::<Rejection>().unwrap();
            assert_eq!(rejection.kind(), RejectionKind::Forbidden);
        }
        assert_eq!(layer.policy().stats().denied(), 7);
        assert_eq!(layer.policy().stats().invalid_path(), 1);
    }

    #[tokio::test]
    async fn claims_from_the_extensions_are_used() {
        let layer = AuthorizeLayer::new(policy());
        let mut req = request(Some("spiffe://example.org/web"), Method::POST, "/orders");
        let mut claims = serde_json::Map::new();
        claims.insert("scope".into(), "orders.write".into());
        req.extensions_mut().insert(VerifiedClaims::new(claims));
        let response = call(&layer, req).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body(), "/orders scoped");
    }

    #[tokio::test]
    async fn missing_identity_gets_401() {
        let layer = AuthorizeLayer::new(policy());
        let response = call(&layer, request(None, Method::GET, "/orders/1")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let rejection = response.extensions().get::<Rejection>().unwrap();
        assert_eq!(rejection.kind(), RejectionKind::MissingPeerIdentity);
        // Even a policy allowing any authenticated peer on every path fails closed.
        let open = Policy::builder()
            .rule(
                Rule::allow("all")
                    .any_authenticated_peer()
                    .route_any_method("/*"),
            )
            .build()
            .unwrap();
        let response = call(&AuthorizeLayer::new(open), request(None, Method::GET, "/")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn grpc_denials_get_permission_denied() {
        let layer = AuthorizeLayer::new(policy());
        let mut req = request(
            Some("spiffe://example.org/other"),
            Method::POST,
            "/orders.v1.Orders/Get",
        );
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let response = call(&layer, req).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "7");
        assert_eq!(
            response
                .extensions()
                .get::<Rejection>()
                .map(Rejection::kind),
            Some(RejectionKind::Forbidden)
        );

        let mut req = request(
            Some("spiffe://example.org/web"),
            Method::POST,
            "/orders.v1.Orders/Get",
        );
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let response = call(&layer, req).await;
        assert!(response.headers().get("grpc-status").is_none());
        assert_eq!(response.body(), "/orders.v1.Orders/Get web-reads");

        let response = call(&layer, {
            let mut r = request(None, Method::POST, "/orders.v1.Orders/Get");
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            r
        })
        .await;
        assert_eq!(response.headers()["grpc-status"], "16");
    }

    #[tokio::test]
    async fn dry_run_lets_denied_requests_pass() {
        let policy = Policy::builder()
            .rule(
                Rule::allow("web")
                    .principal("spiffe://example.org/web")
                    .route(Method::GET, "/a"),
            )
            .dry_run()
            .build()
            .unwrap();
        let layer = AuthorizeLayer::new(policy);
        let response = call(
            &layer,
            request(Some("spiffe://example.org/other"), Method::GET, "/a"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body(), "/a ");
        let stats = layer.policy().stats();
        assert_eq!((stats.allowed(), stats.denied()), (0, 1));
        // Missing identity is not a policy decision: refused even in dry-run.
        let response = call(&layer, request(None, Method::GET, "/a")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn the_inner_service_sees_the_normalized_path() {
        let layer = AuthorizeLayer::new(policy());
        for (uri, seen) in [
            ("/orders//1/?q=a%2Fb", "/orders/1?q=a%2Fb"),
            ("/orders/x/../1", "/orders/1"),
            ("/orders/%31", "/orders/1"),
            ("/orders/a%20b", "/orders/a%20b"),
            ("/orders/%7e", "/orders/~"),
        ] {
            let response = call(
                &layer,
                request(Some("spiffe://example.org/web"), Method::GET, uri),
            )
            .await;
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            assert_eq!(response.body(), &format!("{seen} web-reads"), "{uri}");
        }
    }

    #[tokio::test]
    async fn the_current_policy_is_read_per_request() {
        let source = PolicySource::new(Policy::deny_all());
        let layer = AuthorizeLayer::new(source.clone());
        let req = || request(Some("spiffe://example.org/web"), Method::GET, "/orders/1");
        assert_eq!(call(&layer, req()).await.status(), StatusCode::FORBIDDEN);
        source.replace(policy());
        assert_eq!(call(&layer, req()).await.status(), StatusCode::OK);
    }

    /// `Router::layer` and `Router::route_layer` run the layer after axum routed the raw path:
    /// every such request is refused (fail closed), even one the policy would allow, while the
    /// same layer before routing authorizes and routes the normalized path.
    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn applied_after_axum_routing_every_request_is_refused() {
        use axum::Router;
        use axum::routing::get;

        let source = PolicySource::new(
            Policy::builder()
                .rule(
                    Rule::allow("web-orders")
                        .principal("spiffe://example.org/web")
                        .route(Method::GET, "/orders/*"),
                )
                .build()
                .unwrap(),
        );
        let routes = Router::new()
            .route("/orders/{id}", get(|| async { "order" }))
            .route("/admin/{*rest}", get(|| async { "admin" }));
        let get = |uri: &str| {
            let mut request = Request::get(uri).body(axum::body::Body::empty()).unwrap();
            request
                .extensions_mut()
                .insert(PeerIdentity::for_tests("spiffe://example.org/web"));
            request
        };
        async fn answer(
            app: impl Service<
                Request<axum::body::Body>,
                Response = Response<axum::body::Body>,
                Error = Infallible,
            >,
            request: Request<axum::body::Body>,
        ) -> (StatusCode, String, Option<RejectionKind>) {
            let response = app.oneshot(request).await.unwrap();
            let kind = response
                .extensions()
                .get::<Rejection>()
                .map(Rejection::kind);
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&body).into_owned(), kind)
        }

        let after = [
            routes.clone().layer(AuthorizeLayer::new(source.clone())),
            routes
                .clone()
                .route_layer(AuthorizeLayer::new(source.clone())),
        ];
        for app in after {
            for uri in ["/admin/../orders/1", "/orders/1", "/admin/x"] {
                let (status, body, kind) = answer(app.clone(), get(uri)).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {body}");
                assert_eq!(kind, Some(RejectionKind::Forbidden), "{uri}");
                assert!(
                    !body.contains("admin") && !body.contains("order\""),
                    "{body}"
                );
            }
        }

        // Before routing: the normalized path is authorized, and it is the one routed.
        let before = AuthorizeLayer::new(source).layer(routes);
        assert_eq!(
            answer(before.clone(), get("/orders/1")).await,
            (StatusCode::OK, "order".into(), None)
        );
        assert_eq!(
            answer(before.clone(), get("/admin/../orders/1")).await,
            (StatusCode::OK, "order".into(), None)
        );
        assert_eq!(
            answer(before, get("/admin/x")).await.0,
            StatusCode::FORBIDDEN
        );
    }

    /// The layer is ready only when the inner service is (back-pressure passes through), and
    /// the Debug forms name the type and the policy source.
    #[tokio::test]
    async fn readiness_is_the_inner_services_and_debug_forms() {
        use crate::layer::test_support::{NeverReady, is_ready};

        let layer = AuthorizeLayer::new(policy());
        let mut never = layer.layer(NeverReady);
        assert!(!is_ready::<_, Request<String>>(&mut never).await);
        assert!(is_ready(&mut layer.layer(service_fn(echo))).await);

        assert!(
            format!("{layer:?}").starts_with("AuthorizeLayer { policy: PolicySource {"),
            "{layer:?}"
        );
        assert!(
            format!("{never:?}")
                .starts_with("Authorize { inner: NeverReady, policy: PolicySource {"),
            "{never:?}"
        );
        let future = never.call(request(None, Method::GET, "/orders/1"));
        assert_eq!(format!("{future:?}"), "ResponseFuture { .. }");
    }

    #[derive(Clone)]
    struct Teapot;

    impl RejectionResponder for Teapot {
        fn respond<B: RejectionBody>(&self, rejection: &Rejection, _grpc: bool) -> Response<B> {
            let mut response = Response::new(B::from_bytes(bytes::Bytes::from_static(b"no")));
            *response.status_mut() = StatusCode::IM_A_TEAPOT;
            response.extensions_mut().insert(rejection.clone());
            response
        }
    }

    #[tokio::test]
    async fn the_responder_can_be_replaced() {
        let layer = AuthorizeLayer::new(policy()).responder(Teapot);
        let response = layer
            .layer(service_fn(echo))
            .oneshot(request(
                Some("spiffe://example.org/other"),
                Method::GET,
                "/orders/1",
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
        let mut service = Authorize::new(service_fn(echo), policy());
        let _ = service.get_ref();
        let _ = service.get_mut();
        let _ = service.into_inner();
        let _ = Authorize::<()>::layer(policy());
        let _ = DenyReason::NoMatchingRule;
    }
}
