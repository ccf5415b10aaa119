//! gRPC over SPIFFE mutual TLS with tonic: the server answers with the caller's SPIFFE ID.
//!
//! Usage: `cargo run --example grpc`
//!
//! A development CA mints SVIDs for a server and a client; the server runs the testkit's
//! `whoami.WhoAmI` service (no code generation needed) on 127.0.0.1 behind a secure listener, and
//! the client calls it through a tonic channel built on the crate's connector.

use secure_channel::testkit::DevCa;
use secure_channel::testkit::whoami::{WhoAmIService, whoami};
use secure_channel::{MemorySource, SecureChannel};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ca = DevCa::new("example.org")?;
    let server_source = MemorySource::new(ca.credentials("spiffe://example.org/grpc-server")?);
    let server = SecureChannel::builder(&server_source)
        .allow_client("spiffe://example.org/grpc-client")
        .build()?;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let listener = server.listener(tcp)?;
    let addr = listener.local_addr();
    println!("gRPC server spiffe://example.org/grpc-server on {addr}");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WhoAmIService)
            .serve_with_incoming(listener.into_incoming()),
    );

    let client_source = MemorySource::new(ca.credentials("spiffe://example.org/grpc-client")?);
    let client = SecureChannel::builder(&client_source)
        .expect_server("spiffe://example.org/grpc-server")
        .build()?;
    // tonic speaks HTTP/2 and writes `http://`; the connector always does mutual TLS.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(client.connector().http2_only())
        .await?;
    let seen = whoami(channel).await?;
    println!("the server saw the caller as {seen}");
    Ok(())
}
