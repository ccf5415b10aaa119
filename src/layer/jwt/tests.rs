use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use serde_json::json;
use tower::ServiceExt;
use tower_service::Service;

use http::{Request, Response, header};
use tower_layer::Layer;

use super::JwtLayer;
use crate::PeerIdentity;
use crate::jwt::test_support::*;
use crate::jwt::{Algorithm, JwtValidatorBuilder, KeySource};
use crate::jwt::{JwtValidator, TokenErrorKind, VerifiedClaims};
use crate::layer::test_support::second_poll_panic;
use crate::layer::{Rejection, RejectionKind};
use crate::testkit::TokenIssuer;

fn validator(issuer: &TokenIssuer) -> JwtValidatorBuilder {
    JwtValidator::access_tokens(AUDIENCE)
        .issuer(ISSUER)
        .key_source(KeySource::from_jwks(issuer.jwks()).unwrap())
}

fn request(token: Option<&str>, peer: Option<&PeerIdentity>) -> Request<()> {
    let mut builder = Request::builder().uri("/orders");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let mut request = builder.body(()).unwrap();
    if let Some(peer) = peer {
        request.extensions_mut().insert(peer.clone());
    }
    request
}

/// The handler: answers with the verified subject, so tests see the claims arrived.
async fn handler(request: Request<()>) -> Result<Response<String>, Infallible> {
    let claims = request.extensions().get::<VerifiedClaims>();
    let body = match claims {
        Some(claims) => format!("hello {}", claims.subject().unwrap_or("?")),
        None => "no claims".to_owned(),
    };
    Ok(Response::new(body))
}

async fn send(layer: &JwtLayer, request: Request<()>) -> Response<String> {
    let service = layer.layer(tower::service_fn(handler));
    within(service.oneshot(request)).await.unwrap()
}

/// A 401 `invalid_token` with `description`, that never reached the handler and does not
/// echo the token.
fn assert_invalid(response: &Response<String>, description: &str, token: &str) {
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "{}",
        response.body()
    );
    let challenge = response.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap();
    assert_eq!(
        challenge,
        format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
    );
    assert!(!response.body().contains("hello"));
    let rejection = response.extensions().get::<Rejection>().unwrap();
    assert_eq!(rejection.kind(), RejectionKind::InvalidToken);
    if token.len() > 10 {
        for part in token.split('.').filter(|p| p.len() > 4) {
            assert!(!response.body().contains(part));
            assert!(!challenge.contains(part));
        }
    }
}

async fn rejected_with(layer: &JwtLayer, token: &str, peer: &PeerIdentity, description: &str) {
    let response = send(layer, request(Some(token), Some(peer))).await;
    assert_invalid(&response, description, token);
}

#[tokio::test]
async fn every_rejection_is_401_invalid_token() {
    let mut issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
    issuer.add_key("k384", Algorithm::ES384).unwrap();
    let c = caller();
    let layer = JwtLayer::new(validator(&issuer).build().unwrap());
    let required = JwtLayer::new(
        validator(&issuer)
            .require_certificate_binding()
            .build()
            .unwrap(),
    );
    let now = SystemTime::now();
    let t = || issuer.token().audience(AUDIENCE).subject("alice");
    let mut tamper = serde_json::Map::new();
    tamper.insert("sub".into(), json!("admin"));

    let cases: Vec<(&JwtLayer, String, &str)> = vec![
        (&layer, t().unsigned(), "unsigned tokens are not accepted"),
        (
            &layer,
            t().hs256_with_public_key().unwrap(),
            "token algorithm not accepted",
        ),
        (
            &layer,
            t().header("kid", json!("unknown")).sign().unwrap(),
            "token signing key unknown",
        ),
        (
            &layer,
            t().expires_at(now - Duration::from_secs(60))
                .sign()
                .unwrap(),
            "token expired",
        ),
        (
            &layer,
            t().not_before(now + Duration::from_secs(60))
                .sign()
                .unwrap(),
            "token not valid yet",
        ),
        (
            &layer,
            t().audience("https://other.test").sign().unwrap(),
            "token audience not accepted",
        ),
        (
            &layer,
            t().issued_by("https://evil.test").sign().unwrap(),
            "token issuer not accepted",
        ),
        (
            &layer,
            t().tampered(tamper).unwrap(),
            "token signature invalid",
        ),
        (
            &layer,
            t().sign().unwrap().replacen('e', "*", 1),
            "token malformed",
        ),
        (
            &layer,
            t().claim("pad", json!("x".repeat(9000))).sign().unwrap(),
            "token too large",
        ),
        (
            &required,
            t().bound_to_svid(&c.other).sign().unwrap(),
            "token bound to another certificate",
        ),
        (
            &required,
            t().sign().unwrap(),
            "certificate-bound token required",
        ),
        (
            &layer,
            t().header("crit", json!(["b64"])).sign().unwrap(),
            "token has critical header parameters",
        ),
        (
            &layer,
            t().bound_to_svid(&c.other).sign().unwrap(),
            "token bound to another certificate",
        ),
        (
            &layer,
            t().claim("cnf", json!({"jkt": "x"})).sign().unwrap(),
            "token confirmation method not supported",
        ),
        (
            &layer,
            t().key("k384").header("kid", json!("k1")).sign().unwrap(),
            "token algorithm does not match its key",
        ),
        (
            &layer,
            t().issued_at(now + Duration::from_secs(60))
                .expires_in(Duration::from_secs(120))
                .sign()
                .unwrap(),
            "token issued in the future",
        ),
        (
            &layer,
            t().expires_in(Duration::from_secs(3 * 24 * 3600))
                .sign()
                .unwrap(),
            "token lifetime too long",
        ),
        (
            &layer,
            t().header("kid", serde_json::Value::Null).sign().unwrap(),
            "token has no key id",
        ),
    ];
    for (layer, token, description) in &cases {
        rejected_with(layer, token, &c.peer, description).await;
    }

    // The good token passes both, and its claims reach the handler.
    let good = t().bound_to_svid(&c.svid).sign().unwrap();
    for layer in [&layer, &required] {
        let response = send(layer, request(Some(&good), Some(&c.peer))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body(), "hello alice");
    }
}

#[tokio::test]
async fn token_only_from_the_authorization_header() {
    let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
    let c = caller();
    let layer = JwtLayer::new(validator(&issuer).build().unwrap());
    let token = issuer
        .token()
        .audience(AUDIENCE)
        .subject("alice")
        .sign()
        .unwrap();

    // In the query string: not looked at, so the request has no token.
    let mut in_query = request(None, Some(&c.peer));
    *in_query.uri_mut() = format!("/orders?access_token={token}").parse().unwrap();
    let response = send(&layer, in_query).await;
    assert_invalid(&response, "bearer token missing", &token);

    let response = send(&layer, request(None, Some(&c.peer))).await;
    assert_invalid(&response, "bearer token missing", &token);

    for value in [
        format!("Basic {token}"),
        "Bearer".to_owned(),
        "Bearer    ".to_owned(),
        token.clone(),
    ] {
        let mut r = request(None, Some(&c.peer));
        r.headers_mut()
            .insert(header::AUTHORIZATION, value.parse().unwrap());
        assert_invalid(&send(&layer, r).await, "bearer token missing", &token);
    }

    let mut twice = request(Some(&token), Some(&c.peer));
    twice.headers_mut().append(
        header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    assert_invalid(
        &send(&layer, twice).await,
        "more than one Authorization header",
        &token,
    );

    let mut binary = request(None, Some(&c.peer));
    binary.headers_mut().insert(
        header::AUTHORIZATION,
        http::HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
    );
    assert_invalid(&send(&layer, binary).await, "token malformed", &token);

    let mut huge = request(None, Some(&c.peer));
    huge.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {}", "a".repeat(20_000)).parse().unwrap(),
    );
    assert_invalid(&send(&layer, huge).await, "token too large", &token);

    // Scheme case and extra spaces are tolerated (RFC 7235), before the token and after,
    // on first sight and from the cache.
    for _ in 0..2 {
        let mut spaced = request(None, Some(&c.peer));
        spaced.headers_mut().insert(
            header::AUTHORIZATION,
            format!("bearer   {token}  ").parse().unwrap(),
        );
        assert_eq!(send(&layer, spaced).await.body(), "hello alice");
    }
}

#[tokio::test]
async fn missing_peer_identity_is_401_and_never_reaches_the_handler() {
    let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
    let layer = JwtLayer::new(validator(&issuer).build().unwrap());
    let token = issuer.token().audience(AUDIENCE).sign().unwrap();
    let response = send(&layer, request(Some(&token), None)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.extensions().get::<Rejection>().unwrap().kind(),
        RejectionKind::MissingPeerIdentity
    );
    assert!(!response.body().contains("hello"));
}

#[tokio::test]
async fn missing_scope_is_403_insufficient_scope() {
    let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
    let c = caller();
    let layer = JwtLayer::new(validator(&issuer).build().unwrap())
        .require_scope("orders:read")
        .require_scope("orders:write");
    let t = || issuer.token().audience(AUDIENCE).subject("alice");

    let response = send(
        &layer,
        request(
            Some(&t().scope("orders:read").sign().unwrap()),
            Some(&c.peer),
        ),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        "Bearer error=\"insufficient_scope\", error_description=\"scope orders:write required\""
    );
    assert_eq!(
        response.extensions().get::<Rejection>().unwrap().kind(),
        RejectionKind::InsufficientScope
    );

    let both = t().scope("orders:write orders:read").sign().unwrap();
    assert_eq!(
        send(&layer, request(Some(&both), Some(&c.peer)))
            .await
            .body(),
        "hello alice"
    );
    let scp = t()
        .claim("scp", json!(["orders:read", "orders:write"]))
        .sign()
        .unwrap();
    assert_eq!(
        send(&layer, request(Some(&scp), Some(&c.peer)))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn grpc_rejections_are_unauthenticated() {
    let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
    let c = caller();
    let layer = JwtLayer::new(validator(&issuer).build().unwrap());
    let mut r = request(Some("a.b.c"), Some(&c.peer));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, "application/grpc".parse().unwrap());
    let response = send(&layer, r).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["grpc-status"], "16");
}

#[tokio::test]
async fn good_paths_es256_eddsa_rs256_and_aud_list() {
    let c = caller();
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
        let issuer = TokenIssuer::new(ISSUER, "k", alg).unwrap();
        let layer = JwtLayer::new(validator(&issuer).build().unwrap());
        for token in [
            issuer
                .token()
                .audience(AUDIENCE)
                .subject("alice")
                .sign()
                .unwrap(),
            issuer
                .token()
                .audiences(&["https://other.test", AUDIENCE])
                .subject("alice")
                .bound_to_svid(&c.svid)
                .sign()
                .unwrap(),
        ] {
            let response = send(&layer, request(Some(&token), Some(&c.peer))).await;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "{alg:?}: {}",
                response.body()
            );
            assert_eq!(response.body(), "hello alice");
        }
    }
}

/// A layer whose keys come from `fetcher`, refreshed for every unknown key id.
async fn refreshing_layer(fetcher: &TestFetcher) -> JwtLayer {
    let keys = within(
        KeySource::jwks_url(fetcher.clone())
            .unknown_kid_interval(Duration::ZERO)
            .start(),
    )
    .await
    .unwrap();
    JwtLayer::new(
        JwtValidator::access_tokens(AUDIENCE)
            .issuer(ISSUER)
            .key_source(keys)
            .build()
            .unwrap(),
    )
}

#[tokio::test]
async fn rotation_through_the_layer_waits_for_the_refresh() {
    let mut issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
    let fetcher = TestFetcher::new(issuer.jwks());
    let c = caller();
    let layer = refreshing_layer(&fetcher).await.require_scope("read");

    issuer.add_key("k2", Algorithm::EdDSA).unwrap();
    let rotated = issuer
        .token()
        .key("k2")
        .audience(AUDIENCE)
        .subject("bob")
        .scope("read")
        .sign()
        .unwrap();

    // Before the issuer publishes the key: refused after one refresh.
    let response = send(&layer, request(Some(&rotated), Some(&c.peer))).await;
    assert_invalid(&response, "token signing key unknown", &rotated);
    assert_eq!(fetcher.fetches(), 2);

    // Published: the next request refreshes and is let through.
    fetcher.serve(Ok(issuer.jwks()));
    let response = send(&layer, request(Some(&rotated), Some(&c.peer))).await;
    assert_eq!(response.body(), "hello bob");
    assert_eq!(fetcher.fetches(), 3);

    // After a refresh, the scope check still applies.
    issuer.add_key("k3", Algorithm::ES256).unwrap();
    fetcher.serve(Ok(issuer.jwks()));
    let k3 = issuer.token().key("k3").audience(AUDIENCE).sign().unwrap();
    let response = send(&layer, request(Some(&k3), Some(&c.peer))).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn rejections_carry_the_typed_cause() {
    let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
    let c = caller();
    let layer = JwtLayer::new(validator(&issuer).build().unwrap()).require_scope("orders:write");
    let t = || issuer.token().audience(AUDIENCE).subject("alice");
    let cause = |response: &Response<String>| {
        let rejection = response.extensions().get::<Rejection>().unwrap();
        (
            rejection.kind(),
            rejection.token_error(),
            rejection.missing_scope().map(str::to_owned),
            rejection.deny_reason(),
        )
    };

    let response = send(&layer, request(None, Some(&c.peer))).await;
    assert_eq!(
        cause(&response),
        (
            RejectionKind::InvalidToken,
            Some(TokenErrorKind::Missing),
            None,
            None
        )
    );
    let expired = t()
        .expires_at(SystemTime::now() - Duration::from_secs(60))
        .sign()
        .unwrap();
    let response = send(&layer, request(Some(&expired), Some(&c.peer))).await;
    assert_eq!(
        cause(&response),
        (
            RejectionKind::InvalidToken,
            Some(TokenErrorKind::Expired),
            None,
            None
        )
    );
    let unscoped = t().scope("orders:read").sign().unwrap();
    let response = send(&layer, request(Some(&unscoped), Some(&c.peer))).await;
    assert_eq!(
        cause(&response),
        (
            RejectionKind::InsufficientScope,
            None,
            Some("orders:write".to_owned()),
            None
        )
    );
    let response = send(&layer, request(Some(&unscoped), None)).await;
    assert_eq!(
        cause(&response),
        (RejectionKind::MissingPeerIdentity, None, None, None)
    );
}

/// Polled again after it returned, the future panics naming itself: after a rejection, after
/// the inner service answered, and after waiting for a key refresh.
#[tokio::test]
async fn a_response_future_polled_after_completion_panics() {
    const MESSAGE: &str = "`layer::jwt::ResponseFuture` polled after completion";
    let mut issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
    let c = caller();
    let layer = JwtLayer::new(validator(&issuer).build().unwrap());
    let good = issuer
        .token()
        .audience(AUDIENCE)
        .subject("alice")
        .sign()
        .unwrap();
    for request in [
        request(None, Some(&c.peer)),
        request(Some(&good), Some(&c.peer)),
    ] {
        let mut service = layer.layer(tower::service_fn(handler));
        within(service.ready()).await.unwrap();
        let message = within(second_poll_panic(service.call(request))).await;
        assert_eq!(message, MESSAGE);
    }

    let fetcher = TestFetcher::new(issuer.jwks());
    let refreshing = refreshing_layer(&fetcher).await;
    issuer.add_key("k2", Algorithm::ES256).unwrap();
    let rotated = issuer.token().key("k2").audience(AUDIENCE).sign().unwrap();
    for publish in [false, true] {
        if publish {
            fetcher.serve(Ok(issuer.jwks()));
        }
        let mut service = refreshing.layer(tower::service_fn(handler));
        within(service.ready()).await.unwrap();
        let future = service.call(request(Some(&rotated), Some(&c.peer)));
        assert!(format!("{future:?}").contains("refreshing keys"));
        let message = within(second_poll_panic(future)).await;
        assert_eq!(message, MESSAGE);
    }
    assert_eq!(fetcher.fetches(), 3);
}

/// The header may be longer than the token limit by "Bearer" and spaces, 16 bytes in all:
/// a header of exactly the limit plus 16 reaches the validator, one byte more is refused as
/// too large whatever it holds.
#[tokio::test]
async fn header_size_boundary_is_exact() {
    let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
    let c = caller();
    let token = issuer
        .token()
        .audience(AUDIENCE)
        .subject("alice")
        .claim("pad", json!("p".repeat(300)))
        .sign()
        .unwrap();
    let layer = JwtLayer::new(
        validator(&issuer)
            .max_token_size(token.len())
            .build()
            .unwrap(),
    );
    let with_header = |value: String| {
        let mut r = request(None, Some(&c.peer));
        r.headers_mut()
            .insert(header::AUTHORIZATION, value.parse().unwrap());
        r
    };
    let at_limit = format!("Bearer {token}{}", " ".repeat(9));
    assert_eq!(at_limit.len(), token.len() + 16);
    let response = send(&layer, with_header(at_limit)).await;
    assert_eq!(response.body(), "hello alice");
    let over = format!("Bearer {token}{}", " ".repeat(10));
    assert_invalid(
        &send(&layer, with_header(over)).await,
        "token too large",
        &token,
    );
}

/// The layer is ready only when the inner service is (back-pressure passes through), and
/// the Debug forms show the validator and the required scopes.
#[tokio::test]
async fn readiness_is_the_inner_services_and_debug_forms() {
    use crate::layer::test_support::{NeverReady, is_ready};

    let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
    let c = caller();
    let layer = JwtLayer::new(validator(&issuer).build().unwrap()).require_scope("read");
    let mut never = layer.layer(NeverReady);
    assert!(!is_ready::<_, Request<()>>(&mut never).await);
    assert!(is_ready(&mut layer.layer(tower::service_fn(handler))).await);

    let debug = format!("{layer:?}");
    assert!(
        debug.starts_with("JwtLayer { validator: JwtValidator {"),
        "{debug}"
    );
    assert!(debug.ends_with(r#"scopes: ["read"], .. }"#), "{debug}");
    assert_eq!(
        format!("{never:?}"),
        r#"Jwt { inner: NeverReady, scopes: ["read"], .. }"#
    );
    let future = never.call(request(None, Some(&c.peer)));
    assert_eq!(
        format!("{future:?}"),
        r#"ResponseFuture { state: "rejected" }"#
    );
    let token = issuer
        .token()
        .audience(AUDIENCE)
        .scope("read")
        .sign()
        .unwrap();
    let future = never.call(request(Some(&token), Some(&c.peer)));
    assert_eq!(
        format!("{future:?}"),
        r#"ResponseFuture { state: "called" }"#
    );
}
