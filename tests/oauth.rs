//! The OAuth 2.0 clients against a token endpoint in the test (a hyper service over this
//! crate's listener): every refusal reason, the request they send, caching, discovery, and the
//! token endpoint's identity checked by SPIFFE ID and by WebPKI host name. The real
//! authorization server (Keycloak) is tests/keycloak.rs's, run by interop/keycloak.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use secure_channel::jwt::{Algorithm, TokenProvider, TokenProviderError};
use secure_channel::oauth::{
    AuthorizationServer, ClientAuth, ClientCredentials, ErrorCode, OAuthConfigError, SubjectToken,
    SubjectTokenError, TokenExchange, TokenExchangeBuilder, TokenRequestError,
    TokenRequestErrorKind,
};
use secure_channel::testkit::{DevCa, IssuedSvid, TokenIssuer};
use secure_channel::transport::WebPkiConnector;
use secure_channel::{
    ConnectionErrorKind, MemorySource, PeerIdentity, SecureChannel, SecureConnector,
};
use support::within;
use tokio::net::TcpListener;

const AS_ID: &str = "spiffe://example.org/as";
const CLIENT_ID: &str = "spiffe://example.org/orders";
const ISSUER_PATH: &str = "/realms/test";

/// One request the endpoint received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    caller: String,
    form: Vec<(String, String)>,
}

impl Seen {
    fn param(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

type Body = Either<Full<Bytes>, Unsized>;

/// What the endpoint answers.
#[derive(Clone)]
enum Answer {
    Json(StatusCode, String),
    /// A body of this many bytes with no length announced (chunked).
    UnsizedBody(usize),
    /// Never answers.
    Hang,
    /// Reports the request on the gate, then answers (a JSON answer) once the gate lets it.
    Gated(Arc<Gate>, StatusCode, String),
}

/// Holds answers back until the test lets them go.
struct Gate {
    arrived: tokio::sync::mpsc::UnboundedSender<()>,
    release: tokio::sync::Semaphore,
}

impl Gate {
    fn new() -> (Arc<Self>, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
        let gate = Self {
            arrived,
            release: tokio::sync::Semaphore::new(0),
        };
        (Arc::new(gate), arrivals)
    }
}

/// A body whose size is unknown beforehand.
struct Unsized(Option<Bytes>);

impl http_body::Body for Unsized {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }
}

type Script = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// The authorization server of a test: its PKI, token issuer, address and what it saw.
struct TestAs {
    ca: DevCa,
    issuer: TokenIssuer,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _source: MemorySource,
}

impl TestAs {
    /// Serves on 127.0.0.1 as SPIFFE workload `AS_ID` (its SVID also names `localhost`, for
    /// WebPKI clients); answers per `script`.
    async fn start(script: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        support::init_tracing();
        let ca = DevCa::new("example.org").unwrap();
        let svid = ca.svid(AS_ID).dns_name("localhost").issue().unwrap();
        let source = support::source_of(&ca, &svid);
        let channel = SecureChannel::builder(&source)
            .allow_client("spiffe://example.org")
            .build()
            .unwrap();
        let listener = channel
            .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
            .unwrap();
        let addr = listener.local_addr();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let log = seen.clone();
        let service = tower::service_fn(move |request: Request<Incoming>| {
            let (log, script) = (log.clone(), script.clone());
            async move {
                let caller = request
                    .extensions()
                    .get::<PeerIdentity>()
                    .map(|p| p.spiffe_id().to_string())
                    .unwrap_or_default();
                let method = request.method().to_string();
                let path = request.uri().path().to_owned();
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let form = form_urlencoded::parse(&body).into_owned().collect();
                let seen = Seen {
                    method,
                    path,
                    caller,
                    form,
                };
                log.lock().unwrap().push(seen.clone());
                let response: Response<Body> = match script(&seen) {
                    Answer::Json(status, json) => Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Either::Left(Full::new(Bytes::from(json))))
                        .unwrap(),
                    Answer::UnsizedBody(size) => {
                        Response::new(Either::Right(Unsized(Some(Bytes::from(vec![b' '; size])))))
                    }
                    Answer::Hang => std::future::pending().await,
                    Answer::Gated(gate, status, json) => {
                        let _ = gate.arrived.send(());
                        gate.release.acquire().await.unwrap().forget();
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Either::Left(Full::new(Bytes::from(json))))
                            .unwrap()
                    }
                };
                Ok::<_, Infallible>(response)
            }
        });
        tokio::spawn(secure_channel::integration::hyper::serve(listener, service).into_future());
        let issuer = TokenIssuer::new(
            format!("https://localhost:{}{ISSUER_PATH}", addr.port()),
            "k1",
            Algorithm::ES256,
        )
        .unwrap();
        Self {
            ca,
            issuer,
            addr,
            seen,
            _source: source,
        }
    }

    fn issuer_url(&self) -> String {
        format!("https://localhost:{}{ISSUER_PATH}", self.addr.port())
    }

    fn token_endpoint(&self) -> String {
        format!("https://localhost:{}/token", self.addr.port())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// A client workload of example.org.
    fn client(&self, id: &str) -> Client {
        let svid = self.ca.svid(id).issue().unwrap();
        let source = support::source_of(&self.ca, &svid);
        let channel = SecureChannel::builder(&source).build().unwrap();
        Client {
            svid,
            channel,
            _source: source,
        }
    }
}

struct Client {
    svid: IssuedSvid,
    channel: SecureChannel,
    _source: MemorySource,
}

impl Client {
    /// The SPIFFE connector expecting the authorization server at `addr` to be `AS_ID`.
    fn spiffe(&self, addr: SocketAddr) -> SecureConnector {
        self.channel
            .connector()
            .expect_server_at(&format!("localhost:{}", addr.port()), AS_ID)
            .unwrap()
    }

    /// The WebPKI connector trusting `ca`'s root, presenting this client's SVID.
    fn webpki(&self, ca: &DevCa) -> WebPkiConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.root_certificate().clone()).unwrap();
        self.channel
            .presenting_svid(WebPkiConnector::with_roots(roots).unwrap())
    }
}

/// A token answer carrying `token`.
fn token_answer(token: &str) -> Answer {
    Answer::Json(
        StatusCode::OK,
        serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": 300})
            .to_string(),
    )
}

fn bound_token(issuer: &TokenIssuer, svid: &IssuedSvid) -> String {
    issuer
        .token()
        .audience("api")
        .subject("orders")
        .bound_to_svid(svid)
        .sign()
        .unwrap()
}

fn given(s: &TestAs) -> AuthorizationServer {
    AuthorizationServer::with_token_endpoint(&s.token_endpoint()).unwrap()
}

fn provider(
    s: &TestAs,
    client: &Client,
    configure: impl FnOnce(
        secure_channel::oauth::ClientCredentialsBuilder,
    ) -> secure_channel::oauth::ClientCredentialsBuilder,
) -> ClientCredentials<SecureConnector> {
    configure(ClientCredentials::builder(
        &given(s),
        "orders",
        ClientAuth::TlsClientAuth,
        client.channel.source(),
    ))
    .build(client.spiffe(s.addr))
    .unwrap()
}

fn request_error(error: TokenProviderError) -> TokenRequestError {
    *error
        .downcast::<TokenRequestError>()
        .unwrap_or_else(|e| panic!("not a TokenRequestError: {e}"))
}

/// Fetches with `provider` and returns the error's kind.
async fn failure(provider: &impl TokenProvider) -> TokenRequestError {
    request_error(within(provider.token()).await.unwrap_err())
}

/// A bound token from the endpoint over mTLS: the request is RFC 6749 4.4 with RFC 8705
/// client authentication (client_id, the SVID as certificate, no secret), with the scopes,
/// audiences and resources asked for; the token is cached.
#[tokio::test]
async fn client_credentials_request_and_cache() {
    let svid_slot: Arc<Mutex<Option<String>>> = Arc::default();
    let slot = svid_slot.clone();
    let s = TestAs::start(move |_| token_answer(slot.lock().unwrap().as_deref().unwrap())).await;
    let client = s.client(CLIENT_ID);
    *svid_slot.lock().unwrap() = Some(bound_token(&s.issuer, &client.svid));
    let tokens = provider(&s, &client, |b| {
        b.scope("orders:read")
            .scope("orders:write")
            .audience("payments")
            .resource("https://payments.example.org/")
    });

    // Concurrent callers share one request, later ones use the cached token.
    let (a, b) = tokio::join!(within(tokens.token()), within(tokens.token()));
    let (a, b) = (a.unwrap(), b.unwrap());
    within(tokens.token()).await.unwrap();
    assert_eq!(a.expires_at(), b.expires_at());
    let seen = s.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let request = &seen[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/token")
    );
    assert_eq!(
        request.caller, CLIENT_ID,
        "the SVID is the client certificate"
    );
    assert_eq!(request.param("grant_type"), ["client_credentials"]);
    assert_eq!(request.param("client_id"), ["orders"]);
    assert_eq!(request.param("scope"), ["orders:read orders:write"]);
    assert_eq!(request.param("audience"), ["payments"]);
    assert_eq!(request.param("resource"), ["https://payments.example.org/"]);
    assert!(request.param("client_secret").is_empty());
}

/// The endpoint reached through WebPKI (host name `localhost` against the given roots), the
/// SVID still presented as client certificate.
#[tokio::test]
async fn webpki_endpoint_with_svid_client_certificate() {
    let slot: Arc<Mutex<Option<String>>> = Arc::default();
    let answer = slot.clone();
    let s = TestAs::start(move |_| token_answer(answer.lock().unwrap().as_deref().unwrap())).await;
    let client = s.client(CLIENT_ID);
    *slot.lock().unwrap() = Some(bound_token(&s.issuer, &client.svid));
    let tokens = ClientCredentials::builder(
        &given(&s),
        "orders",
        ClientAuth::SelfSignedTlsClientAuth,
        client.channel.source(),
    )
    .build(client.webpki(&s.ca))
    .unwrap();
    within(tokens.token()).await.unwrap();
    assert_eq!(s.seen()[0].caller, CLIENT_ID);

    // Roots that do not include the server's CA: no connection, nothing sent.
    let other = DevCa::new("example.org").unwrap();
    let untrusting = ClientCredentials::builder(
        &given(&s),
        "orders",
        ClientAuth::TlsClientAuth,
        client.channel.source(),
    )
    .build(client.webpki(&other))
    .unwrap();
    assert_eq!(
        failure(&untrusting).await.kind(),
        TokenRequestErrorKind::Connect
    );
    assert_eq!(s.seen().len(), 1);
}

/// A token endpoint with another SPIFFE ID than expected is refused before anything is sent.
#[tokio::test]
async fn wrong_token_endpoint_identity() {
    let s = TestAs::start(|_| token_answer("never")).await;
    let client = s.client(CLIENT_ID);
    let connector = client
        .channel
        .connector()
        .expect_server_at(
            &format!("localhost:{}", s.addr.port()),
            "spiffe://example.org/impostor-check",
        )
        .unwrap();
    let tokens = ClientCredentials::builder(
        &given(&s),
        "orders",
        ClientAuth::TlsClientAuth,
        client.channel.source(),
    )
    .build(connector)
    .unwrap();
    let error = failure(&tokens).await;
    assert_eq!(error.kind(), TokenRequestErrorKind::Connect, "{error}");
    assert_eq!(
        error.connection_error_kind(),
        Some(ConnectionErrorKind::PeerRejected),
        "{error}"
    );
    assert!(s.seen().is_empty(), "a request reached the wrong server");
}

/// RFC 6749 section 5.2 errors come back typed; other failures have their own kinds.
#[tokio::test]
async fn error_answers_are_typed() {
    let s = TestAs::start(|seen| match seen.param("scope").first().copied() {
        Some("grant") => Answer::Json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_scope","error_description":"no such scope"}"#.into(),
        ),
        Some("client") => Answer::Json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client"}"#.into(),
        ),
        Some("html") => Answer::Json(StatusCode::BAD_GATEWAY, "<html>oops</html>".into()),
        Some("badjson") => Answer::Json(StatusCode::OK, "{not json".into()),
        Some("notoken") => Answer::Json(StatusCode::OK, r#"{"token_type":"Bearer"}"#.into()),
        Some("dpop") => Answer::Json(
            StatusCode::OK,
            r#"{"access_token":"x","token_type":"DPoP"}"#.into(),
        ),
        _ => Answer::Json(StatusCode::INTERNAL_SERVER_ERROR, String::new()),
    })
    .await;
    let client = s.client(CLIENT_ID);
    let fail = |scope: &'static str| {
        let tokens = provider(&s, &client, |b| b.scope(scope).allow_unbound_tokens());
        async move { failure(&tokens).await }
    };

    let error = fail("grant").await;
    assert_eq!(error.kind(), TokenRequestErrorKind::ErrorResponse);
    let response = error.error_response().unwrap();
    assert_eq!(response.code(), ErrorCode::InvalidScope);
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.description(), Some("no such scope"));

    let error = fail("client").await;
    assert_eq!(
        error.error_response().map(|r| r.code()),
        Some(ErrorCode::InvalidClient)
    );

    for (scope, kind) in [
        ("html", TokenRequestErrorKind::UnexpectedStatus),
        ("badjson", TokenRequestErrorKind::InvalidResponse),
        ("notoken", TokenRequestErrorKind::InvalidResponse),
        ("dpop", TokenRequestErrorKind::InvalidResponse),
    ] {
        let error = fail(scope).await;
        assert_eq!(error.kind(), kind, "{scope}: {error}");
        assert!(error.error_response().is_none());
    }
}

/// Answers larger than accepted are refused, announced or not; so is an endpoint that does not
/// answer in time.
#[tokio::test]
async fn oversize_and_slow_answers() {
    let s = TestAs::start(|seen| match seen.param("scope").first().copied() {
        Some("sized") => Answer::Json(StatusCode::OK, " ".repeat(2000)),
        Some("unsized") => Answer::UnsizedBody(2000),
        _ => Answer::Hang,
    })
    .await;
    let client = s.client(CLIENT_ID);
    for scope in ["sized", "unsized"] {
        let tokens = provider(&s, &client, |b| b.scope(scope).max_response_size(1000));
        let error = failure(&tokens).await;
        assert_eq!(
            error.kind(),
            TokenRequestErrorKind::ResponseTooLarge,
            "{scope}: {error}"
        );
    }
    // The same answers are read in full under a higher bound (then they are not JSON).
    let tokens = provider(&s, &client, |b| b.scope("unsized").max_response_size(4000));
    assert_eq!(
        failure(&tokens).await.kind(),
        TokenRequestErrorKind::InvalidResponse
    );

    let tokens = provider(&s, &client, |b| {
        b.scope("hang").timeout(Duration::from_millis(300))
    });
    assert_eq!(
        failure(&tokens).await.kind(),
        TokenRequestErrorKind::Timeout
    );
}

/// By default the token must be bound to the SVID this workload presented.
#[tokio::test]
async fn binding_is_required_by_default() {
    let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let next = tokens.clone();
    let s = TestAs::start(move |_| token_answer(&next.lock().unwrap().remove(0))).await;
    let client = s.client(CLIENT_ID);
    let someone_else = s.ca.svid("spiffe://example.org/other").issue().unwrap();
    let unbound = s.issuer.token().audience("api").sign().unwrap();
    tokens.lock().unwrap().extend([
        bound_token(&s.issuer, &someone_else),
        unbound.clone(),
        "opaque-token".to_owned(),
        unbound,
    ]);
    for what in ["bound to another certificate", "unbound", "opaque"] {
        let provider = provider(&s, &client, |b| b);
        let error = failure(&provider).await;
        assert_eq!(
            error.kind(),
            TokenRequestErrorKind::NotBound,
            "{what}: {error}"
        );
    }
    let lax = provider(&s, &client, |b| b.allow_unbound_tokens());
    within(lax.token()).await.unwrap();
}

/// Discovery: the RFC 8414 location, the OpenID Connect one as fallback, the mTLS alias
/// preferred, the issuer checked, the server's support checked when building.
#[tokio::test]
async fn discovery() {
    let metadata: Arc<Mutex<serde_json::Value>> = Arc::default();
    let served = metadata.clone();
    let s = TestAs::start(move |seen| {
        if seen.path.contains("/.well-known/openid-configuration") {
            Answer::Json(StatusCode::OK, served.lock().unwrap().to_string())
        } else {
            Answer::Json(StatusCode::NOT_FOUND, String::new())
        }
    })
    .await;
    let base = format!("https://localhost:{}", s.addr.port());
    *metadata.lock().unwrap() = serde_json::json!({
        "issuer": s.issuer_url(),
        "token_endpoint": format!("{base}/plain/token"),
        "mtls_endpoint_aliases": {"token_endpoint": format!("{base}/mtls/token")},
        "jwks_uri": format!("{base}/certs"),
        "token_endpoint_auth_methods_supported": ["tls_client_auth", "private_key_jwt"],
        "grant_types_supported": ["client_credentials"],
        "tls_client_certificate_bound_access_tokens": true,
    });
    let client = s.client(CLIENT_ID);
    let server = within(AuthorizationServer::discover(
        &s.issuer_url(),
        client.spiffe(s.addr),
    ))
    .await
    .unwrap();
    let paths: Vec<String> = s.seen().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            format!("/.well-known/oauth-authorization-server{ISSUER_PATH}"),
            format!("{ISSUER_PATH}/.well-known/openid-configuration"),
        ]
    );
    assert_eq!(
        server.token_endpoint().to_string(),
        format!("{base}/mtls/token")
    );
    assert!(server.jwks_fetcher(client.spiffe(s.addr)).is_ok());

    let build = |auth: ClientAuth| {
        ClientCredentials::builder(&server, "orders", auth, client.channel.source())
            .build(client.spiffe(s.addr))
            .map(drop)
    };
    assert!(build(ClientAuth::TlsClientAuth).is_ok());
    assert!(matches!(
        build(ClientAuth::SelfSignedTlsClientAuth),
        Err(OAuthConfigError::Unsupported { .. })
    ));
    let exchange = TokenExchange::builder(
        &server,
        "gateway",
        ClientAuth::TlsClientAuth,
        client.channel.source(),
    )
    .build(client.spiffe(s.addr));
    assert!(
        matches!(exchange, Err(OAuthConfigError::Unsupported { .. })),
        "the grant type is not listed"
    );

    // Metadata naming another issuer is not used.
    metadata.lock().unwrap()["issuer"] = "https://evil.example.org".into();
    let mismatch = within(AuthorizationServer::discover(
        &s.issuer_url(),
        client.spiffe(s.addr),
    ))
    .await;
    assert!(
        matches!(mismatch, Err(OAuthConfigError::IssuerMismatch { .. })),
        "{mismatch:?}"
    );
}

/// Token exchange: the RFC 8693 request, the answer's issued_token_type required, one
/// exchange per subject token while its result is fresh.
#[tokio::test]
async fn token_exchange() {
    let s = TestAs::start(|seen| {
        let subject = seen.param("subject_token")[0];
        let issued = if subject == "no-type" {
            serde_json::Value::Null
        } else {
            "urn:ietf:params:oauth:token-type:access_token".into()
        };
        Answer::Json(
            StatusCode::OK,
            serde_json::json!({
                "access_token": format!("for-{subject}"),
                "token_type": "Bearer",
                "expires_in": 300,
                "issued_token_type": issued,
            })
            .to_string(),
        )
    })
    .await;
    let (_client, exchange) = gateway_exchange(&s, |b| b.request_access_token());

    let alice = SubjectToken::access_token("alice-token");
    within(exchange.exchange(&alice)).await.unwrap();
    within(exchange.provider(alice.clone()).token())
        .await
        .unwrap();
    within(exchange.exchange(&SubjectToken::access_token("bob-token")))
        .await
        .unwrap();
    let seen = s.seen();
    assert_eq!(seen.len(), 2, "alice's second exchange came from the cache");
    let request = &seen[0];
    assert_eq!(
        request.param("grant_type"),
        ["urn:ietf:params:oauth:grant-type:token-exchange"]
    );
    assert_eq!(request.param("client_id"), ["gateway"]);
    assert_eq!(request.param("subject_token"), ["alice-token"]);
    assert_eq!(
        request.param("subject_token_type"),
        ["urn:ietf:params:oauth:token-type:access_token"]
    );
    assert_eq!(
        request.param("requested_token_type"),
        ["urn:ietf:params:oauth:token-type:access_token"]
    );
    assert_eq!(request.param("audience"), ["backend"]);
    assert_eq!(request.caller, "spiffe://example.org/gateway");

    let error = within(exchange.exchange(&SubjectToken::access_token("no-type")))
        .await
        .unwrap_err();
    assert_eq!(
        error.kind(),
        TokenRequestErrorKind::InvalidResponse,
        "{error}"
    );
    assert!(
        !format!("{alice:?}").contains("alice-token"),
        "Debug shows the token"
    );
}

/// The gateway workload and its token exchange at `s` for the audience `backend` (unbound
/// tokens allowed), as `configure` sets it further.
fn gateway_exchange(
    s: &TestAs,
    configure: impl FnOnce(TokenExchangeBuilder) -> TokenExchangeBuilder,
) -> (Client, TokenExchange<SecureConnector>) {
    let client = s.client("spiffe://example.org/gateway");
    let builder = TokenExchange::builder(
        &given(s),
        "gateway",
        ClientAuth::TlsClientAuth,
        client.channel.source(),
    )
    .audience("backend")
    .allow_unbound_tokens();
    let exchange = configure(builder).build(client.spiffe(s.addr)).unwrap();
    (client, exchange)
}

/// The JSON answer of a token exchange issuing `token`.
fn exchanged(token: &str) -> String {
    serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 300,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
    })
    .to_string()
}

/// Concurrent exchanges of one subject token make one request and share its outcome, a
/// failure included (not kept: the next exchange asks again); another subject's exchange does
/// not wait for them.
#[tokio::test]
async fn concurrent_exchanges_of_one_subject_share_one_request() {
    let (gate, mut arrivals) = Gate::new();
    let held = gate.clone();
    let s = TestAs::start(move |seen| match seen.param("subject_token")[0] {
        "alice-token" => Answer::Gated(held.clone(), StatusCode::OK, exchanged("for-alice")),
        "mallory-token" => Answer::Gated(
            held.clone(),
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_grant"}"#.into(),
        ),
        _ => Answer::Json(StatusCode::OK, exchanged("for-bob")),
    })
    .await;
    let (_client, exchange) = gateway_exchange(&s, |b| b);
    let burst = |subject: &str| {
        let subject = SubjectToken::access_token(subject);
        (0..8)
            .map(|_| {
                let (exchange, subject) = (exchange.clone(), subject.clone());
                tokio::spawn(async move { exchange.exchange(&subject).await })
            })
            .collect::<Vec<_>>()
    };

    let alices = burst("alice-token");
    within(arrivals.recv()).await.unwrap();
    // Alice's exchange is held at the server: Bob's goes on meanwhile.
    within(exchange.exchange(&SubjectToken::access_token("bob-token")))
        .await
        .unwrap();
    gate.release.add_permits(1);
    for alice in alices {
        let token = within(alice).await.unwrap().unwrap();
        assert!(token.expires_at().is_some(), "{token:?}");
    }
    assert_eq!(
        s.seen().len(),
        2,
        "one request for alice's burst, one for bob"
    );

    let mallorys = burst("mallory-token");
    within(arrivals.recv()).await.unwrap();
    gate.release.add_permits(1);
    for mallory in mallorys {
        let error = within(mallory).await.unwrap().unwrap_err();
        assert_eq!(
            error.kind(),
            TokenRequestErrorKind::ErrorResponse,
            "{error}"
        );
    }
    assert_eq!(s.seen().len(), 3, "one request for mallory's burst");
    gate.release.add_permits(1);
    within(exchange.exchange(&SubjectToken::access_token("mallory-token")))
        .await
        .unwrap_err();
    assert_eq!(s.seen().len(), 4, "a failure is not kept");
}

/// The subject token is taken only from a request whose token the JWT layer validated.
#[test]
fn subject_token_needs_a_validated_request() {
    let request = Request::get("/")
        .header("authorization", "Bearer user-token")
        .body(())
        .unwrap();
    assert_eq!(
        SubjectToken::from_verified_request(&request).unwrap_err(),
        SubjectTokenError::NotVerified
    );
}

/// Configuration mistakes are refused when building.
#[test]
fn configuration_errors() {
    let ca = DevCa::new("example.org").unwrap();
    let source = MemorySource::new(ca.credentials(CLIENT_ID).unwrap());
    let channel = SecureChannel::builder(&source).build().unwrap();
    let server = AuthorizationServer::with_token_endpoint("https://as.example.org/token").unwrap();
    let build = |f: fn(
        secure_channel::oauth::ClientCredentialsBuilder,
    ) -> secure_channel::oauth::ClientCredentialsBuilder,
                 client_id: &str| {
        f(ClientCredentials::builder(
            &server,
            client_id,
            ClientAuth::TlsClientAuth,
            channel.source(),
        ))
        .build(channel.connector())
        .map(drop)
    };
    assert!(build(|b| b, "orders").is_ok());
    for (what, result) in [
        ("empty client id", build(|b| b, "")),
        ("scope with a space", build(|b| b.scope("a b"), "orders")),
        ("relative resource", build(|b| b.resource("/x"), "orders")),
        (
            "zero timeout",
            build(|b| b.timeout(Duration::ZERO), "orders"),
        ),
        ("zero size", build(|b| b.max_response_size(0), "orders")),
        ("empty audience", build(|b| b.audience(""), "orders")),
    ] {
        assert!(
            matches!(result, Err(OAuthConfigError::InvalidSetting { .. })),
            "{what}: {result:?}"
        );
    }
    assert!(matches!(
        AuthorizationServer::with_token_endpoint("http://as.example.org/token"),
        Err(OAuthConfigError::InvalidEndpoint { .. })
    ));
}
