//! Authorization end to end over mutual TLS: axum (403 JSON) and tonic (PERMISSION_DENIED), and
//! the handshake refusing callers that no rule could ever allow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::IntoFuture;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secure_channel::authz::{Policy, PolicySource};
use secure_channel::identity::PeerRejection;
use secure_channel::integration::axum::layer_before_routing;
use secure_channel::layer::authorize::AuthorizeLayer;
use secure_channel::testkit::DevCa;
use secure_channel::testkit::whoami::{WhoAmIService, whoami};
use secure_channel::{ConnectionError, MemorySource, PeerIdentity, SecureChannel};
use support::*;
use tokio::net::TcpListener;

const SERVER_ID: &str = "spiffe://example.org/api";
const WEB: &str = "spiffe://example.org/web";
const OPS: &str = "spiffe://example.org/ops";

const POLICY: &str = r#"
[[rule]]
name = "web-reads-public"
effect = "allow"
principals = ["spiffe://example.org/web"]
routes = [{ methods = ["GET"], path = "/public/*" }]

[[rule]]
name = "ops-everywhere"
effect = "allow"
principals = ["spiffe://example.org/ops"]
routes = [{ path = "/*" }]

[[rule]]
name = "nobody-reads-secrets"
effect = "deny"
principals = ["*"]
routes = [{ path = "/public/secret" }]

[[rule]]
name = "grpc-client-get"
effect = "allow"
principals = ["spiffe://example.org/grpc-client"]
routes = [{ path = "/whoami.WhoAmI/Get" }]
"#;

fn policy() -> PolicySource {
    PolicySource::new(Policy::from_toml(POLICY).unwrap())
}

struct Setup {
    ca: DevCa,
    _server_source: MemorySource,
    addr: std::net::SocketAddr,
}

async fn axum_setup() -> Setup {
    init_tracing();
    let ca = DevCa::new("example.org").unwrap();
    let source = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let policy = policy();
    let channel = SecureChannel::builder(&source)
        .allow_clients_by_policy(&policy)
        .build()
        .unwrap();
    let listener = channel
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let routes = Router::new()
        .route(
            "/public/hello",
            get(|peer: PeerIdentity| async move { format!("hello {}", peer.spiffe_id()) }),
        )
        .route("/public/secret", get(|| async { "the secret" }))
        .route("/admin/{*rest}", get(|| async { "admin area" }));
    tokio::spawn(async move {
        secure_channel::integration::axum::serve(listener, routes)
            .authorize(AuthorizeLayer::new(policy))
            .await
    });
    Setup {
        ca,
        _server_source: source,
        addr,
    }
}

async fn get_as(setup: &Setup, caller: &str, path: &str) -> Result<(u16, String), ConnectionError> {
    let source = MemorySource::new(setup.ca.credentials(caller).unwrap());
    let channel = SecureChannel::builder(&source)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    // Raw request target, so that dot segments and encodings reach the server as written.
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(channel.connector().http1_only());
    let uri: http::Uri = format!("https://{}{path}", setup.addr).parse().unwrap();
    let response = within(client.get(uri))
        .await
        .map_err(|e| ConnectionError::Handshake(std::io::Error::other(e)))?;
    let status = response.status().as_u16();
    let body = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn allowed_routes_pass_and_others_get_403_json() {
    let s = axum_setup().await;
    assert_eq!(
        get_as(&s, WEB, "/public/hello").await.unwrap(),
        (200, format!("hello {WEB}"))
    );

    for path in ["/admin/users", "/public/secret", "/publicx", "/public"] {
        let (status, body) = get_as(&s, WEB, path).await.unwrap();
        assert_eq!(status, 403, "{path}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], "forbidden", "{path}");
        assert!(
            !body.contains("web-reads-public") && !body.contains("nobody-reads"),
            "no policy detail: {body}"
        );
    }
    // Deny rules win even for a caller allowed everywhere.
    assert_eq!(get_as(&s, OPS, "/public/secret").await.unwrap().0, 403);
    assert_eq!(
        get_as(&s, OPS, "/admin/users").await.unwrap(),
        (200, "admin area".into())
    );
}

#[tokio::test]
async fn path_tricks_do_not_reach_unauthorized_routes() {
    let s = axum_setup().await;
    for path in [
        "/public/../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/x/../../admin/users",
        "//admin/users",
        "/public/%2Fadmin",
        "/public/..%2Fadmin",
        "/public/./secret",
        "/public//secret",
        "/public/secret/",
        "/public/%73ecret",
        "/../public/hello",
    ] {
        let (status, body) = get_as(&s, WEB, path).await.unwrap();
        assert_ne!(status, 200, "{path} must not be served: {body}");
        assert!(
            !body.contains("admin area") && !body.contains("the secret"),
            "{path}: {body}"
        );
    }
    // A harmless detour is normalized and routed as authorized.
    assert_eq!(get_as(&s, WEB, "/public/x/../hello").await.unwrap().0, 200);
}

#[tokio::test]
async fn caller_no_rule_names_is_refused_at_the_handshake() {
    let s = axum_setup().await;
    let result = get_as(&s, "spiffe://example.org/batch", "/public/hello").await;
    assert!(result.is_err(), "{result:?}");

    // On the server side the refusal is a NotAllowed naming the policy's principals.
    let source = MemorySource::new(s.ca.credentials(SERVER_ID).unwrap());
    let policy = policy();
    let channel = SecureChannel::builder(&source)
        .allow_clients_by_policy(&policy)
        .build()
        .unwrap();
    let mut server = TestServer::start(channel).await;
    let batch = MemorySource::new(s.ca.credentials("spiffe://example.org/batch").unwrap());
    let client = SecureChannel::builder(&batch)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    let _ = async {
        read_line(&mut within(client.connect_tcp(server.addr)).await?)
            .await
            .map_err(ConnectionError::Handshake)
    }
    .await;
    match server.next().await {
        Err(ConnectionError::PeerRejected(PeerRejection::NotAllowed {
            presented,
            expected,
        })) => {
            assert_eq!(presented.to_string(), "spiffe://example.org/batch");
            assert!(expected.to_string().contains(WEB), "{expected}");
        }
        other => panic!("expected NotAllowed, got {other:?}"),
    }

    // A policy reload that names the caller admits it at the next handshake.
    policy.replace(Policy::from_toml(&format!(
        "{POLICY}\n[[rule]]\nname = \"batch\"\neffect = \"allow\"\nprincipals = [\"spiffe://example.org/batch\"]\nroutes = [{{ path = \"/*\" }}]\n"
    )).unwrap());
    let mut stream = within(client.connect_tcp(server.addr)).await.unwrap();
    assert_eq!(
        read_line(&mut stream).await.unwrap(),
        "spiffe://example.org/batch"
    );
    assert_eq!(server.next().await.unwrap(), "spiffe://example.org/batch");
}

#[tokio::test]
async fn grpc_denial_is_permission_denied() {
    let ca = DevCa::new("example.org").unwrap();
    let source = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let policy = policy();
    let channel = SecureChannel::builder(&source)
        .allow_clients_by_policy(&policy)
        .build()
        .unwrap();
    let listener = channel
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(AuthorizeLayer::new(policy))
            .add_service(WhoAmIService)
            .serve_with_incoming(listener.into_incoming()),
    );
    let call = |caller: &'static str| {
        let ca = &ca;
        async move {
            let source = MemorySource::new(ca.credentials(caller).unwrap());
            let channel = SecureChannel::builder(&source)
                .expect_server(SERVER_ID)
                .build()
                .unwrap();
            let grpc = within(
                tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect_with_connector(channel.connector().http2_only()),
            )
            .await
            .unwrap();
            within(whoami(grpc)).await
        }
    };
    assert_eq!(
        call("spiffe://example.org/grpc-client").await.unwrap(),
        "spiffe://example.org/grpc-client"
    );
    // The web workload may connect (a rule names it) but may not call this method.
    let status = call(WEB).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}

/// The error events of the test's thread (the server runs on it: a current-thread runtime).
#[derive(Clone, Default)]
struct ErrorEvents(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ErrorEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        if *event.metadata().level() == tracing::Level::ERROR {
            let mut text = Text(String::new());
            event.record(&mut text);
            self.0.lock().unwrap().push(text.0);
        }
    }
}

/// Serves `app` over mutual TLS (with a CA of its own) admitting the callers of `policy`.
async fn serve_app<S>(policy: &PolicySource, app: S) -> Setup
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let ca = DevCa::new("example.org").unwrap();
    let source = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let channel = SecureChannel::builder(&source)
        .allow_clients_by_policy(policy)
        .build()
        .unwrap();
    let listener = channel
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(secure_channel::integration::hyper::serve(listener, app).into_future());
    Setup {
        ca,
        _server_source: source,
        addr,
    }
}

/// Issue #12: `Router::layer(AuthorizeLayer)` runs after axum routed the raw path, so
/// `GET /admin/../orders/1` reached the admin handler for a caller allowed only `GET /orders/*`.
/// Applied after routing, the layer now refuses every request (403) and logs an error naming
/// `layer_before_routing`; applied before routing, it authorizes and routes the same path.
#[tokio::test]
async fn router_layer_after_routing_fails_closed_and_before_routing_works() {
    use tracing_subscriber::layer::SubscriberExt;
    let errors = ErrorEvents::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(errors.clone()));

    let policy = PolicySource::new(
        Policy::from_toml(
            r#"
[[rule]]
name = "web-reads-orders"
effect = "allow"
principals = ["spiffe://example.org/web"]
routes = [{ methods = ["GET"], path = "/orders/*" }]
"#,
        )
        .unwrap(),
    );
    let routes = Router::new()
        .route(
            "/orders/{id}",
            get(
                |axum::extract::Path(id): axum::extract::Path<String>| async move {
                    format!("order {id}")
                },
            ),
        )
        .route("/admin/{*rest}", get(|| async { "admin area" }));

    // The axum idiom: the layer runs after routing. Fail closed.
    let wrong = serve_app(
        &policy,
        routes.clone().layer(AuthorizeLayer::new(policy.clone())),
    )
    .await;
    let (status, body) = get_as(&wrong, WEB, "/admin/../orders/1").await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("admin area"), "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "forbidden");
    // Even a request the policy allows: the layer cannot know what was routed.
    assert_eq!(get_as(&wrong, WEB, "/orders/1").await.unwrap().0, 403);
    let logged = errors.0.lock().unwrap().clone();
    assert_eq!(logged.len(), 1, "one error per layer: {logged:?}");
    assert!(
        logged[0].contains("layer_before_routing") && logged[0].contains("/admin/{*rest}"),
        "{logged:?}"
    );

    // The right order: authorized and routed as the normalized path.
    let right = serve_app(
        &policy,
        layer_before_routing(routes, AuthorizeLayer::new(policy.clone())),
    )
    .await;
    assert_eq!(
        get_as(&right, WEB, "/orders/1").await.unwrap(),
        (200, "order 1".into())
    );
    assert_eq!(
        get_as(&right, WEB, "/admin/../orders/1").await.unwrap(),
        (200, "order 1".into())
    );
    assert_eq!(get_as(&right, WEB, "/admin/x").await.unwrap().0, 403);
    assert_eq!(
        errors.0.lock().unwrap().len(),
        1,
        "no error in the right order"
    );
}
