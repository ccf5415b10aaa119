//! Observability: Prometheus metrics on `/metrics` beside a secured axum service.
//!
//! Usage: `cargo run --example observability [-- --serve]`
//!
//! Installs the `metrics-exporter-prometheus` recorder (the crate itself only uses the `metrics`
//! facade and forces no exporter), serves `/metrics` in plain HTTP on 127.0.0.1 for a local
//! scraper, and an axum service over SPIFFE mutual TLS with an authorization policy. Without
//! `--serve` it makes an allowed call, a call the policy denies and a handshake the channel
//! refuses, prints the crate's metrics and exits; with `--serve` it keeps running and prints
//! both addresses.

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusBuilder;
use secure_channel::authz::{Policy, PolicySource};
use secure_channel::layer::authorize::AuthorizeLayer;
use secure_channel::testkit::DevCa;
use secure_channel::{MemorySource, PeerIdentity, SecureChannel};

const POLICY: &str = r#"
[[rule]]
name = "web-reads-orders"
effect = "allow"
principals = ["spiffe://example.org/web"]
routes = [{ methods = ["GET"], path = "/orders/*" }]
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve_forever = std::env::args().any(|a| a == "--serve");
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    // /metrics, plain HTTP on loopback for the local scraper.
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics_addr = metrics_listener.local_addr()?;
    let handle = prometheus.clone();
    let metrics_app = Router::new().route("/metrics", get(move || async move { handle.render() }));
    tokio::spawn(async move { axum::serve(metrics_listener, metrics_app).await });

    // The secured service.
    let ca = DevCa::new("example.org")?;
    let server_source = MemorySource::new(ca.credentials("spiffe://example.org/orders")?);
    let policy = PolicySource::new(Policy::from_toml(POLICY)?);
    let server = SecureChannel::builder(&server_source)
        .allow_clients_by_policy(&policy)
        .build()?;
    let listener = server.listener(tokio::net::TcpListener::bind("127.0.0.1:0").await?)?;
    let service_addr = listener.local_addr();
    let routes = Router::new()
        .route(
            "/orders/{id}",
            get(|peer: PeerIdentity| async move { format!("order for {}\n", peer.spiffe_id()) }),
        )
        .route("/admin", get(|| async { "admin\n" }));
    tokio::spawn(
        secure_channel::integration::axum::serve(listener, routes)
            .authorize(AuthorizeLayer::new(policy))
            .into_future(),
    );
    println!("secured service: https://{service_addr}  metrics: http://{metrics_addr}/metrics");

    if serve_forever {
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }

    for (caller, path) in [
        ("spiffe://example.org/web", "/orders/7"),
        ("spiffe://example.org/web", "/admin"),
        ("spiffe://example.org/batch", "/orders/7"),
    ] {
        let source = MemorySource::new(ca.credentials(caller)?);
        let channel = SecureChannel::builder(&source)
            .expect_server("spiffe://example.org/orders")
            .build()?;
        let client =
            Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(channel.connector());
        match client
            .get(format!("https://{service_addr}{path}").parse()?)
            .await
        {
            Ok(response) => println!("{caller} GET {path}: {}", response.status()),
            Err(error) => println!("{caller} GET {path}: refused ({error})"),
        }
    }

    let scrape = Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>()
        .get(format!("http://{metrics_addr}/metrics").parse()?)
        .await?;
    let text = scrape.into_body().collect().await?.to_bytes();
    println!("\n# from /metrics:");
    for line in String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| l.starts_with("secure_channel_"))
    {
        println!("{line}");
    }
    Ok(())
}
