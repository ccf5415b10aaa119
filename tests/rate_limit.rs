//! Per-identity rate and concurrency limits end to end over mutual TLS (issue 18): axum served
//! with `integration::axum::serve(..).rate_limit(..)`, limits on policy rules (and their
//! reload from a file), and tonic's RESOURCE_EXHAUSTED.
//!
//! Rates are per hour, so that a second request within a test is refused whatever the
//! machine's speed; slow requests wait on a signal the test gives, never on a sleep.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connect;
use hyper_util::rt::TokioExecutor;
use secure_channel::authz::{Policy, PolicySource};
use secure_channel::layer::authorize::AuthorizeLayer;
use secure_channel::layer::rate_limit::{Limit, Rate, RateLimitLayer};
use secure_channel::testkit::DevCa;
use secure_channel::testkit::whoami::WhoAmIService;
use secure_channel::{MemorySource, SecureChannel};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

const SERVER_ID: &str = "spiffe://example.org/api";
const WEB: &str = "spiffe://example.org/web";
const OPS: &str = "spiffe://example.org/ops";
const BATCH_A: &str = "spiffe://example.org/batch/a";
const BATCH_B: &str = "spiffe://example.org/batch/b";

/// A server of its own CA admitting every caller of `example.org`.
struct Server {
    ca: DevCa,
    _source: MemorySource,
    addr: std::net::SocketAddr,
}

/// Starts `serve` (given the listener) on 127.0.0.1.
async fn start<F, Fut>(serve: F) -> Server
where
    F: FnOnce(secure_channel::SecureListener) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let ca = DevCa::new("example.org").unwrap();
    let source = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let channel = SecureChannel::builder(&source)
        .allow_client("spiffe://example.org")
        .build()
        .unwrap();
    let listener = channel
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(serve(listener));
    Server {
        ca,
        _source: source,
        addr,
    }
}

/// A client of `caller` (one connection pool: HTTP/2, so concurrent requests share it).
struct Caller {
    client: Client<secure_channel::SecureConnector, Empty<Bytes>>,
    _source: MemorySource,
    base: String,
}

impl Caller {
    fn new(server: &Server, caller: &str) -> Self {
        let source = MemorySource::new(server.ca.credentials(caller).unwrap());
        let channel = SecureChannel::builder(&source)
            .expect_server(SERVER_ID)
            .build()
            .unwrap();
        let client = Client::builder(TokioExecutor::new())
            .build::<_, Empty<Bytes>>(channel.connector().http2_only());
        Self {
            client,
            _source: source,
            base: format!("https://{}", server.addr),
        }
    }

    /// The status, `Retry-After` and body of `GET path`.
    async fn get(&self, path: &str) -> (u16, Option<String>, String) {
        fetch(&self.client, &format!("{}{path}", self.base)).await
    }
}

async fn fetch<C>(client: &Client<C, Empty<Bytes>>, uri: &str) -> (u16, Option<String>, String)
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let response = within(client.get(uri.parse().unwrap())).await.unwrap();
    response_parts(response, http::header::RETRY_AFTER).await
}

fn routes() -> Router {
    Router::new().route(
        "/hello",
        get(|peer: secure_channel::PeerIdentity| async move {
            format!("hello {}", peer.spiffe_id())
        }),
    )
}

#[tokio::test]
async fn a_caller_over_its_limit_gets_429_and_another_is_unaffected() {
    init_tracing();
    let limits = RateLimitLayer::builder()
        .rate(Rate::per_hour(1))
        .build()
        .unwrap();
    let server = start(|listener| {
        secure_channel::integration::axum::serve(listener, routes())
            .rate_limit(limits)
            .into_future()
    })
    .await;
    let (web, ops) = (Caller::new(&server, WEB), Caller::new(&server, OPS));
    assert_eq!(web.get("/hello").await, (200, None, format!("hello {WEB}")));
    let (status, retry_after, body) = web.get("/hello").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry_after.as_deref(), Some("3600"));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "too_many_requests");
    // The other caller has its own limit.
    assert_eq!(ops.get("/hello").await, (200, None, format!("hello {OPS}")));
    // And a new connection of the first caller is still the same caller.
    let web_again = Caller::new(&server, WEB);
    assert_eq!(web_again.get("/hello").await.0, 429);
}

#[tokio::test]
async fn overrides_and_the_total_limit() {
    init_tracing();
    // Every caller 1/h; batch workloads 3/h; all together 5/h. The Retry-After tells the limit
    // apart: 3600 s (default), 1200 s (batch), 720 s (total).
    let limits = RateLimitLayer::builder()
        .rate(Rate::per_hour(1))
        .limit_for(
            "batch",
            "spiffe://example.org/batch/*",
            Limit::new().rate(Rate::per_hour(3)),
        )
        .total_rate(Rate::per_hour(5))
        .build()
        .unwrap();
    let server = start(|listener| {
        secure_channel::integration::axum::serve(listener, routes())
            .rate_limit(limits)
            .into_future()
    })
    .await;
    let web = Caller::new(&server, WEB);
    let (batch_a, batch_b) = (Caller::new(&server, BATCH_A), Caller::new(&server, BATCH_B));
    assert_eq!(web.get("/hello").await.0, 200);
    assert_eq!(web.get("/hello").await.1.as_deref(), Some("3600"));
    for _ in 0..3 {
        assert_eq!(batch_a.get("/hello").await.0, 200);
    }
    let (status, retry_after, _) = batch_a.get("/hello").await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("1200")));
    // Four admitted so far: one more fits the total, then nobody.
    assert_eq!(batch_b.get("/hello").await.0, 200);
    let (status, retry_after, _) = batch_b.get("/hello").await;
    assert_eq!(status, 429);
    assert!(
        retry_after
            .as_deref()
            .is_some_and(|s| s.parse::<u64>().unwrap() <= 720),
        "{retry_after:?}"
    );
    let ops = Caller::new(&server, OPS);
    let (status, retry_after, _) = ops.get("/hello").await;
    assert_eq!(status, 429, "the total is used up");
    assert!(retry_after.is_some());
}

/// A handler that says when a request reached it and answers when the test releases it.
fn slow_routes(entered: mpsc::UnboundedSender<()>, release: Arc<Semaphore>) -> Router {
    Router::new()
        .route(
            "/slow",
            get(move || {
                let (entered, release) = (entered.clone(), Arc::clone(&release));
                async move {
                    let _ = entered.send(());
                    release.acquire().await.unwrap().forget();
                    "done"
                }
            }),
        )
        .merge(routes())
}

#[tokio::test]
async fn the_concurrency_limit_with_slow_requests() {
    init_tracing();
    let limits = RateLimitLayer::builder().concurrency(2).build().unwrap();
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let app = slow_routes(entered_tx, Arc::clone(&release));
    let server = start(|listener| {
        secure_channel::integration::axum::serve(listener, app)
            .rate_limit(limits)
            .into_future()
    })
    .await;
    let web = Arc::new(Caller::new(&server, WEB));
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let web = Arc::clone(&web);
            tokio::spawn(async move { web.get("/slow").await })
        })
        .collect();
    for _ in 0..2 {
        within(entered.recv()).await.unwrap();
    }
    // Two in flight: the third is refused, on any route.
    let (status, retry_after, body) = web.get("/hello").await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")), "{body}");
    assert!(body.contains("in flight"), "{body}");
    // Another caller is not affected.
    let ops = Caller::new(&server, OPS);
    assert_eq!(ops.get("/hello").await.0, 200);

    release.add_permits(2);
    for request in slow {
        assert_eq!(within(request).await.unwrap(), (200, None, "done".into()));
    }
    // The permits went back with the responses.
    assert_eq!(web.get("/hello").await.0, 200);
}

const RULES: &str = r#"
[[rule]]
name = "web-hello"
effect = "allow"
principals = ["spiffe://example.org/web"]
routes = [{ methods = ["GET"], path = "/hello" }]
rate = "RATE"

[[rule]]
name = "ops-hello"
effect = "allow"
principals = ["spiffe://example.org/ops"]
routes = [{ methods = ["GET"], path = "/hello" }]
"#;

/// Writes the policy with `rate` for `web-hello`, atomically (beside, then renamed).
fn write_rules(path: &std::path::Path, rate: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, RULES.replace("RATE", rate)).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// A rule's limit applies to the callers it admits, and a reload of the policy file changes it.
#[tokio::test]
async fn policy_rule_limits_and_their_reload() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    write_rules(&path, "1/h");
    let policy = PolicySource::from_file(&path)
        .poll_interval(Duration::from_millis(20))
        .start()
        .unwrap();
    let mut revisions = policy.subscribe();
    let layer = AuthorizeLayer::new(policy.clone());
    let server = start(|listener| {
        secure_channel::integration::axum::serve(listener, routes())
            .authorize(layer)
            .into_future()
    })
    .await;
    let (web, ops) = (Caller::new(&server, WEB), Caller::new(&server, OPS));
    assert_eq!(web.get("/hello").await.0, 200);
    let (status, retry_after, _) = web.get("/hello").await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("3600")));
    // The other rule has no limit.
    for _ in 0..3 {
        assert_eq!(ops.get("/hello").await.0, 200);
    }

    write_rules(&path, "3/h");
    within(revisions.changed()).await.unwrap();
    assert_eq!(policy.revision(), 2);
    // New limits start afresh.
    for _ in 0..3 {
        assert_eq!(web.get("/hello").await.0, 200);
    }
    let (status, retry_after, _) = web.get("/hello").await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("1200")));
}

/// gRPC callers over a limit get RESOURCE_EXHAUSTED, from the layer and from a policy rule.
#[tokio::test]
async fn grpc_callers_get_resource_exhausted() {
    init_tracing();
    let policy = PolicySource::new(
        Policy::from_toml(
            r#"
[[rule]]
name = "whoami"
effect = "allow"
principals = ["spiffe://example.org"]
routes = [{ path = "/whoami.WhoAmI/Get" }]
rate = "2/h"
"#,
        )
        .unwrap(),
    );
    let limits = RateLimitLayer::builder()
        .rate(Rate::per_hour(1))
        .limit_for("ops", OPS, Limit::new().rate(Rate::per_hour(10)))
        .build()
        .unwrap();
    let server = start(|listener| async move {
        tonic::transport::Server::builder()
            .layer(limits)
            .layer(AuthorizeLayer::new(policy))
            .add_service(WhoAmIService)
            .serve_with_incoming(listener.into_incoming())
            .await
            .map_err(std::io::Error::other)
    })
    .await;
    let call = |caller: &'static str| grpc_whoami_as(&server.ca, caller, SERVER_ID, server.addr);
    // The layer's default: one an hour.
    assert_eq!(call(WEB).await.unwrap(), WEB);
    let status = call(WEB).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // The override lets ops through the layer; the policy rule's 2/h stops it.
    assert_eq!(call(OPS).await.unwrap(), OPS);
    assert_eq!(call(OPS).await.unwrap(), OPS);
    let status = call(OPS).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
}
