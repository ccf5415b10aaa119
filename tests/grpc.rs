//! tonic over secure channels: the handler sees the caller's identity; refusals are gRPC
//! failures, not hangs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use secure_channel::integration::tonic::RequestPeerExt;
use secure_channel::testkit::DevCa;
use secure_channel::testkit::whoami::{WhoAmIService, whoami};
use secure_channel::{MemorySource, SecureChannel};
use support::*;
use tokio::net::TcpListener;

const SERVER_ID: &str = "spiffe://example.org/grpc-server";
const CLIENT_ID: &str = "spiffe://example.org/grpc-client";

async fn start_server(ca: &DevCa) -> (std::net::SocketAddr, MemorySource) {
    let source = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let channel = SecureChannel::builder(&source)
        .allow_client(CLIENT_ID)
        .build()
        .unwrap();
    let listener = channel
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WhoAmIService)
            .serve_with_incoming(listener.into_incoming()),
    );
    (addr, source)
}

async fn connect(ca: &DevCa, id: &str, addr: std::net::SocketAddr) -> Result<String, String> {
    let source = MemorySource::new(ca.credentials(id).unwrap());
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
    .map_err(|e| format!("connect: {e:?}"))?;
    within(whoami(grpc))
        .await
        .map_err(|status| format!("{status:?}"))
}

#[tokio::test]
async fn grpc_handler_sees_the_callers_identity() {
    init_tracing();
    let ca = DevCa::new("example.org").unwrap();
    let (addr, _server) = start_server(&ca).await;
    assert_eq!(connect(&ca, CLIENT_ID, addr).await.unwrap(), CLIENT_ID);
}

#[tokio::test]
async fn grpc_caller_not_allowed_fails() {
    let ca = DevCa::new("example.org").unwrap();
    let (addr, _server) = start_server(&ca).await;
    assert!(
        connect(&ca, "spiffe://example.org/intruder", addr)
            .await
            .is_err()
    );
}

#[test]
fn request_without_identity_is_unauthenticated() {
    let request = tonic::Request::new(());
    let status = request.peer_identity().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}
