//! Trust changes reach open connections: a peer no longer trusted is cut off (the signal at
//! once, the hard close after the grace period), whatever made it untrusted; the others keep
//! working. Real TLS on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use secure_channel::authz::{Policy, PolicySource};
use secure_channel::integration::hyper::EvictCutOffLayer;
use secure_channel::testkit::DevCa;
use secure_channel::transport::{CutOffReason, CutOffSignal};
use secure_channel::{
    ConnectionError, Credentials, MemorySource, SecureChannel, SecureChannelBuilder, SecureStream,
    TrustBundles,
};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt};

const SERVER_ID: &str = "spiffe://example.org/api";
const WEB: &str = "spiffe://example.org/web";
const BILLING: &str = "spiffe://example.org/billing";
const PARTNER: &str = "spiffe://partner.org/app";

/// Short enough for tests, long enough to see the signal come before the close.
const GRACE: Duration = Duration::from_millis(300);

/// A server that accepts connections with `channel`, reports each server-side stream's peer
/// and cut-off signal, greets the client with its ID and echoes lines.
struct Server {
    addr: std::net::SocketAddr,
    accepted: mpsc::UnboundedReceiver<(String, CutOffSignal)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(channel: SecureChannel) -> Self {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let (tx, accepted) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = tcp.accept().await else {
                    return;
                };
                let (channel, tx) = (channel.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = channel.accept(tcp).await {
                        let id = stream.peer_identity().spiffe_id().to_string();
                        let _ = tx.send((id.clone(), stream.cut_off_signal()));
                        echo(stream, &id).await;
                    }
                });
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    async fn next(&mut self) -> (String, CutOffSignal) {
        within(self.accepted.recv()).await.unwrap()
    }
}

/// A client of `id` with credentials of `ca` and `bundles` expecting [`SERVER_ID`], connected
/// to `server`; the greeting read.
async fn connect(
    source: &MemorySource,
    addr: std::net::SocketAddr,
) -> (SecureChannel, SecureStream<TcpStream>) {
    let channel = SecureChannel::builder(source)
        .expect_server(SERVER_ID)
        .cut_off_grace(GRACE)
        .build()
        .unwrap();
    let mut stream = within(channel.connect_tcp(addr)).await.unwrap();
    read_line(&mut stream).await.unwrap();
    (channel, stream)
}

/// Reads until the connection ends (EOF or an error): the server closed it.
async fn closed_by_peer(stream: &mut SecureStream<TcpStream>) {
    let mut buf = [0u8; 64];
    loop {
        match within(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn credentials(ca: &DevCa, id: &str, bundles: TrustBundles) -> Credentials {
    Credentials::new(ca.svid(id).issue().unwrap().to_svid().unwrap(), bundles)
}

/// Two trust domains, example.org and partner.org, federated.
struct Federation {
    example: DevCa,
    partner: DevCa,
}

impl Federation {
    fn new() -> Self {
        Self {
            example: ca("example.org"),
            partner: ca("partner.org"),
        }
    }

    fn both(&self) -> TrustBundles {
        TrustBundles::new()
            .with(self.example.bundle().unwrap())
            .with(self.partner.bundle().unwrap())
    }

    /// A partner.org server that trusts both and allows [`WEB`].
    fn partner_server(&self) -> (MemorySource, SecureChannel) {
        let source = MemorySource::new(credentials(
            &self.partner,
            "spiffe://partner.org/api",
            self.both(),
        ));
        let server = SecureChannel::builder(&source)
            .allow_client(WEB)
            .build()
            .unwrap();
        (source, server)
    }
}

fn server_builder(source: &MemorySource) -> SecureChannelBuilder {
    SecureChannel::builder(source).cut_off_grace(GRACE)
}

/// Two clients of one server, each with its connection and the server side's signal for it:
/// one change will concern billing only.
struct WebAndBilling {
    _clients: (SecureChannel, SecureChannel),
    web: SecureStream<TcpStream>,
    web_signal: CutOffSignal,
    billing: SecureStream<TcpStream>,
    billing_signal: CutOffSignal,
}

impl WebAndBilling {
    /// Connects web (credentials of `example`) and billing (`billing`) to `server`.
    async fn connect(example: &DevCa, billing: Credentials, server: &mut Server) -> Self {
        let web_source = MemorySource::new(example.credentials(WEB).unwrap());
        let billing_source = MemorySource::new(billing);
        let (web_client, web) = connect(&web_source, server.addr).await;
        let (_, web_signal) = server.next().await;
        let (billing_client, billing) = connect(&billing_source, server.addr).await;
        let (_, billing_signal) = server.next().await;
        Self {
            _clients: (web_client, billing_client),
            web,
            web_signal,
            billing,
            billing_signal,
        }
    }

    /// Billing is cut off for `reason` after `change` and its connection closed; web still
    /// talks and has no cut-off.
    async fn only_billing_cut_off(mut self, reason: CutOffReason, change: &str) {
        let cut = within(self.billing_signal.cut_off()).await;
        assert_eq!(cut.reason(), reason);
        assert!(cut.detail().contains(change), "{cut}");
        closed_by_peer(&mut self.billing).await;
        round_trip(&mut self.web, "still trusted").await.unwrap();
        assert!(self.web_signal.get().is_none());
    }
}

#[tokio::test]
async fn a_ca_removed_from_the_bundles_cuts_off_its_peers_and_no_others() {
    let example = ca("example.org");
    let partner = ca("partner.org");
    let both = TrustBundles::new()
        .with(example.bundle().unwrap())
        .with(partner.bundle().unwrap());
    let server_source = MemorySource::new(credentials(&example, SERVER_ID, both.clone()));
    let server = server_builder(&server_source)
        .allow_client(WEB)
        .allow_client(PARTNER)
        .build()
        .unwrap();
    let mut accepted = Server::start(server.clone()).await;

    let web_source = MemorySource::new(example.credentials(WEB).unwrap());
    let partner_source = MemorySource::new(credentials(&partner, PARTNER, both.clone()));
    let (_web_channel, mut web) = connect(&web_source, accepted.addr).await;
    let (web_id, web_signal) = accepted.next().await;
    let (_partner_channel, mut partner_stream) = connect(&partner_source, accepted.addr).await;
    let (partner_id, partner_signal) = accepted.next().await;
    assert_eq!((web_id.as_str(), partner_id.as_str()), (WEB, PARTNER));
    assert_eq!(server.open_connections(), 2);

    // The server stops trusting partner.org.
    server_source.update(credentials(
        &example,
        SERVER_ID,
        TrustBundles::new().with(example.bundle().unwrap()),
    ));
    let cut = within(partner_signal.cut_off()).await;
    assert_eq!(cut.reason(), CutOffReason::UntrustedChain);
    assert!(cut.detail().contains("credentials revision 2"), "{cut}");
    assert_eq!(cut.grace(), GRACE);
    // The signal comes first; the close after the grace period.
    assert!(!partner_signal.is_closed());
    closed_by_peer(&mut partner_stream).await;
    assert!(partner_signal.is_closed());

    // The example.org client was not touched.
    assert!(web_signal.get().is_none());
    round_trip(&mut web, "still here").await.unwrap();
    assert!(web_signal.get().is_none());
}

#[tokio::test]
async fn a_client_cuts_off_a_server_whose_ca_it_no_longer_trusts() {
    let federation = Federation::new();
    let (_server_source, server) = federation.partner_server();
    let accepted = Server::start(server).await;
    let client_source = MemorySource::new(credentials(&federation.example, WEB, federation.both()));
    let client = SecureChannel::builder(&client_source)
        .expect_server("spiffe://partner.org/api")
        .cut_off_grace(GRACE)
        .build()
        .unwrap();
    let mut stream = within(client.connect_tcp(accepted.addr)).await.unwrap();
    read_line(&mut stream).await.unwrap();
    let signal = stream.cut_off_signal();

    client_source.update(federation.example.credentials(WEB).unwrap());
    let cut = within(signal.cut_off()).await;
    assert_eq!(cut.reason(), CutOffReason::UntrustedChain);
    // After the grace period the client's own stream refuses to be used.
    let mut buf = [0u8; 8];
    let error = loop {
        match within(stream.read(&mut buf)).await {
            Err(error) => break error,
            Ok(_) => tokio::task::yield_now().await,
        }
    };
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted,
        "{error}"
    );
    assert!(signal.is_closed());
}

#[tokio::test]
async fn a_rotation_that_keeps_the_bundles_cuts_off_nobody() {
    let example = ca("example.org");
    let server_source = MemorySource::new(example.credentials(SERVER_ID).unwrap());
    let server = server_builder(&server_source)
        .allow_client(WEB)
        .build()
        .unwrap();
    let mut accepted = Server::start(server).await;
    let web_source = MemorySource::new(example.credentials(WEB).unwrap());
    let (_client, mut web) = connect(&web_source, accepted.addr).await;
    let (_, signal) = accepted.next().await;
    // A new SVID, the same bundle: a sweep runs and finds nothing to cut.
    let mut revisions = server_source.source().subscribe();
    server_source.update(example.credentials(SERVER_ID).unwrap());
    within(revisions.changed()).await.unwrap();
    round_trip(&mut web, "after rotation").await.unwrap();
    assert!(signal.get().is_none());
}

const POLICY: &str = r#"
[[rule]]
name = "web"
effect = "allow"
principals = ["spiffe://example.org/web"]
routes = [{ path = "/*" }]

[[rule]]
name = "billing"
effect = "allow"
principals = ["spiffe://example.org/billing"]
routes = [{ path = "/*" }]
"#;

#[tokio::test]
async fn a_policy_change_cuts_off_the_callers_it_no_longer_admits() {
    let example = ca("example.org");
    let policy = PolicySource::new(Policy::from_toml(POLICY).unwrap());
    let server_source = MemorySource::new(example.credentials(SERVER_ID).unwrap());
    let server = server_builder(&server_source)
        .allow_clients_by_policy(&policy)
        .build()
        .unwrap();
    let mut accepted = Server::start(server).await;
    let billing = example.credentials(BILLING).unwrap();
    let peers = WebAndBilling::connect(&example, billing, &mut accepted).await;

    // Billing's rule goes.
    let without_billing = POLICY.split("[[rule]]\nname = \"billing\"").next().unwrap();
    policy.replace(Policy::from_toml(without_billing).unwrap());
    peers
        .only_billing_cut_off(CutOffReason::NotAllowed, "policy revision 2")
        .await;
}

#[tokio::test]
async fn a_connection_is_cut_off_when_its_peer_certificate_expires() {
    let example = ca("example.org");
    let server_source = MemorySource::new(example.credentials(SERVER_ID).unwrap());
    let server = server_builder(&server_source)
        .allow_client(WEB)
        .build()
        .unwrap();
    let mut accepted = Server::start(server).await;
    // Valid for two more seconds.
    let now = SystemTime::now();
    let short = example
        .svid(WEB)
        .validity(now - Duration::from_secs(60), now + Duration::from_secs(2))
        .issue()
        .unwrap()
        .to_svid()
        .unwrap();
    let web_source = MemorySource::new(Credentials::new(
        short,
        TrustBundles::new().with(example.bundle().unwrap()),
    ));
    let (_client, mut web) = connect(&web_source, accepted.addr).await;
    let (_, signal) = accepted.next().await;
    assert!(signal.get().is_none());
    let cut = within(signal.cut_off()).await;
    assert_eq!(cut.reason(), CutOffReason::Expired);
    assert!(SystemTime::now() >= now + Duration::from_secs(2));
    closed_by_peer(&mut web).await;
}

#[tokio::test]
async fn connections_older_than_the_maximum_age_are_cut_off_and_new_ones_are_not() {
    let example = ca("example.org");
    let server_source = MemorySource::new(example.credentials(SERVER_ID).unwrap());
    let server = server_builder(&server_source)
        .allow_client(WEB)
        .max_connection_age(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut accepted = Server::start(server.clone()).await;
    let web_source = MemorySource::new(example.credentials(WEB).unwrap());
    let (_client, mut web) = connect(&web_source, accepted.addr).await;
    let (_, signal) = accepted.next().await;
    let cut = within(signal.cut_off()).await;
    assert_eq!(cut.reason(), CutOffReason::MaxAge);
    assert!(
        cut.detail()
            .ends_with("maximum age of 500ms (after the maximum connection age)"),
        "{cut}"
    );
    closed_by_peer(&mut web).await;
    // Reconnecting works: the limit is on age, not on the peer.
    let (_client, mut again) = connect(&web_source, accepted.addr).await;
    round_trip(&mut again, "fresh").await.unwrap();
}

#[tokio::test]
async fn without_a_maximum_age_or_a_change_connections_stay_and_leave_the_registry_when_dropped() {
    let mut pki = Pki::new();
    let server = pki.channel(SERVER_ID, |b| b.allow_client(WEB).cut_off_grace(GRACE));
    let mut accepted = Server::start(server.clone()).await;
    let client = pki.client(WEB);
    let mut stream = within(client.connect_tcp(accepted.addr)).await.unwrap();
    read_line(&mut stream).await.unwrap();
    let (_, signal) = accepted.next().await;
    assert_eq!(client.open_connections(), 1);
    tokio::time::sleep(GRACE * 2).await;
    round_trip(&mut stream, "idle but trusted").await.unwrap();
    assert!(signal.get().is_none());
    drop(stream);
    assert_eq!(client.open_connections(), 0);
}

/// An HTTP server whose `/slow` handler answers once its connection is cut off (the signal is
/// in every request's extensions), reporting that it started.
async fn http_server(
    channel: SecureChannel,
    entered: mpsc::UnboundedSender<()>,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = channel.listener(tcp).unwrap();
    let service = tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let entered = entered.clone();
        async move {
            if request.uri().path() == "/slow" {
                let signal = request.extensions().get::<CutOffSignal>().cloned().unwrap();
                let _ = entered.send(());
                signal.cut_off().await;
            }
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"done"))))
        }
    });
    let task =
        tokio::spawn(secure_channel::integration::hyper::serve(listener, service).into_future());
    (addr, task)
}

use std::future::IntoFuture;

/// Over HTTP/1.1 (`h2` false) or HTTP/2: a request in flight when its caller is cut off is
/// answered; the connection then closes, and takes no new request.
async fn in_flight_request_completes_then_the_connection_closes(h2: bool) {
    let example = ca("example.org");
    let policy = PolicySource::new(Policy::from_toml(POLICY).unwrap());
    let server_source = MemorySource::new(example.credentials(SERVER_ID).unwrap());
    let server = SecureChannel::builder(&server_source)
        .allow_clients_by_policy(&policy)
        .cut_off_grace(Duration::from_secs(30))
        .build()
        .unwrap();
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let (addr, _server) = http_server(server, entered_tx).await;

    let billing_source = MemorySource::new(example.credentials(BILLING).unwrap());
    let client = SecureChannel::builder(&billing_source)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    let connector = if h2 {
        client.connector().http2_only()
    } else {
        client.connector().http1_only()
    };
    let uri: http::Uri = format!("https://127.0.0.1:{}/", addr.port())
        .parse()
        .unwrap();
    let stream = within(connector.connect(uri)).await.unwrap().into_inner();
    assert_eq!(
        stream.alpn_protocol(),
        Some(if h2 { &b"h2"[..] } else { &b"http/1.1"[..] })
    );
    let io = TokioIo::new(stream);
    let (mut sender, connection) = if h2 {
        let (sender, conn) = within(hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            io,
        ))
        .await
        .unwrap();
        (
            Sender::H2(sender),
            tokio::spawn(async move { conn.await.map_err(|e| e.to_string()) }),
        )
    } else {
        let (sender, conn) = within(hyper::client::conn::http1::handshake(io))
            .await
            .unwrap();
        (
            Sender::H1(sender),
            tokio::spawn(async move { conn.await.map_err(|e| e.to_string()) }),
        )
    };
    let request = |path: &str| {
        http::Request::get(format!("https://127.0.0.1/{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let in_flight = sender.send(request("slow"));
    let in_flight = tokio::spawn(in_flight);
    within(entered.recv()).await.unwrap();

    // Billing is cut off while its request is being served.
    let without_billing = POLICY.split("[[rule]]\nname = \"billing\"").next().unwrap();
    policy.replace(Policy::from_toml(without_billing).unwrap());
    let response = within(in_flight).await.unwrap().unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    if !h2 {
        assert_eq!(
            response
                .headers()
                .get(http::header::CONNECTION)
                .map(|v| v.as_bytes()),
            Some(&b"close"[..]),
            "HTTP/1.1: the last response says the connection closes"
        );
    }
    let body = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"done");
    // The connection ends, and no new request goes on it.
    within(connection).await.unwrap().ok();
    assert!(within(sender.send(request("again"))).await.is_err());
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

type ResponseFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>
            + Send,
    >,
>;

impl Sender {
    fn send(&mut self, request: http::Request<Empty<Bytes>>) -> ResponseFuture {
        match self {
            Self::H1(sender) => Box::pin(sender.send_request(request)),
            Self::H2(sender) => Box::pin(sender.send_request(request)),
        }
    }
}

#[tokio::test]
async fn http1_a_request_in_flight_completes_with_connection_close() {
    in_flight_request_completes_then_the_connection_closes(false).await;
}

#[tokio::test]
async fn http2_a_request_in_flight_completes_after_goaway() {
    in_flight_request_completes_then_the_connection_closes(true).await;
}

/// Counts the handshakes the server completed.
async fn counting_http_server(
    channel: SecureChannel,
) -> (
    std::net::SocketAddr,
    Arc<secure_channel::transport::ListenerStats>,
) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let listener = channel.listener(tcp).unwrap();
    let stats = listener.stats();
    let service = tower::service_fn(|_request: http::Request<hyper::body::Incoming>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    tokio::spawn(secure_channel::integration::hyper::serve(listener, service).into_future());
    (addr, stats)
}

#[tokio::test]
async fn a_pooled_client_connection_is_not_reused_once_its_server_is_untrusted() {
    let federation = Federation::new();
    let (_server_source, server) = federation.partner_server();
    let (addr, stats) = counting_http_server(server).await;
    let client_source = MemorySource::new(credentials(&federation.example, WEB, federation.both()));
    // A long grace period: only the eviction can keep the pooled connection from being reused.
    let channel = SecureChannel::builder(&client_source)
        .expect_server("spiffe://partner.org/api")
        .cut_off_grace(Duration::from_secs(60))
        .build()
        .unwrap();
    let client = EvictCutOffLayer::new()
        .layer(Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(channel.connector()));
    let get = || {
        http::Request::get(format!("https://127.0.0.1:{}/", addr.port()))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    for _ in 0..2 {
        let response = within(client.clone().oneshot(get())).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        let response_signal = response
            .extensions()
            .get::<CutOffSignal>()
            .cloned()
            .unwrap();
        assert!(response_signal.get().is_none());
        within(response.into_body().collect()).await.unwrap();
    }
    assert_eq!(
        stats.accepted(),
        1,
        "the second request reused the pooled connection"
    );

    // The client stops trusting partner.org: its pooled connection is evicted at once, and
    // the next request needs a new handshake, which fails.
    let mut revisions = client_source.source().subscribe();
    client_source.update(federation.example.credentials(WEB).unwrap());
    within(revisions.changed()).await.unwrap();
    // Until the sweep has run, the connection is still trusted and may carry requests; once
    // it has, every request fails (a new handshake, refused).
    let error = within(async {
        loop {
            match client.clone().oneshot(get()).await {
                Err(error) => return error,
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    let cause = std::error::Error::source(&error).and_then(|e| e.downcast_ref::<ConnectionError>());
    assert!(
        matches!(cause, Some(ConnectionError::PeerRejected(_))),
        "{error:?}"
    );
    assert_eq!(stats.accepted(), 1, "no request went over a new connection");
}

#[tokio::test]
async fn a_deny_list_entry_cuts_off_that_peer_at_once_and_no_other() {
    let example = ca("example.org");
    let deny = secure_channel::revocation::DenyList::new();
    let server_source = MemorySource::new(example.credentials(SERVER_ID).unwrap());
    let server = server_builder(&server_source)
        .allow_client(WEB)
        .allow_client(BILLING)
        .deny_list(&deny)
        .build()
        .unwrap();
    let mut accepted = Server::start(server).await;
    let billing = example.credentials(BILLING).unwrap();
    let peers = WebAndBilling::connect(&example, billing, &mut accepted).await;

    assert!(deny.deny_id(BILLING.parse().unwrap()));
    peers
        .only_billing_cut_off(CutOffReason::Denied, "deny-list revision 2")
        .await;
}

#[tokio::test]
async fn a_revocation_list_naming_a_peer_cuts_it_off_and_no_other() {
    let example = ca("example.org");
    let lists = secure_channel::revocation::RevocationLists::new(Vec::<Vec<u8>>::new()).unwrap();
    let server_source = MemorySource::new(example.credentials(SERVER_ID).unwrap());
    let server = server_builder(&server_source)
        .allow_client(WEB)
        .allow_client(BILLING)
        .revocation_lists(&lists)
        .build()
        .unwrap();
    let mut accepted = Server::start(server).await;
    let billing_svid = example.svid(BILLING).issue().unwrap();
    let billing = Credentials::new(
        billing_svid.to_svid().unwrap(),
        TrustBundles::new().with(example.bundle().unwrap()),
    );
    let peers = WebAndBilling::connect(&example, billing, &mut accepted).await;

    let crl = example.crl(&[billing_svid.serial()]).der().unwrap();
    lists.replace([crl]).unwrap();
    peers
        .only_billing_cut_off(CutOffReason::Revoked, "revocation lists revision 2")
        .await;
}

/// `Duration::MAX` is a natural way to say "never" for every duration of the builders: it must
/// not overflow the clock (a panic in the accept or sweep path) and must not weaken the cut-off.
#[tokio::test]
async fn durations_meaning_never_neither_panic_nor_stop_the_cut_off() {
    let example = ca("example.org");
    let deny = secure_channel::revocation::DenyList::new();
    let server_source = MemorySource::new(example.credentials(SERVER_ID).unwrap());
    let server = SecureChannel::builder(&server_source)
        .allow_client(WEB)
        .allow_client(BILLING)
        .deny_list(&deny)
        .max_connection_age(Duration::MAX)
        .cut_off_grace(Duration::MAX)
        .build()
        .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut listener = server
        .listener_builder()
        .handshake_timeout(Duration::MAX)
        .idle_timeout(Some(Duration::MAX))
        .bind(tcp)
        .unwrap();
    let addr = listener.local_addr();
    let (tx, mut signals) = mpsc::unbounded_channel();
    let accept = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let id = stream.peer_identity().spiffe_id().to_string();
            let _ = tx.send(stream.cut_off_signal());
            tokio::spawn(async move { echo(stream, &id).await });
        }
    });
    let web_source = MemorySource::new(example.credentials(WEB).unwrap());
    let billing_source = MemorySource::new(example.credentials(BILLING).unwrap());
    let (_w, mut web) = connect(&web_source, addr).await;
    let web_signal = within(signals.recv()).await.unwrap();
    let (_b, mut billing) = connect(&billing_source, addr).await;
    let billing_signal = within(signals.recv()).await.unwrap();
    round_trip(&mut web, "served").await.unwrap();

    // Two changes in turn: the sweeper must survive the first cut-off's (endless) grace.
    assert!(deny.deny_id(WEB.parse().unwrap()));
    let cut = within(web_signal.cut_off()).await;
    assert_eq!(cut.reason(), CutOffReason::Denied);
    assert_eq!(cut.grace(), Duration::MAX);
    round_trip(&mut billing, "still served").await.unwrap();
    assert!(deny.deny_id(BILLING.parse().unwrap()));
    assert_eq!(
        within(billing_signal.cut_off()).await.reason(),
        CutOffReason::Denied
    );
    accept.abort();
}
