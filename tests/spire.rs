//! Interop with a real SPIRE (server and agent, v1.13.3) and go-spiffe (v2.9.0) peers.
//!
//! Every test here is ignored: they need the SPIRE deployment that `interop/run.sh` builds,
//! starts and registers the workloads in, then runs each case in its own process, in order, as
//! the binary copy whose path the case's SPIFFE ID is registered for (unix workload attestor,
//! `unix:path` selector). Run them with `interop/run.sh`, never with `cargo test -- --ignored`.
//!
//! The environment run.sh sets: `SPIFFE_ENDPOINT_SOCKET` (the a.test agent),
//! `SC_INTEROP_AGENT_B` (the b.test agent), `SC_INTEROP_BIN` (the copies of this binary and the
//! Go programs), `SC_INTEROP_CTL` (interop/ctl.sh: stop or start an agent, delete an entry,
//! remove a federation relationship).
//!
//! Workload `sc-peer` is this binary again, spawned by a case as a separate process running the
//! `helper` test with `SC_INTEROP_ROLE=server`: an mTLS server of its own SVID.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::time_provider::TimeProvider;
use rustls_pki_types::{PrivateKeyDer, UnixTime};
use secure_channel::federation::{
    BundleEndpointClient, BundleEndpointServer, BundleEndpointService, DEFAULT_MAX_BUNDLE_SIZE,
    FederationError, FetchError, SpiffeBundle,
};
use secure_channel::identity::PeerRejection;
use secure_channel::jwt::{JwtBundles, JwtSvidSource, JwtValidator, KeySource, TokenErrorKind};
use secure_channel::layer::client_token::ClientTokenLayer;
use secure_channel::source::FederatedBundles;
use secure_channel::testkit::DevCa;
use secure_channel::transport::WebPkiConnector;
use secure_channel::{
    ConnectionError, CredentialSource, CredentialStatus, Credentials, MemorySource, PeerIdentity,
    SecureChannel, SecureStream, SpiffeId, Svid, TrustBundle, TrustBundles, TrustDomain,
};
use sha2::{Digest, Sha256};
use support::within;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdout, Command};
use tower::ServiceExt;

const MAIN: &str = "spiffe://a.test/rust/main";
const PEER: &str = "spiffe://a.test/rust/peer";
const FED: &str = "spiffe://a.test/rust/fed";
const GO_SERVER: &str = "spiffe://a.test/go/server";
const GO_CLIENT: &str = "spiffe://a.test/go/client";
const GO_JWT: &str = "spiffe://a.test/go/jwt";
const B_GO_CLIENT: &str = "spiffe://b.test/go/client";
const AUDIENCE: &str = "spiffe://a.test/rust/main";

/// The longest any wait for SPIRE may take (agent sync is 5 s, rotation at half of 30 s).
const SPIRE_WAIT: Duration = Duration::from_secs(90);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run interop/run.sh"))
}

fn bin(name: &str) -> PathBuf {
    PathBuf::from(env("SC_INTEROP_BIN")).join(name)
}

fn a_test() -> TrustDomain {
    TrustDomain::new("a.test").unwrap()
}

fn b_test() -> TrustDomain {
    TrustDomain::new("b.test").unwrap()
}

/// Runs interop/ctl.sh (bounded); fails the test if it fails.
async fn ctl(args: &[&str]) {
    ctl_output(args).await;
}

/// Polls `check` every 100 ms until it holds, failing the test after `limit`.
async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn workload_source() -> CredentialSource {
    CredentialSource::from_workload_api()
        .initial_timeout(SPIRE_WAIT)
        .connect()
        .await
        .unwrap()
}

fn leaf_thumbprint(source: &CredentialSource) -> String {
    hex(&Sha256::digest(&source.current().svid().chain()[0]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A child process (killed when dropped) whose stdout is read line by line. Its stdin is a
/// pipe: a helper exits when it closes, so no helper outlives its test.
struct Spawned {
    _child: Child,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Spawned {
    fn start(command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            _child: child,
            stdout,
        }
    }

    /// The rest of the first line holding `prefix`, after it.
    async fn line_after(&mut self, prefix: &str) -> String {
        let read = async {
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                // libtest prints "test helper ... " without a newline before the helper's output.
                if let Some(at) = line.find(prefix) {
                    return line[at + prefix.len()..].to_owned();
                }
            }
            panic!("child exited before printing {prefix:?}");
        };
        tokio::time::timeout(SPIRE_WAIT, read)
            .await
            .unwrap_or_else(|_| panic!("no {prefix:?} line from the child"))
    }
}

/// This binary under the `sc-peer` name, serving mTLS with its own SVID for `allow`; returns it
/// with its address.
async fn spawn_peer_server(allow: &str) -> (Spawned, std::net::SocketAddr) {
    let mut peer = Spawned::start(
        Command::new(bin("sc-peer"))
            .args([
                "--exact",
                "helper",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SC_INTEROP_ROLE", "server")
            .env("SC_INTEROP_ALLOW", allow),
    );
    let addr = peer.line_after("listening on ").await.parse().unwrap();
    (peer, addr)
}

/// Runs a Go program to completion (bounded): (success, stdout, stderr).
async fn run_go(name: &str, args: &[&str], socket: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new(bin(name));
    command.args(args).kill_on_drop(true);
    if let Some(socket) = socket {
        command.env("SPIFFE_ENDPOINT_SOCKET", socket);
    }
    let output = tokio::time::timeout(SPIRE_WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{name} {args:?} timed out"))
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    )
}

async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<String> {
    support::read_line(stream).await
}

/// One request on an established connection to the peer helper: a line, echoed.
async fn request(stream: &mut SecureStream<TcpStream>, line: &str) -> std::io::Result<()> {
    within(stream.write_all(format!("{line}\n").as_bytes())).await?;
    let echoed = read_line(stream).await?;
    if echoed != line {
        return Err(std::io::Error::other(format!(
            "echoed {echoed:?}, sent {line:?}"
        )));
    }
    Ok(())
}

/// What one new connection to the peer helper saw.
struct Handshake {
    stream: SecureStream<TcpStream>,
    /// The client ID and leaf thumbprint the server saw, and the server's own leaf thumbprint
    /// when it answered.
    caller: String,
    caller_thumbprint: String,
    server_own_thumbprint: String,
}

async fn connect_peer(
    channel: &SecureChannel,
    addr: std::net::SocketAddr,
) -> Result<Handshake, String> {
    let mut stream = within(channel.connect_tcp(addr))
        .await
        .map_err(|e| e.to_string())?;
    let greeting = read_line(&mut stream).await.map_err(|e| e.to_string())?;
    let mut parts = greeting.split(' ').map(str::to_owned);
    let (Some(caller), Some(caller_thumbprint), Some(server_own_thumbprint)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad greeting {greeting:?}"));
    };
    Ok(Handshake {
        stream,
        caller,
        caller_thumbprint,
        server_own_thumbprint,
    })
}

/// The peer identity of this workload's own SVID, through a loopback handshake with itself.
async fn own_peer_identity(source: &CredentialSource, id: &str) -> PeerIdentity {
    let channel = SecureChannel::builder(source.clone())
        .allow_client(id)
        .expect_server(id)
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = channel.clone();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await.map(|s| s.peer_identity().clone())
    });
    let _client = within(channel.connect_tcp(addr)).await.unwrap();
    within(accept).await.unwrap().unwrap()
}

/// The JWT-SVID our client layer attaches for `audience` (the token in its Authorization
/// header).
async fn our_jwt_svid(jwt: &JwtSvidSource, audience: &str) -> String {
    let seen = Arc::new(Mutex::new(None));
    let inner = {
        let seen = Arc::clone(&seen);
        tower::service_fn(move |request: http::Request<()>| {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned());
            *seen.lock().unwrap() = header;
            async { Ok::<_, std::convert::Infallible>(http::Response::new(())) }
        })
    };
    let service = tower::ServiceBuilder::new()
        .layer(ClientTokenLayer::provider(jwt.token_provider(audience)))
        .service(inner);
    within(service.oneshot(http::Request::new(())))
        .await
        .unwrap();
    let header = seen
        .lock()
        .unwrap()
        .take()
        .expect("no Authorization header");
    header.strip_prefix("Bearer ").unwrap().to_owned()
}

/// The claims of a compact JWT (not verified: for looking at SPIRE's shape only).
fn claims_of(token: &str) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine as _;
    let part = |i: usize| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(i).unwrap())
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    (part(0), part(1))
}

/// A clock `ahead` of the system clock.
#[derive(Debug)]
struct Ahead(Duration);

impl TimeProvider for Ahead {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()?
                + self.0,
        ))
    }
}

/// Not a test: the entry point of the helper processes the cases spawn (`SC_INTEROP_ROLE`).
/// Without the variable it returns at once.
#[tokio::test]
#[ignore = "needs SPIRE: run interop/run.sh"]
async fn helper() {
    let Ok(role) = std::env::var("SC_INTEROP_ROLE") else {
        return;
    };
    // Exit when the test that spawned us closes our stdin (or dies).
    tokio::spawn(async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        std::process::exit(0);
    });
    assert_eq!(role, "server", "unknown SC_INTEROP_ROLE");
    let source = workload_source().await;
    let channel = SecureChannel::builder(source.clone())
        .allow_client(env("SC_INTEROP_ALLOW").as_str())
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let channel = channel.clone();
        let source = source.clone();
        tokio::spawn(async move {
            let Ok(mut stream) = channel.accept(tcp).await else {
                return;
            };
            let peer = stream.peer_identity().clone();
            let greeting = format!(
                "{} {} {}\n",
                peer.spiffe_id(),
                hex(peer.thumbprint_sha256()),
                leaf_thumbprint(&source)
            );
            if stream.write_all(greeting.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// 1. `CredentialSource::from_workload_api()` and `JwtSvidSource` against the real agent: the
///    X.509-SVID, the bundle, a JWT-SVID and the JWT bundle arrive, in SPIRE's shapes.
#[tokio::test]
#[ignore = "needs SPIRE: run interop/run.sh"]
async fn sources_deliver_svid_bundles_and_jwt() {
    support::init_tracing();
    let source = workload_source().await;
    let credentials = source.current();
    let svid = credentials.svid();
    assert_eq!(svid.spiffe_id().to_string(), MAIN);
    // SPIRE's CA is the root here: the chain is the leaf alone.
    assert_eq!(svid.chain().len(), 1, "SPIRE sends the leaf only");
    let lifetime = svid
        .not_after()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    assert!(
        lifetime <= Duration::from_secs(31),
        "x509SVIDTTL 30: {lifetime:?}"
    );
    let bundle = credentials
        .bundles()
        .get(&a_test())
        .expect("no a.test bundle");
    assert!(!bundle.certificates().is_empty());
    // main does not federate: only its own trust domain.
    assert_eq!(credentials.bundles().len(), 1);

    let jwt = JwtSvidSource::builder()
        .initial_timeout(SPIRE_WAIT)
        .connect()
        .await
        .unwrap();
    assert_eq!(jwt.bundles().trust_domains(), vec![a_test()]);
    let token = our_jwt_svid(&jwt, AUDIENCE).await;
    let (header, claims) = claims_of(&token);
    assert_eq!(claims["sub"], MAIN);
    assert_eq!(claims["aud"], serde_json::json!([AUDIENCE]));
    assert!(header["kid"].is_string(), "{header}");
    assert_eq!(header["typ"], "JWT", "{header}");
    eprintln!("SPIRE JWT-SVID header {header}, claims {claims}");
}

/// 2. Rotation: SPIRE renews both workloads' SVIDs at least twice during steady traffic between
///    two of our workloads (this one and the sc-peer helper); no request fails, every new
///    handshake presents the current SVID, and an established connection lives through it all.
#[tokio::test]
#[ignore = "needs SPIRE: run interop/run.sh"]
async fn rotation_under_traffic() {
    support::init_tracing();
    let source = workload_source().await;
    let channel = SecureChannel::builder(source.clone())
        .expect_server(PEER)
        .build()
        .unwrap();
    let (_peer, addr) = spawn_peer_server(MAIN).await;
    let mut long_lived = connect_peer(&channel, addr).await.unwrap();

    let mut ours = BTreeSet::new();
    let mut theirs = BTreeSet::new();
    let mut requests = 0u32;
    let mut racy = 0u32;
    let deadline = Instant::now() + SPIRE_WAIT;
    while ours.len() < 3 || theirs.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no two rotations within {SPIRE_WAIT:?}: ours {}, theirs {}",
            ours.len(),
            theirs.len()
        );
        let before = leaf_thumbprint(&source);
        let mut fresh = connect_peer(&channel, addr)
            .await
            .unwrap_or_else(|e| panic!("request {requests} failed: {e}"));
        let after = leaf_thumbprint(&source);
        assert_eq!(fresh.caller, MAIN);
        let presented = hex(fresh.stream.peer_identity().thumbprint_sha256());
        if before == after {
            // No rotation on our side during this handshake: the server saw our current SVID.
            assert_eq!(fresh.caller_thumbprint, after, "an old SVID was presented");
        }
        if presented != fresh.server_own_thumbprint {
            // The server rotated between its handshake and its greeting: at most once a rotation.
            racy += 1;
        }
        ours.insert(fresh.caller_thumbprint.clone());
        theirs.insert(presented);
        request(&mut fresh.stream, "ping").await.unwrap();
        request(&mut long_lived.stream, &format!("long {requests}"))
            .await
            .unwrap();
        requests += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        racy <= 2,
        "{racy} handshakes presented an SVID older than the server's current one"
    );
    eprintln!(
        "{requests} requests, {} client and {} server SVIDs, 0 failures",
        ours.len(),
        theirs.len()
    );
}

/// 3. The agent restarted under traffic: established connections keep working while it is
///    down, new handshakes still work on the SVIDs in hand, and after it is back the source
///    reconnects and new SVIDs arrive.
#[tokio::test]
#[ignore = "needs SPIRE: run interop/run.sh"]
async fn agent_restart_under_traffic() {
    support::init_tracing();
    let source = workload_source().await;
    let channel = SecureChannel::builder(source.clone())
        .expect_server(PEER)
        .build()
        .unwrap();
    let (_peer, addr) = spawn_peer_server(MAIN).await;
    let mut long_lived = connect_peer(&channel, addr).await.unwrap();

    ctl(&["agent-stop", "a"]).await;
    let stopped_at = leaf_thumbprint(&source);
    // Down for 3 s of traffic: the open connection and new handshakes both keep working.
    let down_until = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    while Instant::now() < down_until {
        request(&mut long_lived.stream, &format!("down {n}"))
            .await
            .unwrap();
        let mut fresh = connect_peer(&channel, addr).await.unwrap();
        request(&mut fresh.stream, "ping").await.unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    ctl(&["agent-start", "a"]).await;
    let restarted = Instant::now();
    wait_until("a new SVID after the agent restart", SPIRE_WAIT, || {
        leaf_thumbprint(&source) != stopped_at
    })
    .await;
    eprintln!(
        "new SVID {:?} after the agent came back",
        restarted.elapsed()
    );
    request(&mut long_lived.stream, "after").await.unwrap();
    let fresh = connect_peer(&channel, addr).await.unwrap();
    assert_eq!(fresh.caller_thumbprint, leaf_thumbprint(&source));
}

/// 3b. The agent gone for good: the credentials in hand are used until they expire, then the
///    channel fails closed (`CredentialStatus::Expired`, `ConnectionError::CredentialsExpired`); it
///    recovers by itself once an agent delivers a valid SVID again.
#[tokio::test]
#[ignore = "needs SPIRE: run interop/run.sh"]
async fn agent_gone_fails_closed_at_expiry() {
    support::init_tracing();
    let source = workload_source().await;
    let channel = SecureChannel::builder(source.clone())
        .expect_server(PEER)
        .build()
        .unwrap();
    let (_peer, addr) = spawn_peer_server(MAIN).await;
    connect_peer(&channel, addr).await.unwrap();

    ctl(&["agent-stop", "a"]).await;
    let not_after = source.current().svid().not_after();
    wait_until("the SVID to expire", SPIRE_WAIT, || {
        matches!(
            channel.credential_status(),
            CredentialStatus::Expired { .. }
        )
    })
    .await;
    assert!(SystemTime::now() >= not_after);
    match within(channel.connect_tcp(addr)).await {
        Err(ConnectionError::CredentialsExpired { spiffe_id, .. }) => {
            assert_eq!(spiffe_id.to_string(), MAIN)
        }
        Err(other) => panic!("expected CredentialsExpired, got {other}"),
        Ok(_) => panic!("connected with an expired SVID"),
    }

    ctl(&["agent-start", "a"]).await;
    // Not `Valid`: a 30 s SVID is always within the default 10 min expiry warning.
    wait_until(
        "an unexpired SVID after the agent came back",
        SPIRE_WAIT,
        || {
            !matches!(
                channel.credential_status(),
                CredentialStatus::Expired { .. }
            )
        },
    )
    .await;
    // The helper's SVID expired too: it recovers the same way; allow it its own resync.
    let deadline = Instant::now() + SPIRE_WAIT;
    loop {
        match connect_peer(&channel, addr).await {
            Ok(fresh) => {
                assert_eq!(fresh.caller, MAIN);
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// 4. The registration entry of this workload (sc-doomed) deleted in SPIRE: the agent withdraws
///    the SVID (`PERMISSION_DENIED`). The X.509 source treats it as a failed update (counted in
///    `failed_reloads`, last good credentials kept, as documented for every source), so the
///    workload keeps its identity until the SVID expires and then fails closed; the JWT source
///    removes every JWT bundle at once (documented for `JwtSvidSource`).
#[tokio::test]
#[ignore = "needs SPIRE: run interop/run.sh"]
async fn deleted_entry() {
    support::init_tracing();
    let source = workload_source().await;
    let id = source.current().svid().spiffe_id().to_string();
    assert_eq!(id, "spiffe://a.test/rust/doomed");
    let jwt = JwtSvidSource::builder()
        .initial_timeout(SPIRE_WAIT)
        .connect()
        .await
        .unwrap();
    let channel = SecureChannel::builder(source.clone())
        .expect_server(PEER)
        .build()
        .unwrap();
    let failed_before = source.failed_reloads();

    ctl(&["entry-delete", "a", "doomed"]).await;
    wait_until("the X.509 withdrawal to be refused", SPIRE_WAIT, || {
        source.failed_reloads() > failed_before
    })
    .await;
    assert_eq!(
        source.current().svid().spiffe_id().to_string(),
        id,
        "the last good SVID is kept"
    );
    wait_until("the JWT bundles to be removed", SPIRE_WAIT, || {
        jwt.bundles().trust_domains().is_empty()
    })
    .await;

    // Fails closed when the SVID in hand expires (at most 30 s).
    wait_until("the kept SVID to expire", SPIRE_WAIT, || {
        matches!(
            channel.credential_status(),
            CredentialStatus::Expired { .. }
        )
    })
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let Err(err) = within(channel.connect_tcp(listener.local_addr().unwrap())).await else {
        panic!("connected after the entry was deleted and the SVID expired");
    };
    assert!(
        matches!(err, ConnectionError::CredentialsExpired { .. }),
        "{err}"
    );
}

/// 5. JWT-SVIDs minted by SPIRE checked by our `JwtValidator` over the agent's JWT bundles
///    (right audience accepted; wrong audience, expired and another trust domain's token
///    refused), and ours checked by go-spiffe.
#[tokio::test]
#[ignore = "needs SPIRE: run interop/run.sh"]
async fn jwt_svids() {
    support::init_tracing();
    let source = workload_source().await;
    let peer = own_peer_identity(&source, MAIN).await;
    let jwt = JwtSvidSource::builder()
        .initial_timeout(SPIRE_WAIT)
        .connect()
        .await
        .unwrap();
    let validator = JwtValidator::jwt_svids(AUDIENCE)
        .key_source(jwt.key_source())
        .build()
        .unwrap();

    // Ours (fetched through JwtSvidSource and attached by ClientTokenLayer) ...
    let ours = our_jwt_svid(&jwt, AUDIENCE).await;
    let claims = validator.validate(&ours, &peer).await.unwrap();
    assert_eq!(claims.spiffe_id().unwrap().to_string(), MAIN);
    // ... and go-spiffe's view of it (jwtsvid.ParseAndValidate over its own Workload API bundles).
    let (ok, out, err) = run_go("go-jwt", &["validate", "-audience", AUDIENCE, &ours], None).await;
    assert!(ok, "go-spiffe refused our JWT-SVID: {err}");
    assert_eq!(out, format!("valid {MAIN}"));
    let (ok, _, err) = run_go(
        "go-jwt",
        &["validate", "-audience", "spiffe://a.test/other", &ours],
        None,
    )
    .await;
    assert!(!ok, "go-spiffe accepted a wrong audience");
    eprintln!("go-spiffe, wrong audience: {err}");

    // A go-spiffe workload's JWT-SVID for our audience: accepted.
    let (ok, theirs, err) = run_go("go-jwt", &["fetch", "-audience", AUDIENCE], None).await;
    assert!(ok, "{err}");
    let claims = validator.validate(&theirs, &peer).await.unwrap();
    assert_eq!(claims.spiffe_id().unwrap().to_string(), GO_JWT);

    // For another audience: refused.
    let (ok, other_audience, err) = run_go(
        "go-jwt",
        &["fetch", "-audience", "spiffe://a.test/other"],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let refused = validator
        .validate(&other_audience, &peer)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), TokenErrorKind::WrongAudience, "{refused}");

    // Expired: the same token under a clock past its exp (plus the 5 s leeway).
    let (_, claims) = claims_of(&theirs);
    let exp = claims["exp"].as_u64().unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let later = JwtValidator::jwt_svids(AUDIENCE)
        .key_source(jwt.key_source())
        .time_provider(Arc::new(Ahead(Duration::from_secs(exp - now + 6))))
        .build()
        .unwrap();
    let refused = later.validate(&theirs, &peer).await.unwrap_err();
    assert_eq!(refused.kind(), TokenErrorKind::Expired, "{refused}");

    // Minted by b.test's SPIRE (a go-spiffe workload there): main does not federate, so refused.
    let agent_b = env("SC_INTEROP_AGENT_B");
    let (ok, foreign, err) =
        run_go("go-jwt", &["fetch", "-audience", AUDIENCE], Some(&agent_b)).await;
    assert!(ok, "{err}");
    assert_eq!(claims_of(&foreign).1["sub"], "spiffe://b.test/go/jwt");
    let refused = validator.validate(&foreign, &peer).await.unwrap_err();
    assert_eq!(refused.kind(), TokenErrorKind::UnknownKey, "{refused}");
}

/// 6. go-spiffe peers, SPIRE SVIDs on both sides: our connector to the go server and the go
///    client to our listener; refusals both ways.
#[tokio::test]
#[ignore = "needs SPIRE: run interop/run.sh"]
async fn go_spiffe_peers() {
    support::init_tracing();
    let source = workload_source().await;

    // Our connector to go-spiffe's spiffetls server (which authorizes exactly MAIN).
    let mut server =
        Spawned::start(Command::new(bin("go-server")).args(["-allow", MAIN, "-exit-on-stdin-eof"]));
    let addr: std::net::SocketAddr = server.line_after("listening on ").await.parse().unwrap();
    let to_go = SecureChannel::builder(source.clone())
        .expect_server(GO_SERVER)
        .build()
        .unwrap();
    let mut stream = within(to_go.connect_tcp(addr)).await.unwrap();
    assert_eq!(stream.peer_identity().spiffe_id().to_string(), GO_SERVER);
    within(stream.write_all(b"whoami\n")).await.unwrap();
    assert_eq!(read_line(&mut stream).await.unwrap(), MAIN);

    // Expecting another server ID: refused, and the error names both IDs.
    let wrong = "spiffe://a.test/not-the-go-server";
    let mismatched = SecureChannel::builder(source.clone())
        .expect_server(wrong)
        .build()
        .unwrap();
    let Err(err) = within(mismatched.connect_tcp(addr)).await else {
        panic!("connected to a server with another ID");
    };
    assert!(
        matches!(
            err,
            ConnectionError::PeerRejected(PeerRejection::NotAllowed { .. })
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains(GO_SERVER) && message.contains(wrong),
        "{message}"
    );

    // go-spiffe's spiffetls client (expecting MAIN) to our listener.
    let (accepted, addr) = serve_once(&source, GO_CLIENT).await;
    let (ok, out, err) = run_go("go-client", &["-addr", &addr, "-expect", MAIN], None).await;
    assert!(ok, "go client failed: {err}");
    assert_eq!(out, format!("reply: {GO_CLIENT}"));
    assert_eq!(within(accepted).await.unwrap().unwrap(), GO_CLIENT);

    // A go client not on our allow-list: refused in the handshake; the go client fails.
    let (accepted, addr) = serve_once(&source, "spiffe://a.test/someone-else").await;
    let (ok, _, err) = run_go("go-client", &["-addr", &addr, "-expect", MAIN], None).await;
    assert!(
        !ok,
        "the go client got an answer from a server that refused it"
    );
    eprintln!("go client, refused: {err}");
    match within(accepted).await.unwrap() {
        Err(ConnectionError::PeerRejected(PeerRejection::NotAllowed { presented, .. })) => {
            assert_eq!(presented.to_string(), GO_CLIENT);
        }
        other => panic!("expected NotAllowed, got {other:?}"),
    }
}

/// Accepts one connection with a channel allowing `allow`; answers each line with the
/// caller's ID. Returns the accept result (the caller's ID) and the address.
async fn serve_once(
    source: &CredentialSource,
    allow: &str,
) -> (
    tokio::task::JoinHandle<Result<String, ConnectionError>>,
    String,
) {
    let channel = SecureChannel::builder(source.clone())
        .allow_client(allow)
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = channel.accept(tcp).await?;
        let caller = stream.peer_identity().spiffe_id().to_string();
        let (read, mut write) = tokio::io::split(&mut stream);
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(_)) = lines.next_line().await {
            if write
                .write_all(format!("{caller}\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
        Ok(caller)
    });
    (task, addr)
}

/// 7. Federation: a.test and b.test federated through their bundle endpoints (https_spiffe).
///    This workload (a.test, federating with b.test) admits b.test's go client through the
///    federated bundle its agent delivers, and stops admitting it once the relationship (and
///    the bundle) is removed from a.test's server.
#[tokio::test]
#[ignore = "needs SPIRE: run interop/run.sh"]
async fn federation() {
    support::init_tracing();
    let source = workload_source().await;
    assert_eq!(source.current().svid().spiffe_id().to_string(), FED);
    wait_until("b.test's bundle from the agent", SPIRE_WAIT, || {
        source.current().bundles().get(&b_test()).is_some()
    })
    .await;
    let agent_b = env("SC_INTEROP_AGENT_B");

    let (accepted, addr) = serve_once(&source, B_GO_CLIENT).await;
    let (ok, out, err) = run_go(
        "go-client",
        &["-addr", &addr, "-expect", FED],
        Some(&agent_b),
    )
    .await;
    assert!(ok, "b.test's go client failed: {err}");
    assert_eq!(out, format!("reply: {B_GO_CLIENT}"));
    assert_eq!(within(accepted).await.unwrap().unwrap(), B_GO_CLIENT);

    ctl(&["federation-remove", "a", "b.test"]).await;
    wait_until("b.test's bundle to be withdrawn", SPIRE_WAIT, || {
        source.current().bundles().get(&b_test()).is_none()
    })
    .await;
    let (accepted, addr) = serve_once(&source, B_GO_CLIENT).await;
    let (ok, _, err) = run_go(
        "go-client",
        &["-addr", &addr, "-expect", FED],
        Some(&agent_b),
    )
    .await;
    assert!(
        !ok,
        "b.test's go client was served after the federation was removed"
    );
    eprintln!("b.test's go client after the federation was removed: {err}");
    match within(accepted).await.unwrap() {
        Err(ConnectionError::PeerRejected(PeerRejection::UnknownTrustDomain { presented })) => {
            assert_eq!(presented.to_string(), B_GO_CLIENT);
        }
        other => panic!("expected UnknownTrustDomain, got {other:?}"),
    }
}

/// b.test's bundle as SPIRE first served it (saved by run.sh), parsed by our SPIFFE bundle
/// parser.
fn b_test_bootstrap() -> SpiffeBundle {
    let path = PathBuf::from(env("SC_INTEROP_WORK")).join("b/bundle.spiffe");
    let document = std::fs::read(&path).unwrap();
    SpiffeBundle::parse(&b_test(), &document, DEFAULT_MAX_BUNDLE_SIZE).unwrap()
}

/// 8. Our bundle endpoint client against SPIRE's bundle endpoint (https_spiffe): this workload
///    (a.test, main: no federation in SPIRE) fetches b.test's bundle from b.test's SPIRE
///    server itself, authenticated as spiffe://b.test/spire/server with the bundle SPIRE first
///    served; then admits b.test's go client (a SPIRE-issued SVID) and accepts b.test's
///    JWT-SVIDs. Pointed at a.test's endpoint while expecting b.test's, it refuses the server.
#[tokio::test]
#[ignore = "needs SPIRE: run interop/run.sh"]
async fn bundle_endpoint_client_against_spire() {
    support::init_tracing();
    let source = workload_source().await;
    assert_eq!(source.current().svid().spiffe_id().to_string(), MAIN);
    assert!(
        source.current().bundles().get(&b_test()).is_none(),
        "main is not federated with b.test in SPIRE"
    );
    let bootstrap = b_test_bootstrap();
    assert!(bootstrap.sequence().is_some(), "{bootstrap:?}");

    let federated = FederatedBundles::new();
    let jwt = JwtBundles::new();
    let client = within(
        BundleEndpointClient::https_spiffe(
            env("SC_INTEROP_BUNDLE_ENDPOINT_B"),
            SpiffeId::new("spiffe://b.test/spire/server").unwrap(),
            bootstrap.x509_authorities().clone(),
        )
        .x509_bundles(&federated)
        .jwt_bundles(&jwt)
        .refresh_bounds(Duration::from_secs(1), Duration::from_secs(60))
        .start(),
    )
    .await
    .unwrap();
    let fetched = client.current();
    eprintln!("b.test's bundle from SPIRE's endpoint: {fetched:?}");
    assert_eq!(
        fetched.x509_authorities().certificates(),
        bootstrap.x509_authorities().certificates()
    );
    assert_eq!(fetched.refresh_hint(), Some(Duration::from_secs(5)));
    assert!(fetched.jwt_authority_count() > 0);
    assert_eq!(jwt.trust_domains(), vec![b_test()]);
    // Fetched again: the same bundle, nothing applied.
    assert!(!within(client.refresh_now()).await.unwrap());

    // b.test's go client, its SVID issued by b.test's SPIRE, admitted through our federation.
    let merged = source.with_federated_bundles(&federated).unwrap();
    assert!(merged.current().bundles().get(&b_test()).is_some());
    let agent_b = env("SC_INTEROP_AGENT_B");
    let (accepted, addr) = serve_once(&merged, B_GO_CLIENT).await;
    let (ok, out, err) = run_go(
        "go-client",
        &["-addr", &addr, "-expect", MAIN],
        Some(&agent_b),
    )
    .await;
    assert!(ok, "b.test's go client failed: {err}");
    assert_eq!(out, format!("reply: {B_GO_CLIENT}"));
    assert_eq!(within(accepted).await.unwrap().unwrap(), B_GO_CLIENT);

    // b.test's JWT-SVIDs, verified with the JWT authorities from the bundle endpoint.
    let peer = own_peer_identity(&source, MAIN).await;
    let validator = JwtValidator::jwt_svids(AUDIENCE)
        .key_source(KeySource::jwt_bundles(&jwt))
        .build()
        .unwrap();
    let (ok, token, err) =
        run_go("go-jwt", &["fetch", "-audience", AUDIENCE], Some(&agent_b)).await;
    assert!(ok, "{err}");
    let claims = validator.validate(&token, &peer).await.unwrap();
    assert_eq!(
        claims.spiffe_id().unwrap().to_string(),
        "spiffe://b.test/go/jwt"
    );

    // a.test's endpoint is not b.test's: its server SVID (spiffe://a.test/spire/server) is
    // refused, whatever it serves.
    let error = within(
        BundleEndpointClient::https_spiffe(
            env("SC_INTEROP_BUNDLE_ENDPOINT_A"),
            SpiffeId::new("spiffe://b.test/spire/server").unwrap(),
            bootstrap.x509_authorities().clone(),
        )
        .start(),
    )
    .await
    .unwrap_err();
    eprintln!("b.test's client at a.test's endpoint: {error}");
    let FederationError::FirstFetch { error: failed, .. } = &error else {
        panic!("{error:?}");
    };
    assert!(
        matches!(
            **failed,
            FetchError::EndpointRefused {
                rejection: PeerRejection::UnknownTrustDomain { .. },
                ..
            }
        ),
        "{error:?}"
    );
}

/// 9. SPIRE federating with our bundle endpoint (https_spiffe): trust domain c.test is ours
///    alone (a development CA in this process, no SPIRE). b.test's SPIRE server is told to
///    federate with it through our endpoint, bootstrapped (`bundle set`) with c.test's first
///    CA only, while our endpoint already serves the next CA too. A go-spiffe server under
///    b.test's agent then admits our c.test client whose SVID the next CA issued: it can only
///    know that CA from our endpoint. A c.test SVID from a CA we never served is refused.
#[tokio::test]
#[ignore = "needs SPIRE: run interop/run.sh"]
async fn spire_federates_with_our_bundle_endpoint() {
    support::init_tracing();
    const ENDPOINT_ID: &str = "spiffe://c.test/bundle-endpoint";
    const OUR_CLIENT: &str = "spiffe://c.test/rust/client";
    const B_GO_SERVER: &str = "spiffe://b.test/go/server";
    let c_test = TrustDomain::new("c.test").unwrap();
    let first_ca = DevCa::new("c.test").unwrap();
    let next_ca = DevCa::new("c.test").unwrap();
    let both = TrustBundle::from_der(
        c_test.clone(),
        vec![
            first_ca.root_certificate().clone(),
            next_ca.root_certificate().clone(),
        ],
    )
    .unwrap();
    let with_bundle = |issuer: &DevCa, id: &str, bundle: &TrustBundle| {
        let issued = issuer.svid(id).issue().unwrap();
        let svid = Svid::from_der(
            issued.chain().to_vec(),
            PrivateKeyDer::Pkcs8(issued.key().clone_key()),
        )
        .unwrap();
        Credentials::new(svid, TrustBundles::new().with(bundle.clone()))
    };

    // Our endpoint: its SVID from the first CA, serving both CAs.
    let endpoint_source = MemorySource::new(with_bundle(&first_ca, ENDPOINT_ID, &both));
    let fetches = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let service = {
        let fetches = Arc::clone(&fetches);
        let inner = BundleEndpointService::new(&endpoint_source.source())
            .refresh_hint(Duration::from_secs(5));
        tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            inner.clone().oneshot(request)
        })
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint_url = format!("https://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        BundleEndpointServer::https_spiffe(&endpoint_source.source())
            .unwrap()
            .serve(listener, service, async move {
                let _ = stopped.await;
            }),
    );

    // b.test's SPIRE server federates with c.test, bootstrapped with the first CA only.
    let bootstrap = PathBuf::from(env("SC_INTEROP_WORK")).join("c-test-bootstrap.spiffe");
    std::fs::write(
        &bootstrap,
        SpiffeBundle::new(first_ca.bundle().unwrap())
            .to_json()
            .unwrap(),
    )
    .unwrap();
    ctl(&[
        "federate-with",
        "b",
        "c.test",
        &endpoint_url,
        ENDPOINT_ID,
        bootstrap.to_str().unwrap(),
    ])
    .await;
    ctl(&[
        "entry-create",
        "b",
        "go-server-b",
        B_GO_SERVER,
        "go-server",
        "-federatesWith",
        "spiffe://c.test",
    ])
    .await;

    // SPIRE fetches our endpoint and stores what it serves.
    wait_until("b.test's SPIRE to fetch our endpoint", SPIRE_WAIT, || {
        fetches.load(std::sync::atomic::Ordering::SeqCst) > 0
    })
    .await;
    let deadline = Instant::now() + SPIRE_WAIT;
    loop {
        let text = try_ctl_output(&["bundle-show", "b", "c.test"])
            .await
            .unwrap_or_else(|error| error);
        if let Some(stored) = bundle_in(&c_test, &text)
            && stored.x509_authorities().certificates().len() == 2
        {
            eprintln!("b.test's SPIRE holds c.test's bundle from our endpoint: {stored:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "b.test's SPIRE never stored the bundle our endpoint serves: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // b.test's bundle for our client, fetched from b.test's SPIRE endpoint by our client.
    let federated = FederatedBundles::new();
    let _b_client = within(
        BundleEndpointClient::https_spiffe(
            env("SC_INTEROP_BUNDLE_ENDPOINT_B"),
            SpiffeId::new("spiffe://b.test/spire/server").unwrap(),
            b_test_bootstrap().x509_authorities().clone(),
        )
        .x509_bundles(&federated)
        .start(),
    )
    .await
    .unwrap();

    // go-spiffe's server under b.test's agent, authorizing exactly our client.
    let agent_b = env("SC_INTEROP_AGENT_B");
    let mut server = Spawned::start(
        Command::new(bin("go-server"))
            .args(["-allow", OUR_CLIENT, "-exit-on-stdin-eof"])
            .env("SPIFFE_ENDPOINT_SOCKET", &agent_b),
    );
    let addr: std::net::SocketAddr = server.line_after("listening on ").await.parse().unwrap();

    let connect_as = |issuer: &DevCa| {
        let own = MemorySource::new(with_bundle(issuer, OUR_CLIENT, &both));
        let merged = own.source().with_federated_bundles(&federated).unwrap();
        let channel = SecureChannel::builder(merged)
            .expect_server(B_GO_SERVER)
            .build()
            .unwrap();
        async move {
            let mut stream = within(channel.connect_tcp(addr))
                .await
                .map_err(|e| e.to_string())?;
            within(stream.write_all(b"whoami\n"))
                .await
                .map_err(|e| e.to_string())?;
            read_line(&mut stream).await.map_err(|e| e.to_string())
        }
    };
    // The agent delivers the federated bundle with the go server's SVID (sync every 5 s).
    let deadline = Instant::now() + SPIRE_WAIT;
    let reply = loop {
        match connect_as(&next_ca).await {
            Ok(reply) => break reply,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "b.test's go server never admitted our client: {error}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert_eq!(reply, OUR_CLIENT);

    // A c.test SVID from a CA our endpoint never served: refused by the go server.
    let stranger = DevCa::new("c.test").unwrap();
    let refused = connect_as(&stranger).await;
    assert!(
        refused.is_err(),
        "a c.test SVID from an unknown CA was admitted"
    );
    eprintln!("our client with an SVID from an unserved c.test CA: {refused:?}");
}

/// Runs interop/ctl.sh (bounded): its standard output, or its standard error when it failed.
async fn try_ctl_output(args: &[&str]) -> Result<String, String> {
    let output = tokio::time::timeout(
        SPIRE_WAIT,
        Command::new(env("SC_INTEROP_CTL"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ctl.sh timed out")
    .unwrap();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Runs interop/ctl.sh (bounded) and returns its standard output; fails the test if it fails.
async fn ctl_output(args: &[&str]) -> String {
    try_ctl_output(args)
        .await
        .unwrap_or_else(|error| panic!("ctl.sh {args:?}: {error}"))
}

/// The SPIFFE bundle of `trust_domain` in SPIRE CLI output (after any header lines).
fn bundle_in(trust_domain: &TrustDomain, output: &str) -> Option<SpiffeBundle> {
    let start = output.find('{')?;
    SpiffeBundle::parse(trust_domain, &output.as_bytes()[start..], 1 << 20).ok()
}

/// 10. The https_web profile both ways, with w.test's SPIRE server (no agent; its bundle
///     endpoint presents a WebPKI certificate for 127.0.0.1 from a CA run.sh made):
///     - our client fetches w.test's bundle, authenticating the endpoint by that CA (and
///       refusing it with roots that do not vouch for it), and this workload then admits a
///       client whose SVID w.test's SPIRE minted;
///     - w.test's SPIRE federates with our https_web endpoint (same certificate, its CA a
///       system root of the SPIRE server) for d.test, a trust domain of ours, with no bootstrap
///       bundle: what it then holds for d.test came from our endpoint.
#[tokio::test]
#[ignore = "needs SPIRE: run interop/run.sh"]
async fn https_web_both_ways_with_spire() {
    support::init_tracing();
    let w_test = TrustDomain::new("w.test").unwrap();
    let source = workload_source().await;
    assert_eq!(source.current().svid().spiffe_id().to_string(), MAIN);

    // Ours against SPIRE's https_web endpoint.
    let federated = FederatedBundles::new();
    let client = within(
        BundleEndpointClient::https_web(
            env("SC_INTEROP_BUNDLE_ENDPOINT_W"),
            w_test.clone(),
            WebPkiConnector::with_ca_file(env("SC_INTEROP_WEB_CA")).unwrap(),
        )
        .x509_bundles(&federated)
        .start(),
    )
    .await
    .unwrap();
    let spire_says = bundle_in(&w_test, &ctl_output(&["own-bundle", "w"]).await).unwrap();
    assert_eq!(
        client.current().x509_authorities().certificates(),
        spire_says.x509_authorities().certificates()
    );
    eprintln!("w.test's bundle over https_web: {:?}", client.current());
    let mut other_roots = rustls::RootCertStore::empty();
    other_roots
        .add(DevCa::new("web.test").unwrap().root_certificate().clone())
        .unwrap();
    let refused = within(
        BundleEndpointClient::https_web(
            env("SC_INTEROP_BUNDLE_ENDPOINT_W"),
            w_test.clone(),
            WebPkiConnector::with_roots(other_roots).unwrap(),
        )
        .start(),
    )
    .await
    .unwrap_err();
    eprintln!("w.test's endpoint with other roots: {refused}");
    assert!(
        matches!(&refused, FederationError::FirstFetch { error, .. } if matches!(**error, FetchError::Connect { .. })),
        "{refused:?}"
    );

    // A client with an SVID minted by w.test's SPIRE, admitted through the fetched bundle.
    const MINTED: &str = "spiffe://w.test/minted";
    let dir = PathBuf::from(env("SC_INTEROP_WORK")).join("minted");
    ctl(&["mint", "w", MINTED, dir.to_str().unwrap()]).await;
    let minted = CredentialSource::from_files(dir.join("svid.pem"), dir.join("key.pem"))
        .own_bundle(dir.join("bundle.pem"))
        .start()
        .unwrap();
    let minted_creds = minted.current();
    let mut minted_bundles = minted_creds.bundles().clone();
    minted_bundles.insert(source.current().bundles().get(&a_test()).unwrap().clone());
    let minted = MemorySource::new(Credentials::new(
        minted_creds.svid().clone(),
        minted_bundles,
    ));
    let merged = source.with_federated_bundles(&federated).unwrap();
    let server = SecureChannel::builder(merged)
        .allow_client(MINTED)
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server
            .accept(tcp)
            .await
            .map(|s| s.peer_identity().spiffe_id().to_string())
    });
    let minted_client = SecureChannel::builder(&minted)
        .expect_server(MAIN)
        .build()
        .unwrap();
    let _stream = within(minted_client.connect_tcp(addr)).await.unwrap();
    assert_eq!(within(accept).await.unwrap().unwrap(), MINTED);

    // SPIRE against our https_web endpoint, serving d.test's bundle.
    let d_test = TrustDomain::new("d.test").unwrap();
    let d_ca = DevCa::new("d.test").unwrap();
    let d_source = MemorySource::new(d_ca.credentials("spiffe://d.test/bundle-endpoint").unwrap());
    let web_chain = rustls_pki_types::pem::PemObject::pem_file_iter(env("SC_INTEROP_WEB_CERT"))
        .unwrap()
        .collect::<Result<Vec<rustls_pki_types::CertificateDer<'static>>, _>>()
        .unwrap();
    let web_key: PrivateKeyDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_file(env("SC_INTEROP_WEB_KEY")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint_url = format!("https://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        BundleEndpointServer::https_web(web_chain, web_key)
            .unwrap()
            .serve(
                listener,
                BundleEndpointService::new(&d_source.source()),
                async move {
                    let _ = stopped.await;
                },
            ),
    );
    ctl(&["federate-with-web", "w", "d.test", &endpoint_url]).await;
    let deadline = Instant::now() + SPIRE_WAIT;
    loop {
        // "bundle not found" until SPIRE fetched it.
        let held = try_ctl_output(&["bundle-show", "w", "d.test"])
            .await
            .unwrap_or_else(|error| error);
        if let Some(stored) = bundle_in(&d_test, &held)
            && stored.x509_authorities().certificates() == [d_ca.root_certificate().clone()]
        {
            eprintln!(
                "w.test's SPIRE holds d.test's bundle from our https_web endpoint: {stored:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "w.test's SPIRE never stored the bundle our https_web endpoint serves: {held}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
