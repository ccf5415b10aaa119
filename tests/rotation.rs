//! Credential rotation without restarts: files, the Workload API, and session resumption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::HandshakeKind;
use rustls_pki_types::ServerName;
use secure_channel::identity::{ChainError, PeerRejection};
use secure_channel::testkit::{DevCa, IssuedSvid};
use secure_channel::{
    ConfigError, ConnectionError, CredentialSource, Credentials, MemorySource, SecureChannel,
    TrustBundle, TrustBundles,
};
use support::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/web";

/// Writes `content` to `path` the way careful writers do: a temporary file, then a rename.
fn write_then_rename(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn wait_for_change(rx: &mut watch::Receiver<u64>) -> u64 {
    within(rx.changed()).await.expect("source closed");
    *rx.borrow_and_update()
}

fn client(ca: &DevCa) -> SecureChannel {
    let creds = MemorySource::new(ca.credentials(CLIENT_ID).unwrap());
    SecureChannel::builder(&creds)
        .expect_server(SERVER_ID)
        .build()
        .unwrap()
}

/// A server with fixed credentials of `ca` that allows [`CLIENT_ID`].
async fn static_server(ca: &DevCa) -> TestServer {
    TestServer::start(
        SecureChannel::builder(&MemorySource::new(ca.credentials(SERVER_ID).unwrap()))
            .allow_client(CLIENT_ID)
            .build()
            .unwrap(),
    )
    .await
}

fn file_channel(source: CredentialSource) -> SecureChannel {
    SecureChannel::builder(source)
        .allow_client(CLIENT_ID)
        .build()
        .unwrap()
}

/// Connects and returns the server's leaf as presented, keeping the stream open.
async fn connect_and_greet(
    client: &SecureChannel,
    server: &TestServer,
) -> (secure_channel::SecureStream<tokio::net::TcpStream>, Vec<u8>) {
    let mut stream = within(client.connect_tcp(server.addr)).await.unwrap();
    assert_eq!(read_line(&mut stream).await.unwrap(), CLIENT_ID);
    let leaf = stream.peer_identity().leaf_certificate().as_ref().to_vec();
    (stream, leaf)
}

struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    bundle: PathBuf,
}

fn write_files(ca: &DevCa, svid: &IssuedSvid) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let files = Files {
        cert: dir.path().join("svid.pem"),
        key: dir.path().join("svid.key"),
        bundle: dir.path().join("bundle.pem"),
        _dir: dir,
    };
    std::fs::write(&files.cert, svid.chain_pem()).unwrap();
    std::fs::write(&files.key, svid.key_pem()).unwrap();
    std::fs::write(&files.bundle, ca.bundle_pem()).unwrap();
    files
}

fn start_files(files: &Files, ca: &DevCa) -> CredentialSource {
    CredentialSource::from_files(&files.cert, &files.key)
        .bundle(ca.trust_domain().clone(), &files.bundle)
        .poll_interval(Duration::from_millis(20))
        .start()
        .unwrap()
}

#[tokio::test]
async fn file_rotation_reaches_new_handshakes_and_keeps_old_connections() {
    init_tracing();
    let ca = DevCa::new("example.org").unwrap();
    let first = ca.svid(SERVER_ID).issue().unwrap();
    let files = write_files(&ca, &first);
    let source = start_files(&files, &ca);
    let mut revisions = source.subscribe();
    let server = TestServer::start(file_channel(source.clone())).await;
    let client = client(&ca);

    let (mut old, leaf) = connect_and_greet(&client, &server).await;
    assert_eq!(leaf, first.leaf().as_ref());

    let second = ca.svid(SERVER_ID).issue().unwrap();
    assert_ne!(first.serial(), second.serial());
    // Key first, then certificate: in between, the pair does not match and is skipped.
    write_then_rename(&files.key, &second.key_pem());
    write_then_rename(&files.cert, &second.chain_pem());
    loop {
        wait_for_change(&mut revisions).await;
        if source.current().svid().chain()[0] == *second.leaf() {
            break;
        }
    }

    let (_new, leaf) = connect_and_greet(&client, &server).await;
    assert_eq!(
        leaf,
        second.leaf().as_ref(),
        "a new handshake presents the new SVID"
    );
    round_trip(&mut old, "still here").await.unwrap();
}

#[tokio::test]
async fn kubernetes_secret_volume_symlink_swap_is_followed() {
    let ca = DevCa::new("example.org").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // The layout kubelet writes: ..<timestamp>/ with the files, ..data -> ..<timestamp>, and
    // top-level links through ..data.
    let publish = |version: &str, svid: &IssuedSvid| {
        let versioned = root.join(format!("..{version}"));
        std::fs::create_dir(&versioned).unwrap();
        std::fs::write(versioned.join("tls.crt"), svid.chain_pem()).unwrap();
        std::fs::write(versioned.join("tls.key"), svid.key_pem()).unwrap();
        std::fs::write(versioned.join("ca.crt"), ca.bundle_pem()).unwrap();
        let tmp_link = root.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &tmp_link).unwrap();
        std::fs::rename(&tmp_link, root.join("..data")).unwrap();
    };
    let first = ca.svid(SERVER_ID).issue().unwrap();
    publish("2026_11_22_v1", &first);
    for name in ["tls.crt", "tls.key", "ca.crt"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name)).unwrap();
    }
    let source = CredentialSource::from_files(root.join("tls.crt"), root.join("tls.key"))
        .bundle(ca.trust_domain().clone(), root.join("ca.crt"))
        .poll_interval(Duration::from_millis(20))
        .start()
        .unwrap();
    let mut revisions = source.subscribe();
    let server = TestServer::start(file_channel(source.clone())).await;
    let client = client(&ca);
    let (mut old, leaf) = connect_and_greet(&client, &server).await;
    assert_eq!(leaf, first.leaf().as_ref());

    let second = ca.svid(SERVER_ID).issue().unwrap();
    publish("2026_11_22_v2", &second);
    assert_eq!(wait_for_change(&mut revisions).await, 2);
    let (_new, leaf) = connect_and_greet(&client, &server).await;
    assert_eq!(leaf, second.leaf().as_ref());
    round_trip(&mut old, "still here").await.unwrap();
}

#[tokio::test]
async fn broken_reloads_keep_the_last_good_material() {
    let ca = DevCa::new("example.org").unwrap();
    let first = ca.svid(SERVER_ID).issue().unwrap();
    let files = write_files(&ca, &first);
    let source = start_files(&files, &ca);
    let mut failures = source.subscribe_failed_reloads();
    let server = TestServer::start(file_channel(source.clone())).await;
    let client = client(&ca);

    let other = ca.svid(SERVER_ID).issue().unwrap();
    let bad_inputs: Vec<(&Path, String)> = vec![
        (&files.key, "not a key".into()),
        (&files.key, other.key_pem()), // key of another certificate
        (
            &files.cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        ),
        (
            &files.cert,
            ca.svid("spiffe://example.org/x")
                .as_ca()
                .issue()
                .unwrap()
                .chain_pem(),
        ),
        (&files.bundle, String::new()),
        // A bundle that cannot vouch for the SVID: another CA of the same trust domain, and the
        // SVID itself where the CA belongs.
        (
            &files.bundle,
            DevCa::new("example.org").unwrap().bundle_pem(),
        ),
        (&files.bundle, first.chain_pem()),
    ];
    for (path, content) in bad_inputs {
        let original = std::fs::read_to_string(path).unwrap();
        write_then_rename(path, &content);
        within(failures.changed()).await.unwrap();
        assert_eq!(
            source.revision(),
            1,
            "a broken reload must not be published ({path:?})"
        );
        let (_stream, leaf) = connect_and_greet(&client, &server).await;
        assert_eq!(
            leaf,
            first.leaf().as_ref(),
            "the last good SVID is still presented"
        );
        write_then_rename(path, &original);
    }
    // A file that disappears is also a refused reload.
    std::fs::remove_file(&files.bundle).unwrap();
    within(failures.changed()).await.unwrap();
    assert_eq!(source.revision(), 1);
    assert!(source.failed_reloads() >= 8);
}

#[tokio::test]
async fn workload_api_source_follows_rotation_mid_test() {
    init_tracing();
    let ca = DevCa::new("example.org").unwrap();
    let partner = DevCa::new("partner.org").unwrap();
    let (initial, first) = ca.workload_api_response(SERVER_ID).unwrap();
    let api = secure_channel::testkit::WorkloadApiServer::start(initial)
        .await
        .unwrap();

    let source = within(
        CredentialSource::from_workload_api()
            .endpoint(api.endpoint())
            .connect(),
    )
    .await
    .unwrap();
    assert_eq!(source.current().svid().spiffe_id().to_string(), SERVER_ID);
    let mut revisions = source.subscribe();
    let server = TestServer::start(
        SecureChannel::builder(source.clone())
            .allow_client(CLIENT_ID)
            .allow_client("spiffe://partner.org")
            .build()
            .unwrap(),
    )
    .await;
    let client = client(&ca);
    let (mut old, leaf) = connect_and_greet(&client, &server).await;
    assert_eq!(leaf, first.leaf().as_ref());

    // Rotate the SVID and add a federated bundle.
    let (next, second) = ca.workload_api_response(SERVER_ID).unwrap();
    api.rotate(next.with_federated_bundle("partner.org", vec![partner.root_certificate().clone()]));
    wait_for_change(&mut revisions).await;
    assert!(
        source
            .current()
            .bundles()
            .get(partner.trust_domain())
            .is_some()
    );

    let (_new, leaf) = connect_and_greet(&client, &server).await;
    assert_eq!(
        leaf,
        second.leaf().as_ref(),
        "new handshakes use the rotated SVID"
    );
    round_trip(&mut old, "still here").await.unwrap();

    // The federated bundle is in force: a partner.org workload is now accepted.
    let partner_creds = MemorySource::new(Credentials::new(
        partner
            .svid("spiffe://partner.org/reports")
            .issue()
            .unwrap()
            .to_svid()
            .unwrap(),
        TrustBundles::new()
            .with(partner.bundle().unwrap())
            .with(ca.bundle().unwrap()),
    ));
    let partner_client = SecureChannel::builder(&partner_creds)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    let mut stream = within(partner_client.connect_tcp(server.addr))
        .await
        .unwrap();
    assert_eq!(
        read_line(&mut stream).await.unwrap(),
        "spiffe://partner.org/reports"
    );
    assert!(
        api.refused_calls() == 0,
        "the spiffe client sends the security header"
    );
}

#[tokio::test]
async fn workload_api_without_server_times_out_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unix:{}", dir.path().join("missing.sock").display());
    let result = CredentialSource::from_workload_api()
        .endpoint(endpoint.clone())
        .initial_timeout(Duration::from_millis(300))
        .connect()
        .await;
    // Structured: which endpoint, and that nothing came in time (or the client's own error).
    match result {
        Err(ConfigError::WorkloadApi {
            endpoint: named,
            problem:
                secure_channel::WorkloadApiProblem::InitialTimeout { .. }
                | secure_channel::WorkloadApiProblem::Client { .. },
        }) => assert_eq!(named, endpoint),
        other => panic!("expected a Workload API error, got {other:?}"),
    }
}

/// Opens a connection, reads the greeting (which also delivers the session tickets) and
/// returns how the handshake went on the client side.
async fn handshake_kind(client: &SecureChannel, server: &TestServer) -> Option<HandshakeKind> {
    let (stream, _) = connect_and_greet(client, server).await;
    stream.handshake_kind()
}

#[tokio::test]
async fn resumed_session_is_refused_after_its_ca_left_the_bundle() {
    let server_ca = DevCa::new("example.org").unwrap();
    let old_ca = DevCa::new("example.org").unwrap().intermediate().unwrap();
    // The server trusts both CAs of example.org at first.
    let both = TrustBundle::from_der(
        server_ca.trust_domain().clone(),
        vec![
            server_ca.root_certificate().clone(),
            old_ca.root_certificate().clone(),
        ],
    )
    .unwrap();
    let server_svid = server_ca
        .svid(SERVER_ID)
        .issue()
        .unwrap()
        .to_svid()
        .unwrap();
    let server_creds = MemorySource::new(Credentials::new(
        server_svid.clone(),
        TrustBundles::new().with(both),
    ));
    let mut server = TestServer::start(
        SecureChannel::builder(&server_creds)
            .allow_client(CLIENT_ID)
            .build()
            .unwrap(),
    )
    .await;

    let client_creds = MemorySource::new(Credentials::new(
        old_ca.svid(CLIENT_ID).issue().unwrap().to_svid().unwrap(),
        TrustBundles::new().with(server_ca.bundle().unwrap()),
    ));
    let client = SecureChannel::builder(&client_creds)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();

    assert_eq!(
        handshake_kind(&client, &server).await,
        Some(HandshakeKind::Full)
    );
    assert_eq!(server.next().await.unwrap(), CLIENT_ID);
    assert_eq!(
        handshake_kind(&client, &server).await,
        Some(HandshakeKind::Resumed)
    );
    assert_eq!(server.next().await.unwrap(), CLIENT_ID);

    // The client's CA leaves the server's bundle while the client still holds session tickets:
    // the server forgets its sessions with the rotation, so the client's resumption attempt
    // falls back to a full handshake, whose client certificate no longer validates.
    server_creds.update(Credentials::new(
        server_svid,
        TrustBundles::new().with(server_ca.bundle().unwrap()),
    ));
    let attempt = async {
        let mut stream = within(client.connect_tcp(server.addr)).await?;
        read_line(&mut stream)
            .await
            .map_err(ConnectionError::Handshake)
    };
    assert!(
        attempt.await.is_err(),
        "the refused client must not be served"
    );
    match server.next().await {
        Err(ConnectionError::PeerRejected(PeerRejection::InvalidChain { reason, .. })) => {
            assert_eq!(reason, ChainError::UnknownIssuer);
        }
        other => panic!("expected the client to be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn server_rotation_ends_resumption_of_earlier_sessions() {
    let ca = DevCa::new("example.org").unwrap();
    let server_creds = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let mut server = TestServer::start(
        SecureChannel::builder(&server_creds)
            .allow_client(CLIENT_ID)
            .build()
            .unwrap(),
    )
    .await;
    let client = client(&ca);
    assert_eq!(
        handshake_kind(&client, &server).await,
        Some(HandshakeKind::Full)
    );
    assert_eq!(
        handshake_kind(&client, &server).await,
        Some(HandshakeKind::Resumed)
    );
    let rotated = ca.svid(SERVER_ID).issue().unwrap();
    server_creds.update(Credentials::new(
        rotated.to_svid().unwrap(),
        TrustBundles::new().with(ca.bundle().unwrap()),
    ));
    let (stream, leaf) = connect_and_greet(&client, &server).await;
    assert_eq!(stream.handshake_kind(), Some(HandshakeKind::Full));
    assert_eq!(
        leaf,
        rotated.leaf().as_ref(),
        "the client sees the rotated server SVID"
    );
    for _ in 0..3 {
        assert_eq!(server.next().await.unwrap(), CLIENT_ID);
    }
}

#[tokio::test]
async fn resumed_session_is_refused_once_the_peer_leaf_expired() {
    let ca = DevCa::new("example.org").unwrap();
    let now = SystemTime::now();
    let clock = Arc::new(TestClock::at(now));
    let server_creds = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let mut server = TestServer::start(
        SecureChannel::builder(&server_creds)
            .allow_client(CLIENT_ID)
            .time_provider(clock.clone())
            .build()
            .unwrap(),
    )
    .await;
    let short_lived = ca
        .svid(CLIENT_ID)
        .validity(
            now - Duration::from_secs(60),
            now + Duration::from_secs(120),
        )
        .issue()
        .unwrap();
    let client_creds = MemorySource::new(Credentials::new(
        short_lived.to_svid().unwrap(),
        TrustBundles::new().with(ca.bundle().unwrap()),
    ));
    let client = SecureChannel::builder(&client_creds)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    assert_eq!(
        handshake_kind(&client, &server).await,
        Some(HandshakeKind::Full)
    );
    assert_eq!(server.next().await.unwrap(), CLIENT_ID);

    clock.set(now + Duration::from_secs(300));
    let attempt = async {
        let mut stream = within(client.connect_tcp(server.addr)).await?;
        read_line(&mut stream)
            .await
            .map_err(ConnectionError::Handshake)
    };
    assert!(attempt.await.is_err());
    match server.next().await {
        Err(ConnectionError::PeerRejected(PeerRejection::ResumedSessionInvalid(inner))) => {
            assert!(matches!(
                *inner,
                PeerRejection::InvalidChain {
                    reason: ChainError::Expired { .. },
                    ..
                }
            ));
        }
        other => panic!("expected the expired resumed session to be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn client_rotation_starts_a_full_handshake() {
    let ca = DevCa::new("example.org").unwrap();
    let mut server = static_server(&ca).await;
    let client_creds = MemorySource::new(ca.credentials(CLIENT_ID).unwrap());
    let client = SecureChannel::builder(&client_creds)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    assert_eq!(
        handshake_kind(&client, &server).await,
        Some(HandshakeKind::Full)
    );
    assert_eq!(
        handshake_kind(&client, &server).await,
        Some(HandshakeKind::Resumed)
    );
    client_creds.update(ca.credentials(CLIENT_ID).unwrap());
    assert_eq!(
        handshake_kind(&client, &server).await,
        Some(HandshakeKind::Full),
        "a rotated client must present its new SVID, not resume the old session"
    );
    for _ in 0..3 {
        assert_eq!(server.next().await.unwrap(), CLIENT_ID);
    }
}

/// A client's transport that runs a hook when the client starts its last handshake flight (its
/// first encrypted record: its certificate and Finished), before passing it on. By then both
/// sides have chosen the SVIDs they present; the session tickets come after.
struct OnLastFlight<IO> {
    io: IO,
    hook: Option<Box<dyn FnOnce() + Send>>,
}

/// The TLS record type of encrypted TLS 1.3 records (RFC 8446 5.2).
const APPLICATION_DATA: u8 = 0x17;

impl<IO: AsyncRead + Unpin> AsyncRead for OnLastFlight<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for OnLastFlight<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.first() == Some(&APPLICATION_DATA)
            && let Some(hook) = self.hook.take()
        {
            hook();
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Connects `client` to `server` through [`OnLastFlight`] with `hook`, and reads the greeting.
async fn connect_rotating_midway(
    client: &SecureChannel,
    server: &TestServer,
    hook: impl FnOnce() + Send + 'static,
) -> secure_channel::SecureStream<OnLastFlight<tokio::net::TcpStream>> {
    let tcp = within(tokio::net::TcpStream::connect(server.addr))
        .await
        .unwrap();
    let io = OnLastFlight {
        io: tcp,
        hook: Some(Box::new(hook)),
    };
    let name = ServerName::IpAddress(server.addr.ip().into());
    let mut stream = within(client.connect(name, io)).await.unwrap();
    assert_eq!(stream.handshake_kind(), Some(HandshakeKind::Full));
    assert_eq!(read_line(&mut stream).await.unwrap(), CLIENT_ID);
    stream
}

/// The client reads its session tickets after its last handshake flight: if it rotated in
/// between, that session was made with its old SVID and must not be resumed under the new one
/// (the server would go on seeing the old SVID).
#[tokio::test]
async fn a_session_straddling_a_client_rotation_is_not_resumed() {
    let ca = DevCa::new("example.org").unwrap();
    let mut server = static_server(&ca).await;
    let client_creds = Arc::new(MemorySource::new(ca.credentials(CLIENT_ID).unwrap()));
    let client = SecureChannel::builder(client_creds.as_ref())
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    let rotate = {
        let (client_creds, credentials) =
            (client_creds.clone(), ca.credentials(CLIENT_ID).unwrap());
        move || client_creds.update(credentials)
    };
    let _straddling = connect_rotating_midway(&client, &server, rotate).await;
    assert_eq!(
        handshake_kind(&client, &server).await,
        Some(HandshakeKind::Full),
        "a session made with the old SVID was resumed after the rotation"
    );
    // Sessions made after the rotation are resumed as usual.
    assert_eq!(
        handshake_kind(&client, &server).await,
        Some(HandshakeKind::Resumed)
    );
    for _ in 0..3 {
        assert_eq!(server.next().await.unwrap(), CLIENT_ID);
    }
}

/// The server issues its tickets on the client's last flight, a round trip after it chose its
/// SVID: a session made before a rotation in between must not be resumed after it (the client
/// would go on seeing the old SVID).
#[tokio::test]
async fn a_session_straddling_a_server_rotation_is_not_resumed() {
    let ca = DevCa::new("example.org").unwrap();
    let server_creds = Arc::new(MemorySource::new(ca.credentials(SERVER_ID).unwrap()));
    let mut server = TestServer::start(
        SecureChannel::builder(server_creds.as_ref())
            .allow_client(CLIENT_ID)
            .build()
            .unwrap(),
    )
    .await;
    let client = client(&ca);
    let rotated = ca.svid(SERVER_ID).issue().unwrap();
    let rotate = {
        let (server_creds, svid) = (server_creds.clone(), rotated.to_svid().unwrap());
        let bundles = TrustBundles::new().with(ca.bundle().unwrap());
        move || server_creds.update(Credentials::new(svid, bundles))
    };
    let straddling = connect_rotating_midway(&client, &server, rotate).await;
    assert_ne!(
        straddling.peer_identity().leaf_certificate().as_ref(),
        rotated.leaf().as_ref(),
        "the rotation came after the server chose its SVID"
    );

    let (stream, leaf) = connect_and_greet(&client, &server).await;
    assert_eq!(
        stream.handshake_kind(),
        Some(HandshakeKind::Full),
        "a session made with the server's old SVID was resumed after the rotation"
    );
    assert_eq!(leaf, rotated.leaf().as_ref());
    for _ in 0..2 {
        assert_eq!(server.next().await.unwrap(), CLIENT_ID);
    }
}

#[tokio::test]
async fn removing_a_federated_bundle_ends_trust_in_that_trust_domain() {
    let ca = DevCa::new("example.org").unwrap();
    let partner = DevCa::new("partner.org").unwrap();
    let server_svid = ca.svid(SERVER_ID).issue().unwrap().to_svid().unwrap();
    let federated = TrustBundles::new()
        .with(ca.bundle().unwrap())
        .with(partner.bundle().unwrap());
    let server_creds = MemorySource::new(Credentials::new(server_svid.clone(), federated));
    let mut server = TestServer::start(
        SecureChannel::builder(&server_creds)
            .allow_client("spiffe://partner.org")
            .build()
            .unwrap(),
    )
    .await;
    let partner_creds = MemorySource::new(Credentials::new(
        partner
            .svid("spiffe://partner.org/reports")
            .issue()
            .unwrap()
            .to_svid()
            .unwrap(),
        TrustBundles::new()
            .with(partner.bundle().unwrap())
            .with(ca.bundle().unwrap()),
    ));
    let client = SecureChannel::builder(&partner_creds)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    let mut stream = within(client.connect_tcp(server.addr)).await.unwrap();
    assert_eq!(
        read_line(&mut stream).await.unwrap(),
        "spiffe://partner.org/reports"
    );
    assert_eq!(server.next().await.unwrap(), "spiffe://partner.org/reports");

    // The federation ends: the partner's bundle leaves the server's set.
    server_creds.update(Credentials::new(
        server_svid,
        TrustBundles::new().with(ca.bundle().unwrap()),
    ));
    let attempt = async {
        let mut stream = within(client.connect_tcp(server.addr)).await?;
        read_line(&mut stream)
            .await
            .map_err(ConnectionError::Handshake)
    };
    assert!(attempt.await.is_err());
    assert!(matches!(
        server.next().await,
        Err(ConnectionError::PeerRejected(
            PeerRejection::UnknownTrustDomain { .. }
        ))
    ));
}

#[test]
fn concurrent_memory_updates_each_publish_their_own_revision() {
    // Caches are keyed by revision: two updates must never publish the same number.
    let ca = DevCa::new("example.org").unwrap();
    let credentials = ca.credentials(SERVER_ID).unwrap();
    let memory = Arc::new(MemorySource::new(credentials.clone()));
    let source = memory.source();
    const THREADS: u64 = 8;
    const UPDATES: u64 = 100;
    let start = Arc::new(std::sync::Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (memory, credentials, start) = (memory.clone(), credentials.clone(), start.clone());
            std::thread::spawn(move || {
                // The rotation log line is written between reading the revision and publishing
                // the next; a writer that pauses there gives the other threads time to collide.
                let pausing = tracing_subscriber::fmt()
                    .with_writer(|| {
                        std::thread::sleep(Duration::from_micros(20));
                        std::io::sink()
                    })
                    .finish();
                tracing::subscriber::with_default(pausing, || {
                    start.wait();
                    for _ in 0..UPDATES {
                        memory.update(credentials.clone());
                    }
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(source.revision(), 1 + THREADS * UPDATES);
}

#[tokio::test]
async fn a_bad_federated_bundle_keeps_its_last_good_one_and_stops_nothing_else() {
    init_tracing();
    let ca = DevCa::new("example.org").unwrap();
    let partner = DevCa::new("partner.org").unwrap();
    let impostor = DevCa::new("other.org").unwrap();
    let (initial, _) = ca.workload_api_response(SERVER_ID).unwrap();
    let api = secure_channel::testkit::WorkloadApiServer::start(
        initial.with_federated_bundle("partner.org", vec![partner.root_certificate().clone()]),
    )
    .await
    .unwrap();
    let source = within(
        CredentialSource::from_workload_api()
            .endpoint(api.endpoint())
            .connect(),
    )
    .await
    .unwrap();
    let mut revisions = source.subscribe();
    let partner_td = partner.trust_domain().clone();
    let third_td = secure_channel::TrustDomain::new("third.org").unwrap();

    // Our SVID rotates while partner.org's bundle turns bad (a CA of another trust domain) and a
    // new trust domain arrives with a bad bundle.
    let (next, second) = ca.workload_api_response(SERVER_ID).unwrap();
    api.rotate(
        next.with_federated_bundle("partner.org", vec![impostor.root_certificate().clone()])
            .with_federated_bundle("third.org", vec![impostor.root_certificate().clone()]),
    );
    assert_eq!(wait_for_change(&mut revisions).await, 2);
    let current = source.current();
    assert_eq!(
        current.svid().chain()[0].as_ref(),
        second.leaf().as_ref(),
        "our own SVID rotated despite the bad federated bundles"
    );
    assert_eq!(
        current.bundles().get(&partner_td).unwrap().certificates(),
        &[partner.root_certificate().clone()],
        "partner.org keeps its last good bundle"
    );
    assert!(current.bundles().get(&third_td).is_none());
    assert_eq!(source.failed_reloads(), 2, "each refused bundle is counted");

    // A bad bundle for our own trust domain refuses the whole update.
    let (_, third) = ca.workload_api_response(SERVER_ID).unwrap();
    let mut failures = source.subscribe_failed_reloads();
    api.rotate(secure_channel::testkit::X509SvidResponse::new(
        SERVER_ID,
        third.chain().to_vec(),
        third.key().clone_key(),
        vec![impostor.root_certificate().clone()],
    ));
    within(failures.changed()).await.unwrap();
    assert_eq!(source.revision(), 2);
    assert_eq!(
        source.current().svid().chain()[0].as_ref(),
        second.leaf().as_ref()
    );
}
