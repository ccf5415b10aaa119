//! JWT-SVIDs from the Workload API end to end over mutual TLS: the testkit's Workload API server
//! mints the client's JWT-SVIDs and streams the JWT bundles the server validates them with
//! (axum + JwtLayer on the server; JwtSvidProvider + CachedTokenProvider + ClientTokenLayer on
//! the client's hyper connector).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secure_channel::jwt::{
    Algorithm, BearerToken, CachedTokenProvider, JwtSvidSource, JwtSvidSourceError, JwtValidator,
    TokenProvider, VerifiedClaims,
};
use secure_channel::layer::client_token::ClientTokenLayer;
use secure_channel::layer::jwt::JwtLayer;
use secure_channel::testkit::{DevCa, TokenIssuer, WorkloadApiServer};
use secure_channel::{
    ConfigError, MemorySource, PeerIdentity, SecureChannel, SecureConnector, WorkloadApi,
    WorkloadApiError,
};
use support::*;
use tokio::net::TcpListener;
use tower::ServiceExt;

const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/web";
/// The audience of the server's JWT-SVIDs: its own SPIFFE ID.
const AUDIENCE: &str = SERVER_ID;

fn issuer(kid: &str) -> TokenIssuer {
    TokenIssuer::new("spire", kid, Algorithm::ES256).unwrap()
}

/// One trust domain: a Workload API server (the client workload's agent: its X.509-SVID, its
/// JWT-SVIDs, the trust domain's JWT bundle), an axum server validating JWT-SVIDs with bundles
/// followed from that Workload API, and a client channel whose identity comes from it.
struct Setup {
    agent: WorkloadApiServer,
    addr: SocketAddr,
    /// The server's bundle follower.
    server_jwt: JwtSvidSource,
    /// The client's JWT-SVID source.
    client_jwt: JwtSvidSource,
    client: Client<SecureConnector, Empty<Bytes>>,
    _server_source: MemorySource,
}

async fn setup() -> Setup {
    init_tracing();
    let ca = DevCa::new("example.org").unwrap();
    let (client_svid, _) = ca.workload_api_response(CLIENT_ID).unwrap();
    let agent = within(WorkloadApiServer::start(client_svid)).await.unwrap();
    agent.set_jwt_authority("example.org", issuer("k1"));

    // The server: X.509 from memory, JWT bundles from the Workload API.
    let server_source = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let server = SecureChannel::builder(&server_source)
        .allow_client(CLIENT_ID)
        .build()
        .unwrap();
    let server_jwt = within(
        JwtSvidSource::builder()
            .endpoint(agent.endpoint())
            .initial_timeout(STEP)
            .connect(),
    )
    .await
    .unwrap();
    let validator = JwtValidator::jwt_svids(AUDIENCE)
        .key_source(server_jwt.key_source())
        .require_subject_matches_peer()
        .build()
        .unwrap();
    let routes = Router::new().route(
        "/whoami",
        get(|claims: VerifiedClaims, peer: PeerIdentity| async move {
            let audiences: Vec<&str> = claims.audiences().collect();
            format!(
                "sub={} spiffe_id={} aud={} peer={}",
                claims.subject().unwrap_or("-"),
                claims
                    .spiffe_id()
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                audiences.join(","),
                peer.spiffe_id()
            )
        }),
    );
    let listener = server
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move {
        secure_channel::integration::axum::serve(listener, routes)
            .jwt(JwtLayer::new(validator))
            .await
    });

    // The client: X.509 and JWT-SVIDs from the Workload API, with one builder.
    let (client_source, client_jwt) = within(
        WorkloadApi::builder()
            .endpoint(agent.endpoint())
            .initial_timeout(STEP)
            .jwt_fetch_timeout(STEP)
            .connect(),
    )
    .await
    .unwrap()
    .into_parts();
    let channel = SecureChannel::builder(client_source)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build(channel.connector());

    Setup {
        agent,
        addr,
        server_jwt,
        client_jwt,
        client,
        _server_source: server_source,
    }
}

/// GET /whoami through `layer`: (status, WWW-Authenticate, body).
async fn call(s: &Setup, layer: &ClientTokenLayer) -> (u16, Option<String>, String) {
    let request = http::Request::get(format!("https://{}/whoami", s.addr))
        .body(Empty::new())
        .unwrap();
    let service = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(s.client.clone());
    let response = within(service.oneshot(request)).await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        challenge,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn with_token(token: &BearerToken) -> ClientTokenLayer {
    ClientTokenLayer::new(token.clone())
}

fn assert_invalid_token(status: u16, challenge: Option<String>, body: &str) {
    assert_eq!(status, 401, "{body}");
    let challenge = challenge.unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn jwt_svid_from_the_workload_api_reaches_the_handler_and_is_cached() {
    let s = setup().await;
    let layer = ClientTokenLayer::provider(CachedTokenProvider::new(
        s.client_jwt.token_provider(AUDIENCE),
    ));
    for _ in 0..3 {
        let (status, _, body) = call(&s, &layer).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            format!("sub={CLIENT_ID} spiffe_id={CLIENT_ID} aud={AUDIENCE} peer={CLIENT_ID}")
        );
    }
    assert_eq!(
        s.agent.jwt_svid_calls(),
        1,
        "the cached JWT-SVID served every request"
    );
    assert_eq!(s.agent.refused_calls(), 0);

    // Without the cache, every request fetches.
    let uncached = ClientTokenLayer::provider(s.client_jwt.token_provider(AUDIENCE));
    for _ in 0..2 {
        assert_eq!(call(&s, &uncached).await.0, 200);
    }
    assert_eq!(s.agent.jwt_svid_calls(), 3);
}

#[tokio::test]
async fn jwt_svid_for_another_audience_or_from_an_unpublished_key_is_refused() {
    let s = setup().await;
    let other =
        ClientTokenLayer::provider(s.client_jwt.token_provider("spiffe://example.org/payments"));
    let (status, challenge, body) = call(&s, &other).await;
    assert_invalid_token(status, challenge, &body);
    assert!(body.contains("audience"), "{body}");

    // Same kid, same claims, but a key the trust domain's bundle does not hold: refused, so
    // the keys come from the followed bundle and nowhere else.
    let forged = issuer("k1")
        .token()
        .subject(CLIENT_ID)
        .audience(AUDIENCE)
        .typ("JWT")
        .sign()
        .unwrap();
    let (status, challenge, body) = call(&s, &with_token(&BearerToken::new(forged).unwrap())).await;
    assert_invalid_token(status, challenge, &body);

    // No token at all.
    let request = http::Request::get(format!("https://{}/whoami", s.addr))
        .body(Empty::new())
        .unwrap();
    let response = within(s.client.request(request)).await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn rotated_jwt_authority_is_followed_and_removed_keys_are_refused() {
    let s = setup().await;
    let provider = s.client_jwt.token_provider(AUDIENCE);
    let before = within(provider.token()).await.unwrap();
    assert_eq!(call(&s, &with_token(&before)).await.0, 200);

    // Rotate the signing key and the bundle: k2 replaces k1.
    let mut revisions = s.server_jwt.key_source().subscribe();
    s.agent.set_jwt_authority("example.org", issuer("k2"));
    within(revisions.changed()).await.unwrap();

    let after = within(provider.token()).await.unwrap();
    let (status, _, body) = call(&s, &with_token(&after)).await;
    assert_eq!(status, 200, "a token of the new key validates: {body}");

    // The token signed with the removed key is refused, even though it validated (and was
    // cached by the validator) before and has not expired.
    let (status, challenge, body) = call(&s, &with_token(&before)).await;
    assert_invalid_token(status, challenge, &body);
    assert!(before.expires_at().unwrap() > SystemTime::now());
}

#[tokio::test]
async fn unusable_bundle_update_keeps_the_last_good_bundle() {
    let s = setup().await;
    let token = within(s.client_jwt.token_provider(AUDIENCE).token())
        .await
        .unwrap();
    assert_eq!(call(&s, &with_token(&token)).await.0, 200);

    // The agent sends a bundle whose only key cannot verify anything (a symmetric key).
    let keys = s.server_jwt.key_source();
    let mut failures = keys.subscribe_failed_reloads();
    s.agent.set_jwt_bundle(
        "example.org",
        r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#,
    );
    within(failures.changed()).await.unwrap();
    assert_eq!(keys.failed_reloads(), 1);

    let (status, _, body) = call(&s, &with_token(&token)).await;
    assert_eq!(status, 200, "the last good bundle still validates: {body}");
}

#[tokio::test]
async fn cached_jwt_svid_is_refreshed_before_it_expires() {
    let s = setup().await;
    s.agent.set_jwt_svid_lifetime(Duration::from_secs(4));
    let cached = CachedTokenProvider::new(s.client_jwt.token_provider(AUDIENCE))
        .refresh_before(Duration::from_secs(1));

    let first = within(cached.token()).await.unwrap();
    let first_expiry = first.expires_at().unwrap();
    assert!(first_expiry > SystemTime::now());
    let again = within(cached.token()).await.unwrap();
    assert_eq!(again.expires_at(), Some(first_expiry));
    assert_eq!(
        s.agent.jwt_svid_calls(),
        1,
        "the second call was served from the cache"
    );

    // Poll the cache (bounded) until it fetches a new token: that must happen before the
    // first one expires.
    let refreshed = within(async {
        loop {
            let token = cached.token().await.unwrap();
            if token.expires_at() != Some(first_expiry) {
                return (token, SystemTime::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (refreshed, at) = refreshed;
    assert!(
        at < first_expiry,
        "refreshed at {at:?}, after the cached token expired at {first_expiry:?}"
    );
    assert!(refreshed.expires_at().unwrap() > first_expiry);
    assert_eq!(s.agent.jwt_svid_calls(), 2, "exactly one refresh");

    let (status, _, body) = call(&s, &with_token(&refreshed)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn connect_without_jwt_bundles_times_out() {
    let ca = DevCa::new("example.org").unwrap();
    let (svid, _) = ca.workload_api_response(CLIENT_ID).unwrap();
    let agent = within(WorkloadApiServer::start(svid)).await.unwrap();
    let error = within(
        JwtSvidSource::builder()
            .endpoint(agent.endpoint())
            .initial_timeout(Duration::from_millis(500))
            .connect(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, JwtSvidSourceError::InitialTimeout { .. }),
        "{error}"
    );
    assert!(error.to_string().contains(&agent.endpoint()), "{error}");
}

/// One builder for both halves: with no agent at the endpoint it fails, naming the endpoint,
/// within the initial timeout.
#[tokio::test]
async fn one_workload_api_builder_fails_clearly_without_an_agent() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unix:{}", dir.path().join("missing.sock").display());
    let error = within(
        WorkloadApi::builder()
            .endpoint(endpoint.clone())
            .initial_timeout(Duration::from_millis(300))
            .connect(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            WorkloadApiError::X509(ConfigError::WorkloadApi { .. }) | WorkloadApiError::Jwt(_)
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains(&endpoint), "{error}");
}
