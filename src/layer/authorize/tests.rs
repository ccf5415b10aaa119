use crate::identity::PeerIdentity;
use http::{HeaderValue, Method, StatusCode, header};
use std::convert::Infallible;
use tower::{ServiceExt, service_fn};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::service::FORBIDDEN;
use super::{Authorize, AuthorizeLayer};
use crate::authz::{Decision, PolicySource};
use crate::authz::{DenyReason, Policy, Rule};
use crate::jwt::VerifiedClaims;
use crate::layer::test_support::second_poll_panic;
use crate::layer::{Rejection, RejectionBody, RejectionKind, RejectionResponder};

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

#[tokio::test]
async fn denials_carry_the_deny_reason() {
    let policy = Policy::builder()
        .rule(
            Rule::allow("web-reads")
                .principal("spiffe://example.org/web")
                .route(Method::GET, "/orders/*"),
        )
        .rule(
            Rule::deny("no-drafts")
                .principal("spiffe://example.org/web")
                .route(Method::GET, "/orders/drafts"),
        )
        .build()
        .unwrap();
    let layer = AuthorizeLayer::new(policy);
    for (caller, uri, expected) in [
        (
            Some("spiffe://example.org/other"),
            "/orders/1",
            Some(DenyReason::NoMatchingRule),
        ),
        (
            Some("spiffe://example.org/web"),
            "/orders/drafts",
            Some(DenyReason::DenyRule),
        ),
        (
            Some("spiffe://example.org/web"),
            "/orders/a%2Fb",
            Some(DenyReason::InvalidPath(
                crate::authz::PathError::EncodedSeparator,
            )),
        ),
        (None, "/orders/1", None),
    ] {
        let response = call(&layer, request(caller, Method::GET, uri)).await;
        let rejection = response.extensions().get::<Rejection>().unwrap();
        assert_eq!(rejection.deny_reason(), expected, "{uri}");
        assert_eq!(
            (rejection.token_error(), rejection.missing_scope()),
            (None, None),
            "{uri}"
        );
        assert_eq!(
            rejection.kind(),
            if caller.is_some() {
                RejectionKind::Forbidden
            } else {
                RejectionKind::MissingPeerIdentity
            }
        );
    }
}

/// Polled again after it returned, the future panics naming itself, after a denial and after
/// the inner service answered (whatever the inner future would have done).
#[tokio::test]
async fn a_response_future_polled_after_completion_panics() {
    let layer = AuthorizeLayer::new(policy());
    for caller in ["spiffe://example.org/other", "spiffe://example.org/web"] {
        let mut service = layer.layer(service_fn(echo));
        let future = service.call(request(Some(caller), Method::GET, "/orders/1"));
        assert_eq!(
            second_poll_panic(future).await,
            "`layer::authorize::ResponseFuture` polled after completion",
            "{caller}"
        );
    }
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
        format!("{never:?}").starts_with("Authorize { inner: NeverReady, policy: PolicySource {"),
        "{never:?}"
    );
    let future = never.call(request(None, Method::GET, "/orders/1"));
    assert_eq!(format!("{future:?}"), "ResponseFuture { .. }");
}

/// Issue 18: a rule's limits apply to each caller the rule admits, through the layer's
/// responder (429, the rule's name in the typed cause); requests the policy denies, or that
/// another rule admits, are not counted against them.
#[tokio::test]
async fn a_rules_rate_limits_each_caller_it_admits() {
    use crate::layer::{LimitReason, LimitSource};

    let policy = Policy::builder()
        .rule(
            Rule::allow("reads")
                .principal("spiffe://example.org")
                .route(Method::GET, "/orders/*")
                .rate("2/h"),
        )
        .rule(
            Rule::allow("health")
                .principal("spiffe://example.org")
                .route(Method::GET, "/health"),
        )
        .build()
        .unwrap();
    let layer = AuthorizeLayer::new(policy);
    let web = Some("spiffe://example.org/web");
    for _ in 0..2 {
        let response = call(&layer, request(web, Method::GET, "/orders/1")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Denied requests and other rules' requests do not count.
    let denied = call(&layer, request(web, Method::POST, "/orders/1")).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let health = call(&layer, request(web, Method::GET, "/health")).await;
    assert_eq!(health.status(), StatusCode::OK);

    let refused = call(&layer, request(web, Method::GET, "/orders/2")).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()[header::RETRY_AFTER], "1800");
    assert!(!refused.body().contains("reads"), "{}", refused.body());
    let rejection = refused.extensions().get::<Rejection>().unwrap();
    let limit = rejection.limit_exceeded().unwrap();
    assert_eq!(
        (limit.source(), limit.name(), limit.reason()),
        (LimitSource::PolicyRule, "reads", LimitReason::Rate)
    );
    // Another caller the rule admits has its own count.
    let other = Some("spiffe://example.org/other");
    let response = call(&layer, request(other, Method::GET, "/orders/1")).await;
    assert_eq!(response.status(), StatusCode::OK);
    // gRPC: RESOURCE_EXHAUSTED.
    let mut grpc = request(web, Method::GET, "/orders/3");
    grpc.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    assert_eq!(call(&layer, grpc).await.headers()["grpc-status"], "8");
}

/// A rule's concurrency counts the request until the inner service's response future
/// completes or is dropped; in dry-run mode a request over a limit passes.
#[tokio::test]
async fn a_rules_concurrency_holds_until_the_response_and_dry_run_passes() {
    let rules = |builder: crate::authz::PolicyBuilder| {
        builder
            .rule(
                Rule::allow("web")
                    .principal("spiffe://example.org/web")
                    .route_any_method("/*")
                    .concurrency(1),
            )
            .build()
            .unwrap()
    };
    let web = Some("spiffe://example.org/web");
    let layer = AuthorizeLayer::new(rules(Policy::builder()));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rx = std::sync::Mutex::new(Some(rx));
    let mut held = layer.layer(service_fn(move |_: Request<String>| {
        let rx = rx.lock().unwrap().take();
        async move {
            if let Some(rx) = rx {
                let _ = rx.await;
            }
            Ok::<_, Infallible>(Response::new("held".to_owned()))
        }
    }));
    let first = tokio::spawn(held.call(request(web, Method::GET, "/a")));
    let refused = call(&layer, request(web, Method::GET, "/b")).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    tx.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap().body(), "held");
    assert_eq!(
        call(&layer, request(web, Method::GET, "/b")).await.status(),
        StatusCode::OK
    );
    // A dropped response future gives its place back.
    let dropped = layer
        .layer(service_fn(echo))
        .call(request(web, Method::GET, "/c"));
    assert_eq!(
        call(&layer, request(web, Method::GET, "/b")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    drop(dropped);
    assert_eq!(
        call(&layer, request(web, Method::GET, "/b")).await.status(),
        StatusCode::OK
    );

    let dry_run = AuthorizeLayer::new(rules(Policy::builder().dry_run()));
    let _held = dry_run
        .layer(service_fn(echo))
        .call(request(web, Method::GET, "/c"));
    assert_eq!(
        call(&dry_run, request(web, Method::GET, "/b"))
            .await
            .status(),
        StatusCode::OK
    );
}

/// A reload that changes a rule's rate applies at once to the next request.
#[tokio::test]
async fn a_policy_reload_changes_a_rules_limit() {
    let policy = |rate: &str| {
        Policy::builder()
            .rule(
                Rule::allow("web")
                    .principal("spiffe://example.org/web")
                    .route_any_method("/*")
                    .rate(rate),
            )
            .build()
            .unwrap()
    };
    let source = PolicySource::new(policy("1/h"));
    let layer = AuthorizeLayer::new(source.clone());
    let web = Some("spiffe://example.org/web");
    let status = |layer: &AuthorizeLayer| {
        let request = request(web, Method::GET, "/a");
        let layer = layer.clone();
        async move { call(&layer, request).await.status() }
    };
    assert_eq!(status(&layer).await, StatusCode::OK);
    assert_eq!(status(&layer).await, StatusCode::TOO_MANY_REQUESTS);
    source.replace(policy("3/h"));
    for _ in 0..3 {
        assert_eq!(status(&layer).await, StatusCode::OK);
    }
    assert_eq!(status(&layer).await, StatusCode::TOO_MANY_REQUESTS);
}
