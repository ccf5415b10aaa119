//! Full and resumed mTLS handshakes (TLS 1.3, ECDSA P-256 SVIDs) through `SecureChannel`,
//! against bare tokio-rustls with rustls's stock WebPKI verifiers on the same certificates, over
//! in-memory duplex pipes.
//!
//! Two kinds of groups:
//!
//! - `server_cpu/*`: the server runs on its own thread and the reported "time" is that thread's
//!   CPU time per handshake (from `/proc/thread-self/schedstat`, nanoseconds), so the client's
//!   work is not counted. Every server faces the same bare rustls client. This is the budget's
//!   "server CPU per handshake".
//!   - `full/secure_channel` reuses one client SVID, so after the first handshake the
//!     channel's verified-chain cache (keyed by the chain's SHA-256 and the credential revision)
//!     spares it the chain validation that stock rustls repeats; `full_distinct_clients/*`
//!     presents a freshly issued client SVID on every handshake, which defeats that cache, and
//!     is the honest like-for-like comparison.
//!   - `resumed/*`: TLS 1.3 resumption; the channel re-validates the stored chain.
//! - `e2e/*`: client and server on one thread, wall time per handshake (the inverse of the
//!   handshake rate of one client-server pair, both sides' CPU); the channel's side uses a
//!   `SecureChannel` client too.
//!
//! - `kx_server_cpu/<group>/*` and `kx_e2e/<group>/*`: full handshakes with one key exchange
//!   group on both stacks: `X25519MLKEM768` (the channel's default, `PreferPostQuantum`, against
//!   bare rustls with the same group order, X25519MLKEM768 then X25519, P-256, P-384: the client
//!   sends both the hybrid and the X25519 key share) and `X25519` (`KeyExchange::ClassicalOnly`
//!   against bare rustls with X25519, P-256, P-384). Server CPU as above, and end to end.
//!
//! Bare rustls in the other groups uses the channel's default group order too
//! (X25519MLKEM768 first), so every line compares the same key exchange.
//!
//! Run with `cargo bench --features testkit --bench handshake`. Compare the ratio of the lines of
//! a group within one run; absolute numbers vary on shared machines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rustls::NamedGroup;
use rustls::client::Resumption;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{PrivateKeyDer, ServerName};
use secure_channel::testkit::{DevCa, IssuedSvid};
use secure_channel::tls::KeyExchange;
use secure_channel::{Credentials, MemorySource, SecureChannel, TrustBundles};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/web";

struct Fixture {
    ca: DevCa,
    ours_server: SecureChannel,
    ours_client: SecureChannel,
    bare_server: Arc<rustls::ServerConfig>,
    bare_client_full: Arc<rustls::ClientConfig>,
    bare_client_resuming: Arc<rustls::ClientConfig>,
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    _sources: (MemorySource, MemorySource),
}

fn bare_client(
    provider: &Arc<rustls::crypto::CryptoProvider>,
    roots: &Arc<rustls::RootCertStore>,
    svid: &IssuedSvid,
    resume: bool,
) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(
            svid.chain().to_vec(),
            PrivateKeyDer::Pkcs8(svid.key().clone_key()),
        )
        .unwrap();
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Arc::new(config)
}

/// aws-lc-rs with the key exchange groups in the channel's default order
/// (`KeyExchange::PreferPostQuantum`): X25519MLKEM768 first.
fn prefer_post_quantum() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .kx_groups
        .sort_by_key(|g| g.name() != NamedGroup::X25519MLKEM768);
    provider
}

/// aws-lc-rs without the post-quantum hybrid (`KeyExchange::ClassicalOnly`'s groups).
fn classical() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .kx_groups
        .retain(|g| g.name() != NamedGroup::X25519MLKEM768);
    provider
}

fn fixture() -> Fixture {
    let ca = DevCa::new("example.org").unwrap();
    let server_svid = ca.svid(SERVER_ID).dns_name("localhost").issue().unwrap();
    let client_svid = ca.svid(CLIENT_ID).issue().unwrap();
    let bundles = TrustBundles::new().with(ca.bundle().unwrap());
    let server_source = MemorySource::new(Credentials::new(
        server_svid.to_svid().unwrap(),
        bundles.clone(),
    ));
    let client_source =
        MemorySource::new(Credentials::new(client_svid.to_svid().unwrap(), bundles));
    let ours_server = SecureChannel::builder(&server_source)
        .allow_client(CLIENT_ID)
        .build()
        .unwrap();
    let ours_client = SecureChannel::builder(&client_source)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();

    let provider = Arc::new(prefer_post_quantum());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.root_certificate().clone()).unwrap();
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let bare_server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            server_svid.chain().to_vec(),
            PrivateKeyDer::Pkcs8(server_svid.key().clone_key()),
        )
        .unwrap();
    Fixture {
        bare_client_full: bare_client(&provider, &roots, &client_svid, false),
        bare_client_resuming: bare_client(&provider, &roots, &client_svid, true),
        ca,
        ours_server,
        ours_client,
        bare_server: Arc::new(bare_server),
        roots,
        provider,
        _sources: (server_source, client_source),
    }
}

/// CPU time this thread has run, from the scheduler's accounting (nanoseconds).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

#[derive(Clone)]
enum Server {
    Ours(SecureChannel),
    Bare(tokio_rustls::TlsAcceptor),
}

struct Job {
    server: Server,
    handshakes: u64,
    streams: tokio::sync::mpsc::UnboundedReceiver<DuplexStream>,
    done: std::sync::mpsc::Sender<Duration>,
}

/// A server on its own thread: runs one batch of handshakes per job and reports the CPU time
/// the thread spent on it.
fn server_thread() -> std::sync::mpsc::Sender<Job> {
    let (jobs, receiver) = std::sync::mpsc::channel::<Job>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        while let Ok(mut job) = receiver.recv() {
            let cpu = runtime.block_on(async {
                let start = thread_cpu();
                for _ in 0..job.handshakes {
                    let io = job.streams.recv().await.unwrap();
                    match &job.server {
                        Server::Ours(channel) => {
                            reply_and_wait(channel.accept(io).await.unwrap()).await;
                        }
                        Server::Bare(acceptor) => {
                            reply_and_wait(acceptor.accept(io).await.unwrap()).await;
                        }
                    }
                }
                thread_cpu() - start
            });
            let _ = job.done.send(cpu);
        }
    });
    jobs
}

/// Writes one byte, then waits for the client to hang up (so that nothing the server sent is
/// lost to an early close).
async fn reply_and_wait<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    stream.write_all(b"x").await.unwrap();
    stream.flush().await.unwrap();
    let mut rest = [0u8; 16];
    while let Ok(n) = stream.read(&mut rest).await {
        if n == 0 {
            break;
        }
    }
}

/// Runs `n` handshakes of `client()` configurations against `server` on the server thread and
/// returns the server thread's CPU time.
fn server_cpu(
    runtime: &tokio::runtime::Runtime,
    jobs: &std::sync::mpsc::Sender<Job>,
    server: &Server,
    n: u64,
    mut client: impl FnMut() -> Arc<rustls::ClientConfig>,
) -> Duration {
    let (tx, streams) = tokio::sync::mpsc::unbounded_channel();
    let (done, finished) = std::sync::mpsc::channel();
    jobs.send(Job {
        server: server.clone(),
        handshakes: n,
        streams,
        done,
    })
    .unwrap();
    runtime.block_on(async {
        let name = ServerName::try_from("localhost").unwrap();
        for _ in 0..n {
            let (a, b) = duplex(64 * 1024);
            tx.send(a).unwrap();
            let connector = tokio_rustls::TlsConnector::from(client());
            let mut stream = connector.connect(name.clone(), b).await.unwrap();
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.unwrap();
            drop(stream);
        }
    });
    finished.recv().unwrap()
}

/// A server name never used before, so the client has no session to resume.
fn fresh_name(counter: &AtomicU32) -> ServerName<'static> {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    ServerName::IpAddress(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (n & 0x00ff_ffff))).into())
}

async fn ours_e2e(f: &Fixture, name: ServerName<'static>) {
    let (a, b) = duplex(64 * 1024);
    let (server, client) = tokio::join!(f.ours_server.accept(a), f.ours_client.connect(name, b));
    let (mut server, client) = (server.unwrap(), client.unwrap());
    // Let the client read the session tickets, as a real client would before reusing them.
    finish(&mut server, client).await;
}

async fn bare_e2e(server: &Arc<rustls::ServerConfig>, client: &Arc<rustls::ClientConfig>) {
    let (a, b) = duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server.clone());
    let connector = tokio_rustls::TlsConnector::from(client.clone());
    let name = ServerName::try_from("localhost").unwrap();
    let (server, client) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
    finish(&mut server.unwrap(), client.unwrap()).await;
}

async fn finish<S, C>(server: &mut S, mut client: C)
where
    S: tokio::io::AsyncWrite + Unpin,
    C: tokio::io::AsyncRead + Unpin,
{
    server.write_all(b"x").await.unwrap();
    let mut byte = [0u8; 1];
    client.read_exact(&mut byte).await.unwrap();
}

fn handshakes(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = fixture();
    let jobs = server_thread();
    let ours = Server::Ours(f.ours_server.clone());
    let bare = Server::Bare(tokio_rustls::TlsAcceptor::from(f.bare_server.clone()));

    let mut group = c.benchmark_group("server_cpu/full");
    for (name, server) in [("bare_tokio_rustls", &bare), ("secure_channel", &ours)] {
        group.bench_function(name, |b| {
            b.iter_custom(|n| server_cpu(&runtime, &jobs, server, n, || f.bare_client_full.clone()))
        });
    }
    group.finish();

    // A new client SVID (new key, new serial) on every handshake: no chain is seen twice.
    let mut group = c.benchmark_group("server_cpu/full_distinct_clients");
    group.sample_size(30);
    for (name, server) in [("bare_tokio_rustls", &bare), ("secure_channel", &ours)] {
        group.bench_function(name, |b| {
            b.iter_custom(|n| {
                let clients: Vec<_> = (0..n)
                    .map(|_| {
                        let svid = f.ca.svid(CLIENT_ID).issue().unwrap();
                        bare_client(&f.provider, &f.roots, &svid, false)
                    })
                    .collect();
                let mut clients = clients.into_iter();
                server_cpu(&runtime, &jobs, server, n, || clients.next().unwrap())
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("server_cpu/resumed");
    for (name, server) in [("bare_tokio_rustls", &bare), ("secure_channel", &ours)] {
        // One full handshake first, so every measured one resumes.
        server_cpu(&runtime, &jobs, server, 1, || {
            f.bare_client_resuming.clone()
        });
        group.bench_function(name, |b| {
            b.iter_custom(|n| {
                server_cpu(&runtime, &jobs, server, n, || {
                    f.bare_client_resuming.clone()
                })
            })
        });
    }
    group.finish();

    let counter = AtomicU32::new(1);
    let mut group = c.benchmark_group("e2e/full");
    group.bench_function("bare_tokio_rustls", |b| {
        b.to_async(&runtime)
            .iter(|| bare_e2e(&f.bare_server, &f.bare_client_full))
    });
    group.bench_function("secure_channel", |b| {
        b.to_async(&runtime)
            .iter(|| ours_e2e(&f, fresh_name(&counter)))
    });
    group.finish();

    let mut group = c.benchmark_group("e2e/resumed");
    group.bench_function("bare_tokio_rustls", |b| {
        b.to_async(&runtime)
            .iter(|| bare_e2e(&f.bare_server, &f.bare_client_resuming))
    });
    let fixed = ServerName::try_from("api.example.org").unwrap();
    group.bench_function("secure_channel", |b| {
        b.to_async(&runtime).iter(|| ours_e2e(&f, fixed.clone()))
    });
    group.finish();
}

/// One key exchange choice on both stacks: the channel's server and client, bare rustls's.
struct KxFixture {
    label: &'static str,
    ours_server: SecureChannel,
    ours_client: SecureChannel,
    bare_server: Arc<rustls::ServerConfig>,
    bare_client: Arc<rustls::ClientConfig>,
    expected: NamedGroup,
    _sources: (MemorySource, MemorySource),
}

fn kx_fixture(
    f: &Fixture,
    label: &'static str,
    choice: KeyExchange,
    provider: rustls::crypto::CryptoProvider,
    expected: NamedGroup,
) -> KxFixture {
    let server_svid = f.ca.svid(SERVER_ID).dns_name("localhost").issue().unwrap();
    let client_svid = f.ca.svid(CLIENT_ID).issue().unwrap();
    let bundles = TrustBundles::new().with(f.ca.bundle().unwrap());
    let server_source = MemorySource::new(Credentials::new(
        server_svid.to_svid().unwrap(),
        bundles.clone(),
    ));
    let client_source =
        MemorySource::new(Credentials::new(client_svid.to_svid().unwrap(), bundles));
    let ours_server = SecureChannel::builder(&server_source)
        .allow_client(CLIENT_ID)
        .key_exchange(choice)
        .build()
        .unwrap();
    let ours_client = SecureChannel::builder(&client_source)
        .expect_server(SERVER_ID)
        .key_exchange(choice)
        .build()
        .unwrap();
    let provider = Arc::new(provider);
    let verifier = WebPkiClientVerifier::builder_with_provider(f.roots.clone(), provider.clone())
        .build()
        .unwrap();
    let bare_server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            server_svid.chain().to_vec(),
            PrivateKeyDer::Pkcs8(server_svid.key().clone_key()),
        )
        .unwrap();
    KxFixture {
        label,
        ours_server,
        ours_client,
        bare_server: Arc::new(bare_server),
        bare_client: bare_client(&provider, &f.roots, &client_svid, false),
        expected,
        _sources: (server_source, client_source),
    }
}

/// A full handshake between the fixture's own channels; checks the negotiated group.
async fn ours_kx_e2e(k: &KxFixture, name: ServerName<'static>) {
    let (a, b) = duplex(64 * 1024);
    let (server, client) = tokio::join!(k.ours_server.accept(a), k.ours_client.connect(name, b));
    let (mut server, client) = (server.unwrap(), client.unwrap());
    assert_eq!(client.key_exchange_group(), Some(k.expected));
    finish(&mut server, client).await;
}

/// Full handshakes per key exchange group, the channel against bare rustls with the same groups.
fn key_exchange(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = fixture();
    let jobs = server_thread();
    let counter = AtomicU32::new(1);
    let fixtures = [
        kx_fixture(
            &f,
            "X25519MLKEM768",
            KeyExchange::PreferPostQuantum,
            prefer_post_quantum(),
            NamedGroup::X25519MLKEM768,
        ),
        kx_fixture(
            &f,
            "X25519",
            KeyExchange::ClassicalOnly,
            classical(),
            NamedGroup::X25519,
        ),
    ];
    for k in &fixtures {
        let ours = Server::Ours(k.ours_server.clone());
        let bare = Server::Bare(tokio_rustls::TlsAcceptor::from(k.bare_server.clone()));
        let mut group = c.benchmark_group(format!("kx_server_cpu/{}", k.label));
        group.sample_size(20);
        for (name, server) in [("bare_tokio_rustls", &bare), ("secure_channel", &ours)] {
            group.bench_function(name, |b| {
                b.iter_custom(|n| server_cpu(&runtime, &jobs, server, n, || k.bare_client.clone()))
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("kx_e2e/{}", k.label));
        group.sample_size(20);
        group.bench_function("bare_tokio_rustls", |b| {
            b.to_async(&runtime)
                .iter(|| bare_e2e(&k.bare_server, &k.bare_client))
        });
        group.bench_function("secure_channel", |b| {
            b.to_async(&runtime)
                .iter(|| ours_kx_e2e(k, fresh_name(&counter)))
        });
        group.finish();
    }
}

criterion_group!(benches, handshakes, key_exchange);
criterion_main!(benches);
