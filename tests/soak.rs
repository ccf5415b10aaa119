//! Soak test, run by hand (it is `#[ignore]`d):
//!
//! ```sh
//! SOAK_SECONDS=60 cargo test --release --all-features --test soak -- --ignored --nocapture
//! ```
//!
//! Two axum servers over mutual TLS (one whose SVID comes from PEM files, one from a Workload
//! API server) are called by two clients (same two kinds of sources) with steady load over
//! keep-alive connections (HTTP/2 and HTTP/1.1) and over a new connection per request, while
//! every few seconds all four SVIDs rotate and the bundles change (a federated bundle is replaced
//! each time). Midway the trust domain's CA rotates the safe way: the new CA is added to every
//! bundle first, then SVIDs are issued by the new CA, then the old CA leaves the bundles. No
//! request may fail, with one exception, counted apart: when the old CA leaves, the keep-alive
//! connections still on old-CA SVIDs are cut off (their chains no longer validate), and an
//! HTTP/1.1 request written on such a connection while it was idle, at the moment the server
//! closed it, gets no response. That race is the one every server-side close of an idle HTTP/1.1
//! connection has (an idle timeout too; clients retry idempotent requests on it, as Go's
//! net/http does); at most one per HTTP/1.1 keep-alive worker is allowed. The report gives requests sent, failed and dropped, handshakes per server
//! source revision, and the process RSS at the start and at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use secure_channel::testkit::{DevCa, IssuedSvid, WorkloadApiServer, X509SvidResponse};
use secure_channel::transport::ListenerStats;
use secure_channel::{CredentialSource, PeerIdentity, SecureChannel, SecureConnector, TrustDomain};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, timeout};

const TRUST_DOMAIN: &str = "example.org";
const PARTNER_DOMAIN: &str = "partner.org";
const SERVER_FILES: &str = "spiffe://example.org/api/files";
const SERVER_API: &str = "spiffe://example.org/api/workload-api";
const CLIENT_FILES: &str = "spiffe://example.org/web/files";
const CLIENT_API: &str = "spiffe://example.org/web/workload-api";

/// How often every SVID (and the federated bundle) rotates.
const ROTATE_EVERY: Duration = Duration::from_secs(3);
/// How often the file sources look at their files.
const FILE_POLL: Duration = Duration::from_millis(250);
/// Pacing of one keep-alive worker (one request per period).
const KEEP_ALIVE_PERIOD: Duration = Duration::from_millis(10);
/// Pacing of one new-connection worker (one handshake per period).
const NEW_CONNECTION_PERIOD: Duration = Duration::from_millis(25);
/// Upper bound for any single step: a request, a propagation, a start-up.
const STEP: Duration = Duration::from_secs(10);
/// The most chains the four channels' verified-chain caches may hold together at a sample: a
/// few peer leaves of the current credential revision each.
const MAX_CACHED_CHAINS: usize = 32;
/// Kept error messages, for the report.
const ERROR_SAMPLES: usize = 20;

type Fingerprint = [u8; 32];

fn fingerprint(certificate: &CertificateDer<'_>) -> Fingerprint {
    Sha256::digest(certificate.as_ref()).into()
}

fn short(fp: &Fingerprint) -> String {
    fp[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// VmRSS of this process in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn soak_seconds() -> u64 {
    let seconds = std::env::var("SOAK_SECONDS")
        .ok()
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .expect("SOAK_SECONDS: a number of seconds")
        })
        .unwrap_or(60);
    // The CA rotation needs a handful of rotation periods; 60 s or more for a real run.
    seconds.max(20)
}

/// Writes `content` to `path` the way careful writers do: a temporary file, then a rename.
fn write_then_rename(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn pem_of(roots: &[&DevCa]) -> String {
    roots.iter().map(|ca| ca.bundle_pem()).collect()
}

fn sorted(certificates: &[CertificateDer<'_>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = certificates.iter().map(|c| c.as_ref().to_vec()).collect();
    out.sort();
    out
}

/// What one rotation step publishes for one workload.
struct Plan<'a> {
    issuer: &'a DevCa,
    issuer_label: &'static str,
    roots: Vec<&'a DevCa>,
    partner: &'a DevCa,
}

/// What must be in force once a step has propagated.
struct Expected {
    leaf: CertificateDer<'static>,
    roots: Vec<Vec<u8>>,
    partner: Vec<Vec<u8>>,
}

enum Backend {
    Files {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
        bundle: PathBuf,
        partner: PathBuf,
    },
    WorkloadApi(WorkloadApiServer),
}

/// One workload's identity: where it comes from, and the source that follows it.
struct Workload {
    id: &'static str,
    backend: Backend,
    source: CredentialSource,
}

impl Workload {
    fn files(id: &'static str, plan: &Plan<'_>) -> (Self, IssuedSvid) {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::Files {
            cert: dir.path().join("svid.pem"),
            key: dir.path().join("svid.key"),
            bundle: dir.path().join("bundle.pem"),
            partner: dir.path().join("partner.pem"),
            _dir: dir,
        };
        let svid = write_files(&backend, id, plan);
        let Backend::Files {
            cert,
            key,
            bundle,
            partner,
            ..
        } = &backend
        else {
            unreachable!()
        };
        let source = CredentialSource::from_files(cert, key)
            .bundle(TrustDomain::new(TRUST_DOMAIN).unwrap(), bundle)
            .bundle(TrustDomain::new(PARTNER_DOMAIN).unwrap(), partner)
            .poll_interval(FILE_POLL)
            .start()
            .unwrap();
        (
            Self {
                id,
                backend,
                source,
            },
            svid,
        )
    }

    async fn workload_api(id: &'static str, plan: &Plan<'_>) -> (Self, IssuedSvid) {
        let (response, svid) = api_response(id, plan);
        let api = timeout(STEP, WorkloadApiServer::start(response))
            .await
            .expect("Workload API server start timed out")
            .unwrap();
        let source = timeout(
            STEP,
            CredentialSource::from_workload_api()
                .endpoint(api.endpoint())
                .connect(),
        )
        .await
        .expect("Workload API connect timed out")
        .unwrap();
        (
            Self {
                id,
                backend: Backend::WorkloadApi(api),
                source,
            },
            svid,
        )
    }

    fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Files { .. } => "files",
            Backend::WorkloadApi(_) => "workload-api",
        }
    }

    /// Publishes a new SVID and bundles; returns what must come into force.
    fn publish(&self, plan: &Plan<'_>) -> (IssuedSvid, Expected) {
        let svid = match &self.backend {
            Backend::Files { .. } => write_files(&self.backend, self.id, plan),
            Backend::WorkloadApi(api) => {
                let (response, svid) = api_response(self.id, plan);
                api.rotate(response);
                svid
            }
        };
        let expected = expected(&svid, plan);
        (svid, expected)
    }

    /// Waits until `expected` is the source's current material; returns the revision.
    async fn wait_in_force(&self, expected: &Expected) -> Result<u64, String> {
        let mut revisions = self.source.subscribe();
        let deadline = Instant::now() + STEP;
        for _ in 0..10_000 {
            if self.in_force(expected) {
                return Ok(self.source.revision());
            }
            match tokio::time::timeout_at(deadline, revisions.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(format!("{} source closed", self.id)),
                Err(_) => {
                    return Err(format!(
                        "{} ({}) did not take the rotation within {STEP:?} (revision {}, \
                         failed reloads {})",
                        self.id,
                        self.kind(),
                        self.source.revision(),
                        self.source.failed_reloads()
                    ));
                }
            }
        }
        Err(format!("{}: too many revisions", self.id))
    }

    fn in_force(&self, expected: &Expected) -> bool {
        let current = self.source.current();
        let bundle = |td: &str| {
            current
                .bundles()
                .get(&TrustDomain::new(td).unwrap())
                .map(|b| sorted(b.certificates()))
        };
        current.svid().chain().first() == Some(&expected.leaf)
            && bundle(TRUST_DOMAIN).as_ref() == Some(&expected.roots)
            && bundle(PARTNER_DOMAIN).as_ref() == Some(&expected.partner)
    }
}

fn expected(svid: &IssuedSvid, plan: &Plan<'_>) -> Expected {
    let roots: Vec<CertificateDer<'static>> = plan
        .roots
        .iter()
        .map(|ca| ca.root_certificate().clone())
        .collect();
    Expected {
        leaf: svid.leaf().clone(),
        roots: sorted(&roots),
        partner: sorted(std::slice::from_ref(plan.partner.root_certificate())),
    }
}

/// Writes bundles first, then the key, then the certificate (each write-then-rename); a poll
/// in between sees a mismatched pair and keeps the last good material.
fn write_files(backend: &Backend, id: &str, plan: &Plan<'_>) -> IssuedSvid {
    let Backend::Files {
        cert,
        key,
        bundle,
        partner,
        ..
    } = backend
    else {
        unreachable!("not a file backend")
    };
    let svid = plan.issuer.svid(id).issue().unwrap();
    write_then_rename(bundle, &pem_of(&plan.roots));
    write_then_rename(partner, &plan.partner.bundle_pem());
    write_then_rename(key, &svid.key_pem());
    write_then_rename(cert, &svid.chain_pem());
    svid
}

fn api_response(id: &str, plan: &Plan<'_>) -> (X509SvidResponse, IssuedSvid) {
    let svid = plan.issuer.svid(id).issue().unwrap();
    let response = X509SvidResponse::new(
        id,
        svid.chain().to_vec(),
        svid.key().clone_key(),
        plan.roots
            .iter()
            .map(|ca| ca.root_certificate().clone())
            .collect(),
    )
    .with_federated_bundle(
        PARTNER_DOMAIN,
        vec![plan.partner.root_certificate().clone()],
    );
    (response, svid)
}

/// One SVID a server presented: when it came into force and how often it was seen.
struct Generation {
    server: &'static str,
    index: usize,
    revision: u64,
    ca: &'static str,
}

#[derive(Default)]
struct LeafCounts {
    new_connection: u64,
    keep_alive: u64,
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// HTTP/1.1 keep-alive requests that met the close of a cut-off idle connection.
    raced_cut_off: AtomicU64,
    ok_keep_alive_h2: AtomicU64,
    ok_keep_alive_h1: AtomicU64,
    ok_new_connection: AtomicU64,
    leaves: Mutex<HashMap<Fingerprint, LeafCounts>>,
    errors: Mutex<Vec<String>>,
}

impl Stats {
    fn error(&self, counter: &AtomicU64, message: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < ERROR_SAMPLES {
            errors.push(message);
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    KeepAliveH2,
    KeepAliveH1,
    NewConnection,
}

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    server_id: &'static str,
}

/// A secured axum app answering `/whoami` with the caller's SPIFFE ID.
async fn serve(channel: &SecureChannel) -> (SocketAddr, Arc<ListenerStats>, JoinHandle<()>) {
    let tcp = timeout(STEP, TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind timed out")
        .unwrap();
    let listener = channel.listener(tcp).unwrap();
    let addr = listener.local_addr();
    let stats = listener.stats();
    let app = Router::new().route(
        "/whoami",
        get(|peer: PeerIdentity| async move { peer.spiffe_id().to_string() }),
    );
    let task = tokio::spawn(async move {
        let _ = secure_channel::integration::axum::serve(listener, app).await;
    });
    (addr, stats, task)
}

fn client(connector: SecureConnector) -> Client<SecureConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector)
}

/// Whether a request failed because its connection closed before any of the response came
/// (hyper's `IncompleteMessage`).
fn closed_while_idle(error: &hyper_util::client::legacy::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<hyper::Error>())
        .is_some_and(hyper::Error::is_incomplete_message)
}

/// One request; every outcome is counted in `stats`.
async fn request(
    client: &Client<SecureConnector, Empty<Bytes>>,
    url: &str,
    mode: Mode,
    caller: &str,
    target: &Target,
    stats: &Stats,
) {
    stats.sent.fetch_add(1, Ordering::Relaxed);
    let what = format!("{caller} -> {} ({mode:?})", target.server_id);
    let response = match timeout(STEP, client.get(url.parse().unwrap())).await {
        Err(_) => {
            return stats.error(
                &stats.dropped,
                format!("{what}: no response within {STEP:?}"),
            );
        }
        Ok(Err(e)) if e.is_connect() => {
            return stats.error(&stats.failed, format!("{what}: connect: {e:?}"));
        }
        // Sent (at least in part) but the connection ended without a response. (A server
        // refusing the client's certificate in a full handshake is a connect error,
        // `ConnectionError::RefusedByServer`; a refused resumed session still ends here.)
        Ok(Err(e)) if matches!(mode, Mode::KeepAliveH1) && closed_while_idle(&e) => {
            return stats.error(&stats.raced_cut_off, format!("{what}: {e:?}"));
        }
        Ok(Err(e)) => return stats.error(&stats.dropped, format!("{what}: {e:?}")),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let server = response.extensions().get::<PeerIdentity>().cloned();
    let body = match timeout(STEP, response.into_body().collect()).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) => return stats.error(&stats.dropped, format!("{what}: body: {e:?}")),
        Err(_) => return stats.error(&stats.dropped, format!("{what}: body timed out")),
    };
    let Some(server) = server else {
        return stats.error(&stats.failed, format!("{what}: no server identity"));
    };
    if status != 200
        || body.as_ref() != caller.as_bytes()
        || server.spiffe_id().to_string() != target.server_id
    {
        return stats.error(
            &stats.failed,
            format!(
                "{what}: {status} {:?} from {}",
                String::from_utf8_lossy(&body),
                server.spiffe_id()
            ),
        );
    }
    stats.ok.fetch_add(1, Ordering::Relaxed);
    let per_mode = match mode {
        Mode::KeepAliveH2 => &stats.ok_keep_alive_h2,
        Mode::KeepAliveH1 => &stats.ok_keep_alive_h1,
        Mode::NewConnection => &stats.ok_new_connection,
    };
    per_mode.fetch_add(1, Ordering::Relaxed);
    let mut leaves = stats.leaves.lock().unwrap();
    let counts = leaves.entry(*server.thumbprint_sha256()).or_default();
    match mode {
        Mode::NewConnection => counts.new_connection += 1,
        _ => counts.keep_alive += 1,
    }
}

/// Paced requests from `channel` to `target` until `deadline`.
async fn worker(
    mode: Mode,
    channel: SecureChannel,
    caller: &'static str,
    target: Target,
    stats: Arc<Stats>,
    deadline: Instant,
) {
    let (period, scheme) = match mode {
        Mode::KeepAliveH2 => (KEEP_ALIVE_PERIOD, "https"),
        Mode::KeepAliveH1 => (KEEP_ALIVE_PERIOD, "http"),
        Mode::NewConnection => (NEW_CONNECTION_PERIOD, "https"),
    };
    let url = format!("{scheme}://{}/whoami", target.addr);
    let pooled = match mode {
        Mode::KeepAliveH1 => client(channel.connector().http1_only()),
        _ => client(channel.connector()),
    };
    let mut pace = tokio::time::interval(period);
    pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let bound = deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        / period.as_millis()
        + 10;
    for i in 0..bound {
        if Instant::now() >= deadline {
            break;
        }
        timeout(STEP, pace.tick()).await.expect("pacing stalled");
        match mode {
            // A new pooled client each time: a new TCP connection and a full handshake,
            // alternately HTTP/2 and HTTP/1.1.
            Mode::NewConnection => {
                let fresh = if i % 2 == 0 {
                    client(channel.connector())
                } else {
                    client(channel.connector().http1_only())
                };
                request(&fresh, &url, mode, caller, &target, &stats).await;
            }
            _ => request(&pooled, &url, mode, caller, &target, &stats).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test, run by hand: SOAK_SECONDS=60 cargo test --release --all-features --test soak -- --ignored --nocapture"]
async fn soak_rotation_under_load() {
    let seconds = soak_seconds();
    let old_ca = DevCa::new(TRUST_DOMAIN).unwrap();
    let new_ca = DevCa::new(TRUST_DOMAIN).unwrap();
    let first_partner = DevCa::new(PARTNER_DOMAIN).unwrap();
    let initial = Plan {
        issuer: &old_ca,
        issuer_label: "old",
        roots: vec![&old_ca],
        partner: &first_partner,
    };

    let (server_files, server_files_svid) = Workload::files(SERVER_FILES, &initial);
    let (server_api, server_api_svid) = Workload::workload_api(SERVER_API, &initial).await;
    let (client_files, _) = Workload::files(CLIENT_FILES, &initial);
    let (client_api, _) = Workload::workload_api(CLIENT_API, &initial).await;
    let servers = [&server_files, &server_api];
    let workloads = [&server_files, &server_api, &client_files, &client_api];

    let mut generations: HashMap<Fingerprint, Generation> = HashMap::new();
    for (server, svid) in [
        (&server_files, &server_files_svid),
        (&server_api, &server_api_svid),
    ] {
        generations.insert(
            fingerprint(svid.leaf()),
            Generation {
                server: server.id,
                index: 0,
                revision: server.source.revision(),
                ca: "old",
            },
        );
    }

    let server_channel = |w: &Workload| {
        SecureChannel::builder(w.source.clone())
            .allow_client("spiffe://example.org/web/*")
            .build()
            .unwrap()
    };
    let client_channel = |w: &Workload| {
        SecureChannel::builder(w.source.clone())
            .expect_server(SERVER_FILES)
            .expect_server(SERVER_API)
            .build()
            .unwrap()
    };
    let server_channels = [server_channel(&server_files), server_channel(&server_api)];
    let (files_addr, files_listener, files_task) = serve(&server_channels[0]).await;
    let (api_addr, api_listener, api_task) = serve(&server_channels[1]).await;
    let targets = [
        Target {
            addr: files_addr,
            server_id: SERVER_FILES,
        },
        Target {
            addr: api_addr,
            server_id: SERVER_API,
        },
    ];
    let listeners = [(SERVER_FILES, &files_listener), (SERVER_API, &api_listener)];

    let stats = Arc::new(Stats::default());
    let rss_start = rss_kib();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    let client_channels = [client_channel(&client_files), client_channel(&client_api)];
    // The verified-chain caches of all four channels: entries and bytes.
    let cached_chains = || {
        server_channels
            .iter()
            .chain(&client_channels)
            .map(SecureChannel::verified_chain_cache_usage)
            .fold((0, 0), |(n, b), (en, eb)| (n + en, b + eb))
    };
    for (caller, channel) in [
        (CLIENT_FILES, client_channels[0].clone()),
        (CLIENT_API, client_channels[1].clone()),
    ] {
        for target in &targets {
            for mode in [Mode::KeepAliveH2, Mode::KeepAliveH1, Mode::NewConnection] {
                workers.push(tokio::spawn(worker(
                    mode,
                    channel.clone(),
                    caller,
                    target.clone(),
                    Arc::clone(&stats),
                    deadline,
                )));
            }
        }
    }

    // Rotation schedule: tick t at started + t * ROTATE_EVERY, all four workloads each tick.
    // CA rotation from tick `add`: new CA into the bundles (SVIDs still from the old CA), then
    // SVIDs from the new CA for two ticks, then the old CA out of the bundles.
    let ticks = (seconds * 1000 / ROTATE_EVERY.as_millis() as u64).saturating_sub(1);
    let add = ticks * 2 / 5;
    let (issue_new, remove_old) = (add + 1, add + 3);
    println!(
        "soak: {seconds} s, 2 servers and 2 clients (files, Workload API), 12 workers, \
         rotation every {ROTATE_EVERY:?} ({ticks} ticks); CA rotation: new CA added at tick \
         {add}, SVIDs from it from tick {issue_new}, old CA removed at tick {remove_old}"
    );
    let mut rotation_errors = Vec::new();
    let mut rss_samples = Vec::new();
    for tick in 1..=ticks {
        let at = started + ROTATE_EVERY * tick as u32;
        if at >= deadline {
            break;
        }
        tokio::time::sleep_until(at).await;
        // Only this tick's partner CA is kept (the harness itself must not grow per tick).
        let partner_ca = DevCa::new(PARTNER_DOMAIN).unwrap();
        let partner = &partner_ca;
        let plan = if tick < add {
            Plan {
                issuer: &old_ca,
                issuer_label: "old",
                roots: vec![&old_ca],
                partner,
            }
        } else if tick < issue_new {
            Plan {
                issuer: &old_ca,
                issuer_label: "old",
                roots: vec![&old_ca, &new_ca],
                partner,
            }
        } else if tick < remove_old {
            Plan {
                issuer: &new_ca,
                issuer_label: "new",
                roots: vec![&old_ca, &new_ca],
                partner,
            }
        } else {
            Plan {
                issuer: &new_ca,
                issuer_label: "new",
                roots: vec![&new_ca],
                partner,
            }
        };
        let mut pending = Vec::new();
        for workload in workloads {
            let (svid, expected) = workload.publish(&plan);
            if servers.iter().any(|s| s.id == workload.id) {
                let index = generations
                    .values()
                    .filter(|g| g.server == workload.id)
                    .count();
                generations.insert(
                    fingerprint(svid.leaf()),
                    Generation {
                        server: workload.id,
                        index,
                        revision: 0,
                        ca: plan.issuer_label,
                    },
                );
            }
            pending.push((workload, svid, expected));
        }
        // Every workload must have the step in force before the next step may start: that is
        // what makes the CA rotation safe.
        for (workload, svid, expected) in &pending {
            match workload.wait_in_force(expected).await {
                Ok(revision) => {
                    if let Some(g) = generations.get_mut(&fingerprint(svid.leaf())) {
                        g.revision = revision;
                    }
                }
                Err(e) => rotation_errors.push(format!("tick {tick}: {e}")),
            }
        }
        if !rotation_errors.is_empty() {
            break;
        }
        if tick % 3 == 0 {
            rss_samples.push((started.elapsed().as_secs(), rss_kib(), cached_chains()));
        }
    }

    for worker in workers {
        timeout(STEP + STEP, worker)
            .await
            .expect("worker did not stop")
            .unwrap();
    }
    let elapsed = started.elapsed();
    let rss_end = rss_kib();
    files_task.abort();
    api_task.abort();

    // The report.
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (sent, ok, failed, dropped) = (
        load(&stats.sent),
        load(&stats.ok),
        load(&stats.failed),
        load(&stats.dropped),
    );
    println!(
        "\n== soak report ({:.1} s of load) ==",
        elapsed.as_secs_f64()
    );
    let raced = load(&stats.raced_cut_off);
    println!(
        "requests: sent {sent}, ok {ok}, failed {failed}, dropped {dropped}, raced a cut-off {raced} ({:.0} req/s)",
        sent as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  ok by kind: keep-alive HTTP/2 {}, keep-alive HTTP/1.1 {}, new connection {}",
        load(&stats.ok_keep_alive_h2),
        load(&stats.ok_keep_alive_h1),
        load(&stats.ok_new_connection)
    );
    let leaves = stats.leaves.lock().unwrap();
    let mut unknown_leaves = 0;
    for leaf in leaves.keys() {
        if !generations.contains_key(leaf) {
            unknown_leaves += 1;
        }
    }
    for (server, listener) in listeners {
        let source = if server == SERVER_FILES {
            &server_files.source
        } else {
            &server_api.source
        };
        println!(
            "server {server}: source revision {}, failed reloads {}; listener handshakes \
             accepted {}, failed {}",
            source.revision(),
            source.failed_reloads(),
            listener.accepted(),
            listener.failed_handshakes()
        );
        println!(
            "  SVID  revision  CA   leaf      new-connection handshakes  keep-alive responses"
        );
        let mut rows: Vec<(&Fingerprint, &Generation)> = generations
            .iter()
            .filter(|(_, g)| g.server == server)
            .collect();
        rows.sort_by_key(|(_, g)| g.index);
        for (fp, g) in rows {
            let counts = leaves.get(fp);
            println!(
                "  {:>4}  {:>8}  {:<3}  {}  {:>25}  {:>20}",
                g.index,
                g.revision,
                g.ca,
                short(fp),
                counts.map_or(0, |c| c.new_connection),
                counts.map_or(0, |c| c.keep_alive)
            );
        }
    }
    for client in [&client_files, &client_api] {
        println!(
            "client {} ({}): source revision {}, failed reloads {}",
            client.id,
            client.kind(),
            client.source.revision(),
            client.source.failed_reloads()
        );
    }
    let samples: Vec<String> = rss_samples
        .iter()
        .map(|(t, kib, _)| format!("{t}s {kib}"))
        .collect();
    println!(
        "RSS (KiB): start {rss_start}, end {rss_end} (change {:+}); samples: {}",
        rss_end as i64 - rss_start as i64,
        samples.join(", ")
    );
    let cache_samples: Vec<String> = rss_samples
        .iter()
        .map(|(t, _, (entries, bytes))| format!("{t}s {entries}/{bytes}"))
        .collect();
    println!(
        "verified-chain caches of the 4 channels (entries/bytes): {}",
        cache_samples.join(", ")
    );
    let errors = stats.errors.lock().unwrap();
    if !errors.is_empty() {
        println!("first errors:");
        for e in errors.iter() {
            println!("  {e}");
        }
    }
    for e in &rotation_errors {
        println!("rotation error: {e}");
    }

    assert!(rotation_errors.is_empty(), "rotations did not propagate");
    // Entries of superseded credential revisions are dropped: the caches hold the chains of
    // the current revision only, however many rotations went by.
    let most_cached = rss_samples.iter().map(|(_, _, (n, _))| *n).max();
    assert!(
        most_cached.unwrap_or(0) <= MAX_CACHED_CHAINS,
        "the verified-chain caches grew to {most_cached:?} entries"
    );
    assert_eq!(failed, 0, "failed requests");
    assert_eq!(dropped, 0, "requests sent without a response");
    // One per (client, server) pair.
    let http1_keep_alive_workers = (client_channels.len() * targets.len()) as u64;
    assert!(
        raced <= http1_keep_alive_workers,
        "{raced} HTTP/1.1 requests met a cut-off's close, more than one per keep-alive worker"
    );
    assert_eq!(ok + raced, sent);
    assert_eq!(
        unknown_leaves, 0,
        "a server presented a leaf never published"
    );
    for (server, listener) in listeners {
        assert_eq!(
            listener.failed_handshakes(),
            0,
            "{server}: refused handshakes"
        );
    }
    // Every SVID that was in force for a full rotation period served new connections.
    for (fp, g) in &generations {
        let last = generations
            .values()
            .filter(|o| o.server == g.server)
            .map(|o| o.index)
            .max()
            .unwrap_or(0);
        if g.index < last {
            assert!(
                leaves.get(fp).is_some_and(|c| c.new_connection > 0),
                "{} SVID {} (revision {}) was never presented to a new connection",
                g.server,
                g.index,
                g.revision
            );
        }
    }
}
