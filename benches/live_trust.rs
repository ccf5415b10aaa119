//! Live trust (issue 15): what re-checking a channel's open connections costs when trust
//! changes, and what the cut-off checks cost on the request path.
//!
//! Sweeps (`sweep/*`): 10,000 server-side connections are registered with the channel's
//! hidden testkit hook `SecureChannel::bench_register` (verified now, no socket) and one sweep
//! is run on the bench thread with `SecureChannel::bench_sweep`; the reported time is one sweep
//! over all 10,000. The registrations are made outside any tokio runtime, so the channel's own
//! sweeper task never starts and only the measured sweeps run. Peers are either 100 distinct
//! SVIDs with 100 connections each (`100_peers`) or 10,000 distinct SVIDs, each its own leaf
//! and key (`10000_peers`); their IDs are spread evenly over the rules of the admission policy.
//!
//! - `sweep/no_change/*`: the bundles did not change, so each connection is only admitted again
//!   (the re-admission path), and nobody is cut off:
//!   - `allow_list`: the channel's allow-list holds the 2,000 principals of a 1,000-rule policy
//!     (`allow_client`, indexed);
//!   - `policy_1000_rules`: `allow_clients_by_policy` on a `PolicySource` with those 1,000 rules
//!     (`Policy::could_ever_allow`, the policy's principals indexed when it is built).
//!
//!   The allow-list channel also checks a revocation list of the CA (empty).
//! - `sweep/bundle_changed/allow_list/*`: before each sweep (untimed), the channel's
//!   `MemorySource` is updated with a bundle whose content differs (the trust domain's CA, then
//!   the CA and a second CA, alternately): the anchor of every chain stays, so no chain is
//!   validated again (a CA rotation).
//! - `sweep/lists_changed/allow_list/*`: before each sweep (untimed), the revocation list is
//!   replaced by a new one (next CRL number, still revoking nobody): every chain is validated
//!   again, once per peer (with 100 peers, 100 validations for 10,000 connections).
//! - `sweep/cut_all/*`: a change that cuts every connection off: each iteration registers the
//!   10,000 connections again in the untimed setup (`iter_batched`), then the change is made
//!   (untimed) and the sweep is timed; deregistration (the drop) is untimed too.
//!   - `policy_1000_rules/100_peers`: the policy is replaced by 1,000 rules naming none of the
//!     peers;
//!   - `bundle_replaced/allow_list/*`: the trust domain's bundle is replaced by another CA, so no
//!     chain validates.
//!
//! Request path (`request/*`): a TLS 1.3 connection between two channels over
//! `tokio::io::duplex`, one ping-pong per iteration (the client writes the message, the server
//! echoes it, the client reads it back), on one current-thread runtime, so the time is both
//! sides' work. `tracked` is the `SecureStream` pair as `accept`/`connect` yield it (registered,
//! cut-off checks in every poll); `untracked` is a second connection made the same way and
//! turned into its own tokio-rustls streams with `SecureStream::into_parts` (the same TLS,
//! without the registry or the checks). Compare the two lines of a group within one run.
//!
//! Run with `cargo bench --features testkit --bench live_trust` (add a criterion filter such
//! as `-- sweep/no_change` for one group). Minting the 10,000 SVIDs takes a few seconds before
//! the first group starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, SamplingMode, criterion_group, criterion_main,
};
use rustls_pki_types::{CertificateDer, ServerName};
use secure_channel::authz::{Policy, PolicySource, Rule};
use secure_channel::revocation::RevocationLists;
use secure_channel::testkit::DevCa;
use secure_channel::transport::BenchConnection;
use secure_channel::{
    Credentials, MemorySource, SecureChannel, TrustBundle, TrustBundles, TrustDomain,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, duplex};

#[path = "support/channels.rs"]
mod channels;
#[path = "support/policy.rs"]
#[expect(dead_code, reason = "only the per-service rules are used here")]
mod policy;

const SERVER_ID: &str = "spiffe://example.org/api";
/// Allow rules of the admission policy (each names two principals).
const RULES: usize = 1_000;
/// Open connections per sweep.
const CONNECTIONS: usize = 10_000;
/// Distinct peers in the `100_peers` cases.
const FEW_PEERS: usize = 100;

type Chain = Vec<CertificateDer<'static>>;

/// The admission policy: a deny rule for everyone and `RULES` service rules, numbered from
/// `first`. Unlike `policy::policy`, no trust-domain-wide allow rule, so that admission
/// depends on the peer.
fn admission_policy(first: usize) -> Policy {
    let mut builder = Policy::builder().rule(
        Rule::deny("no-admin")
            .any_authenticated_peer()
            .route_any_method("/admin/*"),
    );
    for i in first..first + RULES {
        builder = builder.rule(policy::service_rule(i));
    }
    builder.build().unwrap()
}

/// A peer's SPIFFE ID: the `i`-th of `of` peers, spread evenly over the policy's rules.
fn peer_id(i: usize, of: usize) -> String {
    let rule = i * RULES / of;
    if of <= RULES {
        format!("spiffe://example.org/ns/prod/svc-{rule}")
    } else {
        format!("spiffe://example.org/ns/batch-{rule}/pod-{i}")
    }
}

struct Fixture {
    ca: DevCa,
    /// The trust domain's bundle: the CA alone, the CA and a second CA, another CA alone.
    bundle: TrustBundles,
    bundle_and_extra: TrustBundles,
    bundle_replaced: TrustBundles,
    source: MemorySource,
    policy: PolicySource,
    /// The CA's revocation list, checked by `allow_list`; and its CRL number.
    lists: RevocationLists,
    crl_number: std::cell::Cell<u64>,
    /// Peers by the allow-list; by the policy.
    allow_list: SecureChannel,
    by_policy: SecureChannel,
    few: Vec<Chain>,
    many: Vec<Chain>,
}

fn fixture() -> Fixture {
    let ca = DevCa::new("example.org").unwrap();
    let extra = DevCa::new("example.org").unwrap();
    let td = TrustDomain::new("example.org").unwrap();
    let bundles = |certs: &[&DevCa]| {
        let certs = certs.iter().map(|c| c.root_certificate().clone()).collect();
        TrustBundles::new().with(TrustBundle::from_der(td.clone(), certs).unwrap())
    };
    let (bundle, bundle_and_extra, bundle_replaced) =
        (bundles(&[&ca]), bundles(&[&ca, &extra]), bundles(&[&extra]));
    let server_svid = ca.svid(SERVER_ID).issue().unwrap();
    let source = MemorySource::new(Credentials::new(
        server_svid.to_svid().unwrap(),
        bundle.clone(),
    ));
    let policy = PolicySource::new(admission_policy(0));
    let mut builder = SecureChannel::builder(&source);
    for i in 0..RULES {
        builder = builder
            .allow_client(format!("spiffe://example.org/ns/prod/svc-{i}").as_str())
            .allow_client(format!("spiffe://example.org/ns/batch-{i}/*").as_str());
    }
    let lists = RevocationLists::new([ca.crl(&[]).number(1).der().unwrap()]).unwrap();
    let allow_list = builder.revocation_lists(&lists).build().unwrap();
    let by_policy = SecureChannel::builder(&source)
        .allow_clients_by_policy(&policy)
        .build()
        .unwrap();
    let mint = |n: usize| -> Vec<Chain> {
        (0..n)
            .map(|i| ca.svid(&peer_id(i, n)).issue().unwrap().chain().to_vec())
            .collect()
    };
    let started = Instant::now();
    let (few, many) = (mint(FEW_PEERS), mint(CONNECTIONS));
    eprintln!(
        "live_trust: minted {} SVIDs in {:.1?}",
        FEW_PEERS + CONNECTIONS,
        started.elapsed()
    );
    Fixture {
        ca,
        bundle,
        bundle_and_extra,
        bundle_replaced,
        source,
        policy,
        lists,
        crl_number: std::cell::Cell::new(1),
        allow_list,
        by_policy,
        few,
        many,
    }
}

impl Fixture {
    /// Sets the trust domain's bundle (the server's own SVID stays).
    fn set_bundles(&self, bundles: &TrustBundles) {
        let svid = self.ca.svid(SERVER_ID).issue().unwrap().to_svid().unwrap();
        self.source.update(Credentials::new(svid, bundles.clone()));
    }

    /// Publishes the CA's next revocation list (revoking nobody).
    fn next_crl(&self) {
        self.crl_number.set(self.crl_number.get() + 1);
        let crl = self.ca.crl(&[]).number(self.crl_number.get());
        self.lists.replace([crl.der().unwrap()]).unwrap();
    }
}

/// Registers `count` connections with `channel`, cycling through `chains`.
fn register(channel: &SecureChannel, chains: &[Chain], count: usize) -> Vec<BenchConnection> {
    (0..count)
        .map(|i| channel.bench_register(&chains[i % chains.len()]).unwrap())
        .collect()
}

/// A group of sweeps that take up to a second each: ten samples of one sweep or more.
fn slow_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group
}

fn sweeps(c: &mut Criterion) {
    let f = fixture();
    let peer_sets = [("100_peers", &f.few), ("10000_peers", &f.many)];

    let mut group = c.benchmark_group("sweep/no_change");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (admission, channel) in [
        ("allow_list", &f.allow_list),
        ("policy_1000_rules", &f.by_policy),
    ] {
        for (peers, chains) in peer_sets {
            let connections = register(channel, chains, CONNECTIONS);
            group.bench_function(format!("{admission}/{peers}"), |b| {
                b.iter(|| assert_eq!(channel.bench_sweep(), 0));
            });
            assert!(connections.iter().all(|c| !c.is_cut_off()));
        }
    }
    group.finish();

    let mut group = slow_group(c, "sweep/bundle_changed/allow_list");
    for (peers, chains) in peer_sets {
        f.set_bundles(&f.bundle);
        let _connections = register(&f.allow_list, chains, CONNECTIONS);
        let mut extra = false;
        group.bench_function(peers, |b| {
            b.iter_batched(
                || {
                    extra = !extra;
                    f.set_bundles(if extra {
                        &f.bundle_and_extra
                    } else {
                        &f.bundle
                    });
                },
                |()| assert_eq!(f.allow_list.bench_sweep(), 0),
                BatchSize::PerIteration,
            );
        });
    }
    f.set_bundles(&f.bundle);
    group.finish();

    let mut group = slow_group(c, "sweep/lists_changed/allow_list");
    for (peers, chains) in peer_sets {
        let _connections = register(&f.allow_list, chains, CONNECTIONS);
        group.bench_function(peers, |b| {
            b.iter_batched(
                || f.next_crl(),
                |()| assert_eq!(f.allow_list.bench_sweep(), 0),
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();

    let mut group = slow_group(c, "sweep/cut_all");
    group.bench_function("policy_1000_rules/100_peers", |b| {
        b.iter_batched(
            || {
                f.policy.replace(admission_policy(0));
                let connections = register(&f.by_policy, &f.few, CONNECTIONS);
                f.policy.replace(admission_policy(RULES));
                connections
            },
            |connections| {
                assert_eq!(f.by_policy.bench_sweep(), CONNECTIONS);
                connections
            },
            BatchSize::PerIteration,
        );
    });
    f.policy.replace(admission_policy(0));
    for (peers, chains) in peer_sets {
        group.bench_function(format!("bundle_replaced/allow_list/{peers}"), |b| {
            b.iter_batched(
                || {
                    f.set_bundles(&f.bundle);
                    let connections = register(&f.allow_list, chains, CONNECTIONS);
                    f.set_bundles(&f.bundle_replaced);
                    connections
                },
                |connections| {
                    assert_eq!(f.allow_list.bench_sweep(), CONNECTIONS);
                    connections
                },
                BatchSize::PerIteration,
            );
        });
    }
    f.set_bundles(&f.bundle);
    group.finish();
}

/// Echoes `size`-byte messages until the peer hangs up.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, size: usize) {
    let mut buf = vec![0u8; size];
    while stream.read_exact(&mut buf).await.is_ok() {
        stream.write_all(&buf).await.unwrap();
        stream.flush().await.unwrap();
    }
}

/// `n` ping-pongs of `message` over `stream`; the time they took.
async fn ping_pong<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    message: &[u8],
    n: u64,
) -> Duration {
    let mut back = vec![0u8; message.len()];
    let started = Instant::now();
    for _ in 0..n {
        stream.write_all(message).await.unwrap();
        stream.flush().await.unwrap();
        stream.read_exact(&mut back).await.unwrap();
    }
    started.elapsed()
}

fn request_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ca = DevCa::new("example.org").unwrap();
    const CLIENT_ID: &str = "spiffe://example.org/web";
    let client_svid = ca.svid(CLIENT_ID).issue().unwrap();
    let pair = channels::pair(&ca, SERVER_ID, &client_svid, CLIENT_ID);
    let (server, client) = (&pair.server, &pair.client);
    let name = ServerName::try_from("localhost").unwrap();

    for size in [1024usize, 16 * 1024] {
        let message = vec![0x5a_u8; size];
        let mut group = c.benchmark_group(format!("request/ping_pong_{}KiB", size / 1024));
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(3));
        let (tracked, untracked) = runtime.block_on(async {
            let mut pairs = Vec::new();
            for _ in 0..2 {
                let (a, b) = duplex(64 * 1024);
                let (s, c) = tokio::join!(server.accept(a), client.connect(name.clone(), b));
                pairs.push((s.unwrap(), c.unwrap()));
            }
            let (s, c) = pairs.pop().unwrap();
            let untracked = (s.into_parts().0, c.into_parts().0);
            (pairs.pop().unwrap(), untracked)
        });
        assert_eq!(server.open_connections(), 1);
        let (tracked_server, mut tracked_client) = tracked;
        let (untracked_server, mut untracked_client) = untracked;
        runtime.spawn(echo(tracked_server, size));
        runtime.spawn(echo(untracked_server, size));
        group.bench_function("untracked", |b| {
            b.iter_custom(|n| runtime.block_on(ping_pong(&mut untracked_client, &message, n)));
        });
        group.bench_function("tracked", |b| {
            b.iter_custom(|n| runtime.block_on(ping_pong(&mut tracked_client, &message, n)));
        });
        group.finish();
        drop((tracked_client, untracked_client));
        // Let the echo tasks see the hang-up and drop their streams.
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    }
}

criterion_group!(benches, sweeps, request_path);
criterion_main!(benches);
