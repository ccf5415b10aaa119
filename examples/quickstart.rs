//! Quickstart: an axum service over SPIFFE mutual TLS, called by an allowed and a refused client.
//!
//! Usage: `cargo run --example quickstart`
//!
//! A development CA (standing in for SPIRE) mints SVIDs for a server and two clients. The server
//! allows only `spiffe://example.org/web`; `spiffe://example.org/batch` is refused in the TLS
//! handshake, and its client says so: "the server refused this workload's SVID
//! spiffe://example.org/batch with TLS alert access_denied: ...". Everything runs on 127.0.0.1.

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secure_channel::testkit::DevCa;
use secure_channel::{MemorySource, PeerIdentity, SecureChannel};

async fn whoami(caller: PeerIdentity) -> String {
    format!("hello, {}\n", caller.spiffe_id())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ca = DevCa::new("example.org")?;

    // The server: its own SVID, and the one caller it allows.
    let server_source = MemorySource::new(ca.credentials("spiffe://example.org/api")?);
    let server = SecureChannel::builder(&server_source)
        .allow_client("spiffe://example.org/web")
        .build()?;
    let listener = server.listener(tokio::net::TcpListener::bind("127.0.0.1:0").await?)?;
    let url = format!("https://{}/whoami", listener.local_addr());
    println!("server  spiffe://example.org/api serving {url}");
    let app = Router::new().route("/whoami", get(whoami));
    tokio::spawn(async move { secure_channel::integration::axum::serve(listener, app).await });

    for caller in ["spiffe://example.org/web", "spiffe://example.org/batch"] {
        let source = MemorySource::new(ca.credentials(caller)?);
        let channel = SecureChannel::builder(&source)
            .expect_server("spiffe://example.org/api")
            .build()?;
        let client =
            Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(channel.connector());
        match client.get(url.parse()?).await {
            Ok(response) => {
                let server_id = response
                    .extensions()
                    .get::<PeerIdentity>()
                    .map(|peer| peer.spiffe_id().to_string())
                    .unwrap_or_default();
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                print!(
                    "client  {caller} -> {server_id}: {status} {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Err(error) => {
                // The connector's error (here: the server refused our SVID, with what to
                // check) is a cause of hyper's; print it, or else hyper's own text.
                let mut text = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    if let Some(refusal) = cause.downcast_ref::<secure_channel::ConnectionError>() {
                        text = refusal.to_string();
                        break;
                    }
                    source = cause.source();
                }
                println!("client  {caller} was refused: {text}");
            }
        }
    }
    Ok(())
}
