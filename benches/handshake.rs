//! Full and resumed mTLS handshakes through `SecureChannel`, against bare tokio-rustls with
//! rustls's stock WebPKI verifiers on the same certificates, over in-memory duplex pipes.
//!
//! Run with `cargo bench --features testkit --bench handshake`. Compare the ratio of the two
//! lines of a group within one run; absolute numbers vary on shared machines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use rustls::client::Resumption;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{PrivateKeyDer, ServerName};
use secure_channel::testkit::DevCa;
use secure_channel::{Credentials, MemorySource, SecureChannel, TrustBundles};
use tokio::io::duplex;

const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/web";

struct Fixture {
    ours_server: SecureChannel,
    ours_client: SecureChannel,
    bare_server: Arc<rustls::ServerConfig>,
    bare_client_full: Arc<rustls::ClientConfig>,
    bare_client_resuming: Arc<rustls::ClientConfig>,
    _sources: (MemorySource, MemorySource),
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

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
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
    let client = |resume: bool| {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(
                client_svid.chain().to_vec(),
                PrivateKeyDer::Pkcs8(client_svid.key().clone_key()),
            )
            .unwrap();
        if !resume {
            config.resumption = Resumption::disabled();
        }
        Arc::new(config)
    };
    Fixture {
        ours_server,
        ours_client,
        bare_server: Arc::new(bare_server),
        bare_client_full: client(false),
        bare_client_resuming: client(true),
        _sources: (server_source, client_source),
    }
}

/// A server name never used before, so the client has no session to resume.
fn fresh_name(counter: &AtomicU32) -> ServerName<'static> {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    ServerName::IpAddress(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (n & 0x00ff_ffff))).into())
}

async fn ours(f: &Fixture, name: ServerName<'static>) {
    let (a, b) = duplex(64 * 1024);
    let (server, client) = tokio::join!(f.ours_server.accept(a), f.ours_client.connect(name, b));
    let (mut server, client) = (server.unwrap(), client.unwrap());
    // Let the client read the session tickets, as a real client would before reusing them.
    finish(&mut server, client).await;
}

async fn bare(server: &Arc<rustls::ServerConfig>, client: &Arc<rustls::ClientConfig>) {
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    let counter = AtomicU32::new(1);

    let mut group = c.benchmark_group("full_handshake");
    group.bench_function("bare_tokio_rustls", |b| {
        b.to_async(&runtime)
            .iter(|| bare(&f.bare_server, &f.bare_client_full))
    });
    group.bench_function("secure_channel", |b| {
        b.to_async(&runtime).iter(|| ours(&f, fresh_name(&counter)))
    });
    group.finish();

    let mut group = c.benchmark_group("resumed_handshake");
    group.bench_function("bare_tokio_rustls", |b| {
        b.to_async(&runtime)
            .iter(|| bare(&f.bare_server, &f.bare_client_resuming))
    });
    let fixed = ServerName::try_from("api.example.org").unwrap();
    group.bench_function("secure_channel", |b| {
        b.to_async(&runtime).iter(|| ours(&f, fixed.clone()))
    });
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
