//! Certificate-bound tokens end to end over mutual TLS (axum + JwtLayer + ClientTokenLayer), and
//! JWK sets fetched over HTTPS with WebPKI and with the SPIFFE connector.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use secure_channel::authz::{Policy, Rule};
use secure_channel::integration::jwks::HttpsJwksFetcher;
use secure_channel::jwt::{
    Algorithm, BearerToken, JwtValidator, KeySource, TokenErrorKind, VerifiedClaims,
};
use secure_channel::layer::authorize::AuthorizeLayer;
use secure_channel::layer::client_token::ClientTokenLayer;
use secure_channel::layer::jwt::JwtLayer;
use secure_channel::layer::{DefaultResponder, Rejection, RejectionResponder};
use secure_channel::testkit::{DevCa, IssuedSvid, TokenIssuer};
use secure_channel::transport::WebPkiConnector;
use secure_channel::{
    Credentials, MemorySource, PeerIdentity, SecureChannel, SecureListener, TrustBundles,
};
use support::*;
use tokio::net::TcpListener;
use tower::ServiceExt;

const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/web";
const OTHER_ID: &str = "spiffe://example.org/other";
const ISSUER: &str = "https://issuer.example.org";
const AUDIENCE: &str = "orders";

struct Setup {
    ca: DevCa,
    issuer: TokenIssuer,
    addr: SocketAddr,
    _server: MemorySource,
}

async fn setup() -> Setup {
    setup_with(|listener, routes, validator| {
        tokio::spawn(async move {
            secure_channel::integration::axum::serve(listener, routes)
                .jwt(JwtLayer::new(validator).require_scope("orders.read"))
                .await
        });
    })
    .await
}

/// The server of [`setup`], served by `serve` from its listener, routes and token validator.
async fn setup_with(serve: impl FnOnce(SecureListener, Router, JwtValidator)) -> Setup {
    init_tracing();
    let ca = DevCa::new("example.org").unwrap();
    let issuer = TokenIssuer::new(ISSUER, "key-1", Algorithm::ES256).unwrap();
    let server = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let channel = SecureChannel::builder(&server)
        .allow_client(CLIENT_ID)
        .allow_client(OTHER_ID)
        .build()
        .unwrap();
    let validator = JwtValidator::access_tokens(AUDIENCE)
        .issuer(ISSUER)
        .key_source(KeySource::from_jwks(issuer.jwks()).unwrap())
        .require_certificate_binding()
        .build()
        .unwrap();
    let routes = Router::new().route(
        "/orders",
        get(|claims: VerifiedClaims, peer: PeerIdentity| async move {
            format!(
                "{} via {}",
                claims.subject().unwrap_or("-"),
                peer.spiffe_id()
            )
        }),
    );
    let listener = channel
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    serve(listener, routes, validator);
    Setup {
        ca,
        issuer,
        addr,
        _server: server,
    }
}

/// A client workload: its SVID, and a hyper client over its channel.
struct Workload {
    svid: IssuedSvid,
    client: Client<secure_channel::SecureConnector, Empty<Bytes>>,
    _source: MemorySource,
}

fn workload(s: &Setup, id: &str) -> Workload {
    let svid = s.ca.svid(id).issue().unwrap();
    let source = MemorySource::new(Credentials::new(
        svid.to_svid().unwrap(),
        TrustBundles::new().with(s.ca.bundle().unwrap()),
    ));
    let channel = SecureChannel::builder(&source)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build(channel.connector());
    Workload {
        svid,
        client,
        _source: source,
    }
}

/// Sends GET /orders through a ClientTokenLayer carrying `token` (if any).
async fn call(
    s: &Setup,
    workload: &Workload,
    token: Option<&str>,
) -> (u16, Option<String>, String) {
    let request = http::Request::get(format!("https://{}/orders", s.addr))
        .body(Empty::new())
        .unwrap();
    let response = match token {
        Some(token) => {
            let service = tower::ServiceBuilder::new()
                .layer(ClientTokenLayer::new(BearerToken::new(token).unwrap()))
                .service(workload.client.clone());
            within(service.oneshot(request)).await.unwrap()
        }
        None => within(workload.client.request(request)).await.unwrap(),
    };
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

#[tokio::test]
async fn bound_token_is_accepted_from_its_certificate_only() {
    let s = setup().await;
    let web = workload(&s, CLIENT_ID);
    let token = s
        .issuer
        .token()
        .audience(AUDIENCE)
        .subject("alice")
        .scope("orders.read")
        .bound_to_svid(&web.svid)
        .sign()
        .unwrap();
    let (status, _, body) = call(&s, &web, Some(&token)).await;
    assert_eq!(
        (status, body.as_str()),
        (200, format!("alice via {CLIENT_ID}").as_str())
    );

    // The same token, stolen by another workload with a valid SVID of its own: refused.
    let thief = workload(&s, OTHER_ID);
    let (status, challenge, body) = call(&s, &thief, Some(&token)).await;
    assert_eq!(status, 401, "{body}");
    let challenge = challenge.unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );
    assert!(
        !body.contains(&token) && !challenge.contains(&token),
        "no token echo"
    );
}

#[tokio::test]
async fn missing_unbound_and_unscoped_tokens_are_refused() {
    let s = setup().await;
    let web = workload(&s, CLIENT_ID);
    // No token at all.
    let (status, challenge, _) = call(&s, &web, None).await;
    assert_eq!(status, 401);
    assert!(challenge.is_some());
    // Binding is required, and this token carries no cnf.
    let unbound = s
        .issuer
        .token()
        .audience(AUDIENCE)
        .subject("alice")
        .scope("orders.read")
        .sign()
        .unwrap();
    assert_eq!(call(&s, &web, Some(&unbound)).await.0, 401);
    // Bound, but without the scope the route requires: 403 insufficient_scope.
    let unscoped = s
        .issuer
        .token()
        .audience(AUDIENCE)
        .subject("alice")
        .bound_to_svid(&web.svid)
        .sign()
        .unwrap();
    let (status, challenge, _) = call(&s, &web, Some(&unscoped)).await;
    assert_eq!(status, 403);
    assert!(
        challenge
            .unwrap()
            .starts_with("Bearer error=\"insufficient_scope\"")
    );
    // Another issuer's key under the same kid.
    let forger = TokenIssuer::new(ISSUER, "key-1", Algorithm::ES256).unwrap();
    let forged = forger
        .token()
        .audience(AUDIENCE)
        .scope("orders.read")
        .bound_to_svid(&web.svid)
        .sign()
        .unwrap();
    assert_eq!(call(&s, &web, Some(&forged)).await.0, 401);
}

/// A plain HTTPS server (no client certificates) serving `body` at every path, with a
/// `Cache-Control` header, on 127.0.0.1: a token issuer's JWKS endpoint.
async fn https_jwks_server(ca: &DevCa, body: String) -> SocketAddr {
    let svid = ca
        .svid("spiffe://example.org/issuer")
        .ip_address(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .issue()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        svid.chain().to_vec(),
        rustls_pki_types::PrivateKeyDer::Pkcs8(svid.key().clone_key()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Bytes::from(body);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_request| {
                    let body = body.clone();
                    async move {
                        let mut response = http::Response::new(Full::new(body));
                        response
                            .headers_mut()
                            .insert(http::header::CACHE_CONTROL, "max-age=300".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn jwks_over_https_with_webpki_roots() {
    let ca = DevCa::new("example.org").unwrap();
    let issuer = TokenIssuer::new(ISSUER, "key-1", Algorithm::EdDSA).unwrap();
    let addr = https_jwks_server(&ca, issuer.jwks()).await;
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("roots.pem");
    std::fs::write(&roots, ca.bundle_pem()).unwrap();

    let uri: http::Uri = format!("https://{addr}/.well-known/jwks.json")
        .parse()
        .unwrap();
    let fetcher =
        HttpsJwksFetcher::new(uri.clone(), WebPkiConnector::with_ca_file(&roots).unwrap());
    let keys = within(KeySource::jwks_url(fetcher).start()).await.unwrap();
    let validator = JwtValidator::access_tokens(AUDIENCE)
        .issuer(ISSUER)
        .key_source(keys)
        .build()
        .unwrap();

    // Validate a token with the fetched keys, for a peer minted by the same CA.
    let peer = peer_identity_of(&ca, CLIENT_ID).await;
    let token = issuer
        .token()
        .audience(AUDIENCE)
        .subject("alice")
        .sign()
        .unwrap();
    let claims = validator.validate(&token, &peer).await.unwrap();
    assert_eq!(claims.subject(), Some("alice"));

    // A server whose certificate does not chain to the given roots: the first fetch fails.
    let other_roots = dir.path().join("other.pem");
    std::fs::write(
        &other_roots,
        DevCa::new("example.org").unwrap().bundle_pem(),
    )
    .unwrap();
    let fetcher = HttpsJwksFetcher::new(uri, WebPkiConnector::with_ca_file(&other_roots).unwrap());
    assert!(within(KeySource::jwks_url(fetcher).start()).await.is_err());
    // Plain http is refused by the WebPKI connector.
    let fetcher = HttpsJwksFetcher::new(
        format!("http://{addr}/").parse().unwrap(),
        WebPkiConnector::with_ca_file(&roots).unwrap(),
    );
    assert!(within(KeySource::jwks_url(fetcher).start()).await.is_err());
}

#[tokio::test]
async fn jwks_from_a_spiffe_issuer_through_the_connector() {
    let ca = DevCa::new("example.org").unwrap();
    let issuer = TokenIssuer::new(ISSUER, "key-1", Algorithm::RS256).unwrap();
    let issuer_source = MemorySource::new(ca.credentials("spiffe://example.org/issuer").unwrap());
    let issuer_channel = SecureChannel::builder(&issuer_source)
        .allow_client(SERVER_ID)
        .build()
        .unwrap();
    let listener = issuer_channel
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let jwks = issuer.jwks();
    let app = Router::new().route("/jwks", get(move || async move { jwks }));
    tokio::spawn(async move { secure_channel::integration::axum::serve(listener, app).await });

    let api_source = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let api = SecureChannel::builder(&api_source).build().unwrap();
    let connector = api
        .connector()
        .expect_server_at(&addr.to_string(), "spiffe://example.org/issuer")
        .unwrap();
    let fetcher = HttpsJwksFetcher::new(format!("https://{addr}/jwks").parse().unwrap(), connector);
    let keys = within(KeySource::jwks_url(fetcher).start()).await.unwrap();
    let validator = JwtValidator::access_tokens(AUDIENCE)
        .issuer(ISSUER)
        .key_source(keys)
        .build()
        .unwrap();
    let peer = peer_identity_of(&ca, CLIENT_ID).await;
    let token = issuer
        .token()
        .audience(AUDIENCE)
        .subject("bob")
        .sign()
        .unwrap();
    assert_eq!(
        validator.validate(&token, &peer).await.unwrap().subject(),
        Some("bob")
    );

    // Expecting another issuer identity: the fetch fails, so does the start.
    let connector = api
        .connector()
        .expect_server_at(&addr.to_string(), "spiffe://example.org/not-the-issuer")
        .unwrap();
    let fetcher = HttpsJwksFetcher::new(format!("https://{addr}/jwks").parse().unwrap(), connector);
    assert!(within(KeySource::jwks_url(fetcher).start()).await.is_err());
}

#[tokio::test]
async fn oversized_tokens_are_refused_while_good_ones_pass() {
    let s = setup().await;
    let web = workload(&s, CLIENT_ID);
    let huge = s
        .issuer
        .token()
        .audience(AUDIENCE)
        .scope("orders.read")
        .claim("padding", serde_json::Value::String("x".repeat(9 * 1024)))
        .bound_to_svid(&web.svid)
        .sign()
        .unwrap();
    assert!(huge.len() > 8 * 1024);
    let (status, challenge, _) = call(&s, &web, Some(&huge)).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().contains("invalid_token"));
    let good = s
        .issuer
        .token()
        .audience(AUDIENCE)
        .subject("alice")
        .scope("orders.read")
        .bound_to_svid(&web.svid)
        .sign()
        .unwrap();
    assert_eq!(call(&s, &web, Some(&good)).await.0, 200);
}

/// A closure answers the rejections of both layers over a real connection, from the typed
/// cause each layer put in the rejection: the token error, the missing scope, the policy's
/// reason.
#[tokio::test]
async fn a_closure_responder_answers_from_the_typed_cause() {
    fn responder(rejection: &Rejection, grpc: bool) -> http::Response<Bytes> {
        let text = match (
            rejection.token_error(),
            rejection.missing_scope(),
            rejection.deny_reason(),
        ) {
            (Some(TokenErrorKind::Expired), _, _) => "renew your token".to_owned(),
            (Some(other), _, _) => format!("token refused: {}", other.as_str()),
            (_, Some(scope), _) => format!("ask for {scope}"),
            (_, _, Some(reason)) => format!("denied: {}", reason.as_str()),
            _ => return DefaultResponder.respond(rejection, grpc),
        };
        let mut response = http::Response::new(Bytes::from(text));
        *response.status_mut() = rejection.status();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        response
    }
    let policy = Policy::builder()
        .rule(
            Rule::allow("web-orders")
                .principal(CLIENT_ID)
                .route(http::Method::GET, "/orders"),
        )
        .build()
        .unwrap();
    let s = setup_with(move |listener, routes, validator| {
        tokio::spawn(async move {
            secure_channel::integration::axum::serve(listener, routes)
                .jwt(
                    JwtLayer::new(validator)
                        .require_scope("orders.read")
                        .responder(|rejection: &Rejection, grpc: bool| responder(rejection, grpc)),
                )
                .authorize(AuthorizeLayer::new(policy).responder(responder))
                .await
        });
    })
    .await;
    let token = |w: &Workload| {
        s.issuer
            .token()
            .audience(AUDIENCE)
            .subject("alice")
            .bound_to_svid(&w.svid)
    };
    let web = workload(&s, CLIENT_ID);
    let other = workload(&s, OTHER_ID);

    let expired = token(&web)
        .scope("orders.read")
        .expires_at(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .sign()
        .unwrap();
    assert_eq!(
        call(&s, &web, Some(&expired)).await,
        (401, None, "renew your token".to_owned())
    );
    let stolen = token(&other).scope("orders.read").sign().unwrap();
    assert_eq!(
        call(&s, &web, Some(&stolen)).await,
        (401, None, "token refused: binding_mismatch".to_owned())
    );
    let unscoped = token(&web).sign().unwrap();
    assert_eq!(
        call(&s, &web, Some(&unscoped)).await,
        (403, None, "ask for orders.read".to_owned())
    );
    let good = token(&other).scope("orders.read").sign().unwrap();
    assert_eq!(
        call(&s, &other, Some(&good)).await,
        (403, None, "denied: no-matching-rule".to_owned())
    );
    let good = token(&web).scope("orders.read").sign().unwrap();
    assert_eq!(
        call(&s, &web, Some(&good)).await,
        (200, None, format!("alice via {CLIENT_ID}"))
    );
}
