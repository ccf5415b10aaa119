//! tonic over secure channels: the handler sees the caller's identity; refusals are gRPC
//! failures, not hangs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::IntoFuture;

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

/// tonic's `Routes` served by `integration::hyper::serve` rather than tonic's own server: the
/// handler sees the caller, and a cut-off caller's connection gets GOAWAY at once (tonic's
/// server, which drives its own connections, would only close it after the grace period).
#[tokio::test]
async fn tonic_routes_under_hyper_serve_get_goaway_when_the_caller_is_cut_off() {
    let ca = DevCa::new("example.org").unwrap();
    let denied = secure_channel::revocation::DenyList::new();
    let source = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let server = SecureChannel::builder(&source)
        .allow_client(CLIENT_ID)
        .deny_list(&denied)
        .cut_off_grace(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let listener = server
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let routes = tonic::service::Routes::new(WhoAmIService);
    let serving =
        tokio::spawn(secure_channel::integration::hyper::serve(listener, routes).into_future());

    let client_source = MemorySource::new(ca.credentials(CLIENT_ID).unwrap());
    let client = SecureChannel::builder(&client_source)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    let grpc = within(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_with_connector(client.connector().http2_only()),
    )
    .await
    .unwrap();
    assert_eq!(within(whoami(grpc.clone())).await.unwrap(), CLIENT_ID);

    // Denied: the open connection is wound down now, not in 60 s, and the reconnection is
    // refused, so calls start failing.
    assert!(denied.deny_id(CLIENT_ID.parse().unwrap()));
    let failing = async {
        while whoami(grpc.clone()).await.is_ok() {
            tokio::task::yield_now().await;
        }
    };
    within(failing).await;
    serving.abort();
}
