//! Quickstart: two workloads talk over SPIFFE-verified mutual TLS.
//!
//! Usage: `cargo run --example quickstart --features testkit`
//!
//! A development CA (standing in for SPIRE) mints SVIDs for a server and two clients. The server
//! allows only `spiffe://example.org/web`; the second client, `spiffe://example.org/batch`, is
//! refused in the handshake. Everything runs on 127.0.0.1.

use secure_channel::testkit::DevCa;
use secure_channel::{Error, MemorySource, SecureChannel};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ca = DevCa::new("example.org")?;

    // The server: its own SVID, and the one caller it allows.
    let server_source = MemorySource::new(ca.credentials("spiffe://example.org/api")?);
    let server = SecureChannel::builder(&server_source)
        .allow_client("spiffe://example.org/web")
        .build()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("server  spiffe://example.org/api listening on {addr}");

    tokio::spawn(async move {
        while let Ok((tcp, peer_addr)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                match server.accept(tcp).await {
                    Ok(mut stream) => {
                        let caller = stream.peer_identity().spiffe_id().to_string();
                        println!("server  accepted {caller} from {peer_addr}");
                        let greeting = format!("hello, {caller}\n");
                        let _ = stream.write_all(greeting.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                    Err(error) => println!("server  refused a caller from {peer_addr}: {error}"),
                }
            });
        }
    });

    for caller in ["spiffe://example.org/web", "spiffe://example.org/batch"] {
        let source = MemorySource::new(ca.credentials(caller)?);
        let client = SecureChannel::builder(&source)
            .expect_server("spiffe://example.org/api")
            .build()?;
        match call(&client, addr).await {
            Ok((server_id, reply)) => {
                println!("client  {caller} verified the server as {server_id}; it said: {reply}")
            }
            Err(error) => println!("client  {caller} was refused: {error}"),
        }
    }
    Ok(())
}

/// Connects, and returns the server's verified SPIFFE ID and its greeting.
async fn call(
    client: &SecureChannel,
    addr: std::net::SocketAddr,
) -> Result<(String, String), Error> {
    let stream = client.connect_tcp(addr).await?;
    let server_id = stream.peer_identity().spiffe_id().to_string();
    // In TLS 1.3 the server checks the client certificate after the client has finished its
    // side of the handshake, so a refusal shows up on the first read.
    let mut reply = String::new();
    let read = BufReader::new(stream)
        .read_line(&mut reply)
        .await
        .map_err(Error::Handshake)?;
    if read == 0 {
        return Err(Error::Handshake(std::io::ErrorKind::ConnectionReset.into()));
    }
    Ok((server_id, reply.trim_end().to_owned()))
}
