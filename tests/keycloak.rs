//! Interop with a real OAuth 2.0 authorization server: Keycloak (the version and settings are
//! interop/keycloak.sh's and interop/keycloak/realm.json's).
//!
//! Every test here is ignored: they need the Keycloak that `interop/keycloak.sh` downloads,
//! starts on loopback (HTTPS, client certificates requested and checked against the a.test
//! development CA) and configures (realm `sc`), then runs each case in its own process. Run
//! them with `interop/keycloak.sh`, never with `cargo test -- --ignored`.
//!
//! The environment keycloak.sh sets: `SC_KEYCLOAK_ISSUER` (the realm's issuer URL),
//! `SC_KEYCLOAK_WEB_CA` (the CA of Keycloak's server certificate), `SC_KEYCLOAK_SPIFFE_CA` and
//! `SC_KEYCLOAK_SPIFFE_CA_KEY` (the a.test CA the SVIDs are minted from, here, per test),
//! `SC_KEYCLOAK_USER` and `SC_KEYCLOAK_USER_PASSWORD` (the end user of the token exchange).
//!
//! Keycloak 26 identifies an X.509 client by the subject DN of its certificate (it does not
//! read URI SANs), so each workload's SVID carries a common name registered for its client:
//! `CN=sc-main` for client `sc-main`, `CN=sc-gateway` for `sc-gateway`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secure_channel::jwt::{JwtValidator, KeySource, TokenProvider, VerifiedClaims};
use secure_channel::layer::client_token::ClientTokenLayer;
use secure_channel::layer::jwt::JwtLayer;
use secure_channel::oauth::{
    AuthorizationServer, ClientAuth, ClientCredentials, ErrorCode, OAuthConfigError, SubjectToken,
    TokenExchange, TokenRequestError, TokenRequestErrorKind,
};
use secure_channel::testkit::{DevCa, IssuedSvid};
use secure_channel::transport::WebPkiConnector;
use secure_channel::{
    ConnectionErrorKind, MemorySource, PeerIdentity, SecureChannel, SecureChannelBuilder,
    SecureConnector,
};
use tokio::net::TcpListener;
use tower::ServiceExt;

const MAIN_ID: &str = "spiffe://a.test/rust/main";
const OTHER_ID: &str = "spiffe://a.test/rust/other";
const SERVER_ID: &str = "spiffe://a.test/rust/server";
const FRONT_ID: &str = "spiffe://a.test/rust/front";
const GATEWAY_ID: &str = "spiffe://a.test/rust/gateway";
const BACKEND_ID: &str = "spiffe://a.test/rust/backend";

/// The bound on one step against Keycloak (its first requests on a busy 2-core machine are
/// slow: the JIT is cold).
const KC_STEP: Duration = Duration::from_secs(60);

async fn step<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(KC_STEP, future)
        .await
        .expect("a step against Keycloak timed out")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run interop/keycloak.sh"))
}

fn issuer() -> String {
    env("SC_KEYCLOAK_ISSUER")
}

fn ca() -> DevCa {
    let cert = std::fs::read_to_string(env("SC_KEYCLOAK_SPIFFE_CA")).unwrap();
    let key = std::fs::read_to_string(env("SC_KEYCLOAK_SPIFFE_CA_KEY")).unwrap();
    DevCa::from_pem(&cert, &key).unwrap()
}

/// WebPKI roots: the CA of Keycloak's server certificate.
fn web_roots() -> WebPkiConnector {
    WebPkiConnector::with_ca_file(env("SC_KEYCLOAK_WEB_CA")).unwrap()
}

/// A workload of a.test: its SVID (with `common_name` in the subject, for Keycloak) and channel.
struct Workload {
    svid: IssuedSvid,
    channel: SecureChannel,
    _source: MemorySource,
}

fn workload(
    ca: &DevCa,
    id: &str,
    common_name: Option<&str>,
    configure: impl FnOnce(SecureChannelBuilder) -> SecureChannelBuilder,
) -> Workload {
    let builder = ca.svid(id);
    let builder = match common_name {
        Some(name) => builder.common_name(name),
        None => builder,
    };
    let svid = builder.issue().unwrap();
    let source = support::source_of(ca, &svid);
    let channel = configure(SecureChannel::builder(&source)).build().unwrap();
    Workload {
        svid,
        channel,
        _source: source,
    }
}

/// Keycloak's realm, discovered through `connector`.
async fn discover(connector: WebPkiConnector) -> AuthorizationServer {
    step(AuthorizationServer::discover(&issuer(), connector))
        .await
        .unwrap()
}

/// A validator of Keycloak's access tokens for `audience`, its keys from the realm's metadata.
async fn validator(audience: &str, bound: bool) -> JwtValidator {
    let server = discover(web_roots()).await;
    let keys = step(KeySource::jwks_url(server.jwks_fetcher(web_roots()).unwrap()).start())
        .await
        .unwrap();
    let builder = JwtValidator::access_tokens(audience)
        .issuer(issuer())
        .key_source(keys);
    let builder = if bound {
        builder.require_certificate_binding()
    } else {
        builder
    };
    builder.build().unwrap()
}

/// Serves GET /whoami on 127.0.0.1 with `channel` behind a JWT layer of `validator`: answers
/// "<preferred_username> via <caller's SPIFFE ID>".
async fn serve_whoami(channel: &SecureChannel, validator: JwtValidator) -> SocketAddr {
    let routes = Router::new().route(
        "/whoami",
        get(|claims: VerifiedClaims, peer: PeerIdentity| async move {
            let name = claims
                .claim("preferred_username")
                .and_then(|v| v.as_str())
                .unwrap_or("-")
                .to_owned();
            format!("{name} via {}", peer.spiffe_id())
        }),
    );
    serve(channel, routes, validator).await
}

async fn serve(channel: &SecureChannel, routes: Router, validator: JwtValidator) -> SocketAddr {
    let listener = channel
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move {
        secure_channel::integration::axum::serve(listener, routes)
            .jwt(JwtLayer::new(validator))
            .await
    });
    addr
}

/// GET `url` from `client`'s channel with the tokens of `layer`: status and body.
async fn call(client: &SecureChannel, url: &str, layer: ClientTokenLayer) -> (StatusCode, String) {
    let http = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(client.connector());
    let service = tower::ServiceBuilder::new().layer(layer).service(http);
    let request = http::Request::get(url).body(Empty::new()).unwrap();
    let response = step(service.oneshot(request)).await.unwrap();
    let status = response.status();
    let body = step(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The claims of a JWT, unverified (to look at what Keycloak issued).
fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The text of a bearer token.
async fn token_text(provider: &impl TokenProvider) -> String {
    let token = step(provider.token()).await.unwrap();
    let header = format!("{token:?}");
    assert!(!header.contains("eyJ"), "a token's Debug shows it");
    // The header value is `Bearer <token>`: read it back through a request.
    let request = tower::ServiceBuilder::new()
        .layer(ClientTokenLayer::new(token))
        .service(tower::service_fn(|r: http::Request<()>| async move {
            Ok::<_, std::convert::Infallible>(
                r.headers()[http::header::AUTHORIZATION]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            )
        }));
    let value = request.oneshot(http::Request::new(())).await.unwrap();
    value.strip_prefix("Bearer ").unwrap().to_owned()
}

/// The thumbprint RFC 8705 binds a token to.
fn x5t_s256(svid: &IssuedSvid) -> String {
    use sha2::Digest;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(svid.leaf().as_ref()))
}

/// The end user's access token (password grant of the public client sc-user-app; no client
/// certificate), meant for sc-gateway.
async fn user_token() -> String {
    let http = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(web_roots());
    let form = format!(
        "grant_type=password&client_id=sc-user-app&username={}&password={}",
        env("SC_KEYCLOAK_USER"),
        env("SC_KEYCLOAK_USER_PASSWORD")
    );
    let request = http::Request::post(format!("{}/protocol/openid-connect/token", issuer()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .unwrap();
    let response = step(http.request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = step(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    answer["access_token"].as_str().unwrap().to_owned()
}

/// The client credentials provider of `workload` as Keycloak client `client_id`.
async fn client_credentials(
    workload: &Workload,
    client_id: &str,
) -> ClientCredentials<WebPkiConnector> {
    let connector = workload.channel.presenting_svid(web_roots());
    let server = discover(connector.clone()).await;
    ClientCredentials::builder(
        &server,
        client_id,
        ClientAuth::TlsClientAuth,
        workload.channel.source(),
    )
    .timeout(KC_STEP)
    .build(connector)
    .unwrap()
}

fn request_error(error: &secure_channel::jwt::TokenProviderError) -> &TokenRequestError {
    error
        .downcast_ref::<TokenRequestError>()
        .unwrap_or_else(|| panic!("not a TokenRequestError: {error}"))
}

/// Our workload gets a token bound to its SVID from Keycloak (client credentials, mTLS client
/// authentication) and calls our server with it over mTLS; the server accepts it.
#[tokio::test]
#[ignore = "needs Keycloak: run interop/keycloak.sh"]
async fn bound_token_accepted_by_our_server() {
    support::init_tracing();
    let ca = ca();
    let server = workload(&ca, SERVER_ID, None, |b| b.allow_client(MAIN_ID));
    let addr = serve_whoami(&server.channel, validator(SERVER_ID, true).await).await;
    let main = workload(&ca, MAIN_ID, Some("sc-main"), |b| {
        b.expect_server(SERVER_ID)
    });
    let tokens = client_credentials(&main, "sc-main").await;

    let token = token_text(&tokens).await;
    let claims = claims_of(&token);
    assert_eq!(claims["cnf"]["x5t#S256"], x5t_s256(&main.svid), "{claims}");
    assert_eq!(claims["azp"], "sc-main");
    // Cached: the same token again, without another request.
    assert_eq!(token_text(&tokens).await, token);

    let (status, body) = call(
        &main.channel,
        &format!("https://{addr}/whoami"),
        ClientTokenLayer::provider(tokens),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, format!("service-account-sc-main via {MAIN_ID}"));
}

/// The same token presented by another workload (a valid SVID of the same trust domain, over
/// its own mTLS connection) is refused: it is bound to the first workload's certificate.
#[tokio::test]
#[ignore = "needs Keycloak: run interop/keycloak.sh"]
async fn bound_token_refused_over_another_certificate() {
    support::init_tracing();
    let ca = ca();
    let server = workload(&ca, SERVER_ID, None, |b| {
        b.allow_client(MAIN_ID).allow_client(OTHER_ID)
    });
    let addr = serve_whoami(&server.channel, validator(SERVER_ID, true).await).await;
    let main = workload(&ca, MAIN_ID, Some("sc-main"), |b| {
        b.expect_server(SERVER_ID)
    });
    let token = token_text(&client_credentials(&main, "sc-main").await).await;

    let thief = workload(&ca, OTHER_ID, None, |b| b.expect_server(SERVER_ID));
    let stolen = secure_channel::jwt::BearerToken::new(&token).unwrap();
    let (status, body) = call(
        &thief.channel,
        &format!("https://{addr}/whoami"),
        ClientTokenLayer::new(stolen.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.contains(&token), "the token is echoed");

    // From its own workload, the same token is accepted (the refusal was the binding).
    let (status, body) = call(
        &main.channel,
        &format!("https://{addr}/whoami"),
        ClientTokenLayer::new(stolen),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A gateway takes the end user's token from the request its JWT layer validated, exchanges
/// it (standard token exchange, V2) for a token meant for sc-backend, and calls the backend
/// with it; the backend sees the user.
#[tokio::test]
#[ignore = "needs Keycloak: run interop/keycloak.sh"]
async fn token_exchange_for_downstream_audience() {
    support::init_tracing();
    let ca = ca();
    let backend = workload(&ca, BACKEND_ID, None, |b| b.allow_client(GATEWAY_ID));
    let backend_addr = serve_whoami(&backend.channel, validator("sc-backend", false).await).await;

    let gateway = workload(&ca, GATEWAY_ID, Some("sc-gateway"), |b| {
        b.allow_client(FRONT_ID).expect_server(BACKEND_ID)
    });
    let connector = gateway.channel.presenting_svid(web_roots());
    let server = discover(connector.clone()).await;
    // Keycloak 26.5 does not bind exchanged tokens to the certificate (only tokens of the
    // client credentials and code grants): by default that is refused, typed.
    let bound_only = TokenExchange::builder(
        &server,
        "sc-gateway",
        ClientAuth::TlsClientAuth,
        gateway.channel.source(),
    )
    .audience("sc-backend")
    .timeout(KC_STEP)
    .build(connector.clone())
    .unwrap();
    let user = user_token().await;
    let refused = step(bound_only.exchange(&SubjectToken::access_token(user.clone())))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), TokenRequestErrorKind::NotBound, "{refused}");

    let exchange = TokenExchange::builder(
        &server,
        "sc-gateway",
        ClientAuth::TlsClientAuth,
        gateway.channel.source(),
    )
    .audience("sc-backend")
    .allow_unbound_tokens()
    .timeout(KC_STEP)
    .build(connector)
    .unwrap();
    let exchanged = token_text(&exchange.provider(SubjectToken::access_token(user.clone()))).await;
    let claims = claims_of(&exchanged);
    assert_eq!(claims["aud"], "sc-backend", "{claims}");
    assert_eq!(claims["azp"], "sc-gateway");
    assert_eq!(claims["preferred_username"], "alice");

    #[derive(Clone)]
    struct Hop {
        exchange: TokenExchange<WebPkiConnector>,
        channel: SecureChannel,
        backend: String,
    }
    let hop = Hop {
        exchange,
        channel: gateway.channel.clone(),
        backend: format!("https://{backend_addr}/whoami"),
    };
    let routes = Router::new()
        .route(
            "/hop",
            get(|State(hop): State<Hop>, request: Request| async move {
                let subject = match SubjectToken::from_verified_request(&request) {
                    Ok(subject) => subject,
                    Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                };
                let layer = ClientTokenLayer::provider(hop.exchange.provider(subject));
                let (status, body) = call(&hop.channel, &hop.backend, layer).await;
                (status, body)
            }),
        )
        .with_state(hop);
    let gateway_addr = serve(
        &gateway.channel,
        routes,
        validator("sc-gateway", false).await,
    )
    .await;

    let front = workload(&ca, FRONT_ID, None, |b| b.expect_server(GATEWAY_ID));
    let (status, body) = call(
        &front.channel,
        &format!("https://{gateway_addr}/hop"),
        ClientTokenLayer::new(secure_channel::jwt::BearerToken::new(&user).unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, format!("alice via {GATEWAY_ID}"));
}

/// A client certificate that is not the one registered for the client (another subject DN,
/// same CA) gets Keycloak's `invalid_client`, typed; so does no certificate at all.
#[tokio::test]
#[ignore = "needs Keycloak: run interop/keycloak.sh"]
async fn wrong_client_certificate_is_a_typed_error() {
    support::init_tracing();
    let ca = ca();
    let intruder = workload(&ca, OTHER_ID, Some("intruder"), |b| b);
    let error = step(client_credentials(&intruder, "sc-main").await.token())
        .await
        .unwrap_err();
    let error = request_error(&error);
    assert_eq!(
        error.kind(),
        TokenRequestErrorKind::ErrorResponse,
        "{error}"
    );
    let response = error.error_response().unwrap();
    assert_eq!(response.code(), ErrorCode::InvalidClient, "{response}");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // The registered certificate, but without client authentication on the connection.
    let main = workload(&ca, MAIN_ID, Some("sc-main"), |b| b);
    let server = discover(web_roots()).await;
    let no_certificate = ClientCredentials::builder(
        &server,
        "sc-main",
        ClientAuth::TlsClientAuth,
        main.channel.source(),
    )
    .timeout(KC_STEP)
    .build(web_roots())
    .unwrap();
    let error = step(no_certificate.token()).await.unwrap_err();
    let error = request_error(&error);
    assert_eq!(
        error.error_response().map(|r| r.code()),
        Some(ErrorCode::InvalidClient),
        "{error}"
    );

    // Keycloak does not offer self_signed_tls_client_auth: refused when building.
    let unsupported = ClientCredentials::builder(
        &server,
        "sc-main",
        ClientAuth::SelfSignedTlsClientAuth,
        main.channel.source(),
    )
    .build(web_roots());
    assert!(
        matches!(unsupported, Err(OAuthConfigError::Unsupported { .. })),
        "{unsupported:?}"
    );
}

/// One issuer URL gives the token endpoint (the mTLS alias) and the keys; the issuer must be
/// the one asked for; the token endpoint's identity is checked both ways (WebPKI roots, or a
/// SPIFFE ID Keycloak does not have).
#[tokio::test]
#[ignore = "needs Keycloak: run interop/keycloak.sh"]
async fn discovery_and_validator_keys_from_one_issuer() {
    support::init_tracing();
    let server = discover(web_roots()).await;
    assert_eq!(server.issuer(), Some(issuer().as_str()));
    assert_eq!(
        server.token_endpoint().to_string(),
        format!("{}/protocol/openid-connect/token", issuer())
    );
    assert!(server.jwks_uri().is_some());
    // The keys the validators of the other cases use come from there.
    let _ = validator(SERVER_ID, true).await;

    // Another spelling of the issuer is another issuer (RFC 8414 section 3.3).
    let trailing = step(AuthorizationServer::discover(
        &format!("{}/", issuer()),
        web_roots(),
    ))
    .await;
    assert!(
        matches!(trailing, Err(OAuthConfigError::IssuerMismatch { .. })),
        "{trailing:?}"
    );

    // WebPKI roots that do not include Keycloak's CA: no connection.
    let wrong_roots = WebPkiConnector::with_ca_file(env("SC_KEYCLOAK_SPIFFE_CA")).unwrap();
    match step(AuthorizationServer::discover(&issuer(), wrong_roots)).await {
        Err(OAuthConfigError::Discovery(error)) => {
            assert_eq!(error.kind(), TokenRequestErrorKind::Connect, "{error}")
        }
        other => panic!("discovery through untrusted roots: {other:?}"),
    }

    // Expecting the authorization server to be a SPIFFE workload: Keycloak's certificate is
    // no SVID, refused by the connector.
    let ca = ca();
    let main = workload(&ca, MAIN_ID, Some("sc-main"), |b| b);
    let authority = issuer()
        .strip_prefix("https://")
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let spiffe: SecureConnector = main
        .channel
        .connector()
        .expect_server_at(&authority, "spiffe://a.test/keycloak")
        .unwrap();
    match step(AuthorizationServer::discover(&issuer(), spiffe)).await {
        Err(OAuthConfigError::Discovery(error)) => {
            assert_eq!(error.kind(), TokenRequestErrorKind::Connect, "{error}");
            assert_eq!(
                error.connection_error_kind(),
                Some(ConnectionErrorKind::PeerRejected),
                "{error}"
            );
        }
        other => panic!("discovery of a non-SPIFFE server by SPIFFE ID: {other:?}"),
    }
}
