//! Load generator: axum in plaintext, over bare tokio-rustls mTLS, behind `SecureChannel` with
//! every layer on, and behind a sidecar terminating mTLS (nginx, or the `secure-channel proxy
//! inbound` binary), on 127.0.0.1.
//!
//! Usage (a benchmark target without criterion's harness, built in the release profile):
//!
//! ```text
//! cargo bench --bench loadgen -- [--seconds 5] [--warmup 1] [--connections 32]
//!     [--http1 | --http2] [--scenarios plain,rustls,secure,nginx,proxy] [--idle 2000] [--pin]
//!     [--rounds 1] [--side-by-side]
//! ```
//!
//! A plain `cargo bench` runs it too, with the defaults, among the criterion benches;
//! `cargo bench -- FILTER` (a criterion filter) skips it unless FILTER is part of `loadgen`.
//! Cargo adds `--bench` to the arguments, which is ignored here.
//!
//! - Each scenario's server runs in a child process of this harness (a copy of itself started
//!   with `--serve`), so its CPU time is its own: the table's "server CPU/req" is the child's
//!   CPU time (all its threads, from `/proc/<pid>/task/*/schedstat`) over the measured
//!   window divided by the requests completed in it. For nginx it is nginx's master and workers
//!   plus the plaintext axum behind it.
//! - The client (this process) keeps `--connections` keep-alive connections busy, one request at
//!   a time each, for `--warmup` then `--seconds` seconds, and reports requests/s and p50/p99
//!   latency over the measured window. All TLS scenarios face the same client: tokio-rustls
//!   with the client's SVID, TLS 1.3, ALPN `http/1.1` or `h2`. Every request carries the same
//!   certificate-bound bearer token (only the `secure` scenario checks it).
//! - Scenarios: `plain` (axum over TCP); `rustls` (axum over bare tokio-rustls, rustls's stock
//!   WebPKI client verifier, same certificates); `secure` (axum over `SecureChannel::listener`
//!   with `PeerIdentity`, `JwtLayer` with a cached bound ES256 token and `AuthorizeLayer` with a
//!   1,000-rule policy); `channel` (not run by default: axum over `SecureChannel::listener` with
//!   `PeerIdentity` in every request and no layers, the transport's share of `secure`); `nginx` (only when `nginx` is on the PATH: nginx with
//!   `ssl_verify_client on` against the testkit CA, proxying to the plaintext axum with a
//!   keep-alive upstream; started with its own temporary `nginx.conf` and stopped at the end);
//!   `proxy` (only when the CLI is built, `cargo build --release -p secure-channel-cli`, or
//!   `SECURE_CHANNEL_BIN` names the binary: `secure-channel proxy inbound` with `--allow` the
//!   client, proxying to the same plaintext axum; `--worker-threads 2`, as nginx has 2 worker
//!   processes). Its server CPU is the proxy's plus the upstream's, as for nginx.
//! - `--idle N` (0 to skip): memory per idle connection, `rustls` against `secure`: the server
//!   child's RSS before and after N idle mTLS HTTP/1.1 connections (each made one request).
//!
//! - `--pin` (needs `taskset` and 2 CPUs or more): the client on CPU 0, every server process on
//!   CPU 1, so that the server's throughput is bounded by its own CPU cost instead of by the
//!   scheduler sharing both CPUs between client and server.
//! - `--rounds N`: every scenario N times; even rounds run the scenarios in reverse order.
//! - `--side-by-side`: every selected scenario's server runs at the same time, each driven by its
//!   own `--connections` connections over the same window, so that all of them share whatever
//!   the host does meanwhile. On a machine whose speed drifts between one run and the next, the
//!   ratios of servers measured together are steadier than those of servers measured one after
//!   the other (the default): each server gets a share of the same CPUs, so its rate and CPU per
//!   request compare directly. With `--pin`, every server shares CPU 1.
//! - `--no-idle-timeout` (diagnostic): the `secure` listener without its idle timeout (default
//!   5 minutes), to show what the per-read/write idle timer costs.
//!
//! Everything listens on 127.0.0.1 only, every loop is bounded by time or count, and children
//! are stopped (and exit by themselves when this process's pipe to them closes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use secure_channel::authz::PolicySource;
use secure_channel::jwt::{Algorithm, JwtValidator, KeySource};
use secure_channel::layer::authorize::AuthorizeLayer;
use secure_channel::layer::jwt::JwtLayer;
use secure_channel::testkit::{DevCa, TokenIssuer};
use secure_channel::{
    Credentials, MemorySource, SecureChannel, Svid, TrustBundle, TrustBundles, TrustDomain,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

#[path = "support/policy.rs"]
mod bench_policy;

use bench_policy::policy;

const TRUST_DOMAIN: &str = "example.org";
const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/ns/prod/svc-500";
const PATH: &str = "/api/v1/svc-500/orders/42";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "https://api.test";

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Options {
    seconds: f64,
    warmup: f64,
    connections: usize,
    protocols: Vec<Proto>,
    scenarios: Vec<String>,
    idle: usize,
    pin: bool,
    no_idle_timeout: bool,
    rounds: usize,
    side_by_side: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http1,
    Http2,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Http1 => "HTTP/1.1",
            Proto::Http2 => "HTTP/2",
        }
    }

    fn alpn(self) -> Vec<u8> {
        match self {
            Proto::Http1 => b"http/1.1".to_vec(),
            Proto::Http2 => b"h2".to_vec(),
        }
    }
}

fn options(args: &[String]) -> Options {
    let mut o = Options {
        seconds: 5.0,
        warmup: 1.0,
        connections: 32,
        protocols: vec![Proto::Http1, Proto::Http2],
        scenarios: ["plain", "rustls", "secure", "nginx", "proxy"]
            .map(String::from)
            .to_vec(),
        idle: 2000,
        pin: false,
        no_idle_timeout: false,
        rounds: 1,
        side_by_side: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().cloned().unwrap_or_default();
        match arg.as_str() {
            "--seconds" => o.seconds = value().parse().expect("--seconds N"),
            "--warmup" => o.warmup = value().parse().expect("--warmup N"),
            "--connections" => o.connections = value().parse().expect("--connections N"),
            "--idle" => o.idle = value().parse().expect("--idle N"),
            "--rounds" => o.rounds = value().parse().expect("--rounds N"),
            "--pin" => o.pin = true,
            "--no-idle-timeout" => o.no_idle_timeout = true,
            "--side-by-side" => o.side_by_side = true,
            "--http1" => o.protocols = vec![Proto::Http1],
            "--http2" => o.protocols = vec![Proto::Http2],
            "--scenarios" => o.scenarios = value().split(',').map(String::from).collect(),
            // Added by `cargo bench` to every benchmark's arguments.
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "usage: cargo bench --bench loadgen -- [--seconds N] [--warmup N] [--connections N] \
                     [--http1|--http2] [--scenarios plain,rustls,secure,nginx,proxy] [--idle N] [--rounds N] [--pin] \
                     [--side-by-side] [--no-idle-timeout]"
                );
                std::process::exit(0);
            }
            // A positional argument is a filter that `cargo bench -- FILTER` hands to every
            // benchmark: this one runs only when named by it.
            filter if !filter.starts_with('-') => {
                if !"loadgen".contains(filter) {
                    println!("loadgen: skipped (the filter {filter:?} does not name it)");
                    std::process::exit(0);
                }
            }
            other => panic!("unknown argument {other:?} (see --help)"),
        }
    }
    o.seconds = o.seconds.clamp(0.1, 600.0);
    o.warmup = o.warmup.clamp(0.0, 60.0);
    o.connections = o.connections.clamp(1, 4096);
    o.idle = o.idle.min(10_000);
    o.rounds = o.rounds.clamp(1, 20);
    o
}

// ---------------------------------------------------------------------------------------------
// Material shared by the parent and the children: written to a temporary directory.

struct Material {
    dir: PathBuf,
}

impl Material {
    fn create(dir: &Path) -> Self {
        let ca = DevCa::new(TRUST_DOMAIN).unwrap();
        let server = ca.svid(SERVER_ID).dns_name("localhost").issue().unwrap();
        let client = ca.svid(CLIENT_ID).issue().unwrap();
        let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
        let token = issuer
            .token()
            .audience(AUDIENCE)
            .subject("alice")
            .scope("orders:read")
            .bound_to_svid(&client)
            .expires_in(Duration::from_secs(3600))
            .sign()
            .unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write("ca.pem", &ca.bundle_pem());
        write("server.pem", &server.chain_pem());
        write("server.key", &server.key_pem());
        write("client.pem", &client.chain_pem());
        write("client.key", &client.key_pem());
        write("jwks.json", &issuer.jwks());
        write("token", &token);
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn open(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }

    fn certs(&self, name: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(&self.read(name))
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn key(&self, name: &str) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(&self.read(name)).unwrap()
    }

    fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in self.certs("ca.pem") {
            roots.add(cert).unwrap();
        }
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// The client every TLS scenario faces.
    fn client_config(&self, proto: Proto) -> Arc<rustls::ClientConfig> {
        let mut config = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(self.roots())
            .with_client_auth_cert(self.certs("client.pem"), self.key("client.key"))
            .unwrap();
        config.alpn_protocols = vec![proto.alpn()];
        Arc::new(config)
    }

    /// Bare rustls server: stock WebPKI client verifier, same certificates and ALPN as the
    /// channel.
    fn bare_server_config(&self) -> Arc<rustls::ServerConfig> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots(), Self::provider())
            .build()
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs("server.pem"), self.key("server.key"))
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    fn credentials(&self) -> Credentials {
        let svid = Svid::from_pem(&self.read("server.pem"), &self.read("server.key")).unwrap();
        let bundle = TrustBundle::from_pem(
            TrustDomain::new(TRUST_DOMAIN).unwrap(),
            &self.read("ca.pem"),
        )
        .unwrap();
        Credentials::new(svid, TrustBundles::new().with(bundle))
    }
}

// ---------------------------------------------------------------------------------------------
// The server child: `loadgen --serve MODE --dir DIR` prints `PORT n` and serves until its stdin
// closes.

fn routes() -> Router {
    Router::new().route("/{*rest}", get(|| async { "ok" }))
}

/// Bare tokio-rustls as an axum listener: TCP accept, then the handshake (failures skipped).
struct BareTlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for BareTlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn serve(mode: &str, dir: &Path, idle_timeout: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Exit when the parent goes away (its end of our stdin closes).
    std::thread::spawn(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        std::process::exit(0);
    });
    let material = Material::open(dir);
    runtime.block_on(async move {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        match mode {
            "plain" => {
                println!("PORT {port}");
                use axum::serve::ListenerExt;
                let listener = tcp.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, routes()).await.unwrap();
            }
            "rustls" => {
                println!("PORT {port}");
                let listener = BareTlsListener {
                    tcp,
                    acceptor: tokio_rustls::TlsAcceptor::from(material.bare_server_config()),
                };
                axum::serve(listener, routes()).await.unwrap();
            }
            "channel" | "secure" => {
                let source = MemorySource::new(material.credentials());
                let channel = SecureChannel::builder(&source)
                    .allow_client("spiffe://example.org/ns/prod/*")
                    .build()
                    .unwrap();
                let mut builder = channel.listener_builder().max_connections(20_000);
                if !idle_timeout {
                    builder = builder.idle_timeout(None);
                }
                let listener = builder.bind(tcp).unwrap();
                println!("PORT {port}");
                if mode == "channel" {
                    // The channel's transport alone: identity in every request, no token or
                    // policy.
                    secure_channel::integration::axum::serve(listener, routes())
                        .await
                        .unwrap();
                } else {
                    let validator = JwtValidator::access_tokens(AUDIENCE)
                        .issuer(ISSUER)
                        .key_source(
                            KeySource::from_jwks(
                                String::from_utf8(material.read("jwks.json")).unwrap(),
                            )
                            .unwrap(),
                        )
                        .require_certificate_binding()
                        .build()
                        .unwrap();
                    secure_channel::integration::axum::serve(listener, routes())
                        .jwt(JwtLayer::new(validator).require_scope("orders:read"))
                        .authorize(AuthorizeLayer::new(PolicySource::new(policy(1_000))))
                        .await
                        .unwrap();
                }
                drop(source);
            }
            other => panic!("unknown mode {other}"),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Process accounting from /proc.

/// CPU time of every thread of `pid` (nanoseconds), from the scheduler's accounting.
fn process_cpu(pid: u32) -> Duration {
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += text
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(total)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `pid` and its direct children (nginx's master and workers).
fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// `program`, on CPU 1 only when `pin`.
fn pinned(pin: bool, program: &std::ffi::OsStr) -> Command {
    if pin {
        let mut command = Command::new("taskset");
        command.arg("-c").arg("1").arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A server child process (this harness with `--serve`), stopped on drop.
struct ServerProcess {
    child: Child,
    port: u16,
}

impl ServerProcess {
    fn start(mode: &str, dir: &Path, o: &Options) -> Self {
        let mut child = pinned(o.pin, std::env::current_exe().unwrap().as_os_str())
            .args(["--serve", mode, "--dir"])
            .arg(dir)
            .args(o.no_idle_timeout.then_some("--no-idle-timeout"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("server {mode} did not start: {line:?}"));
        Self { child, port }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx terminating mTLS in front of a plaintext upstream; stopped on drop.
struct Nginx {
    child: Child,
    port: u16,
    conf: PathBuf,
    prefix: PathBuf,
}

impl Nginx {
    fn available() -> bool {
        Command::new("nginx")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn start(dir: &Path, upstream: u16, pin: bool) -> Self {
        let port = {
            // A free port on 127.0.0.1 for nginx to listen on.
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let d = dir.display();
        let conf = format!(
            r#"worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-body;
    proxy_temp_path {d}/nginx-proxy;
    fastcgi_temp_path {d}/nginx-fastcgi;
    uwsgi_temp_path {d}/nginx-uwsgi;
    scgi_temp_path {d}/nginx-scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    upstream app {{
        server 127.0.0.1:{upstream};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_protocols TLSv1.3;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        ssl_client_certificate {d}/ca.pem;
        ssl_verify_client on;
        ssl_verify_depth 3;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Client-Cert-Fingerprint $ssl_client_fingerprint;
        }}
    }}
}}
"#
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut child = pinned(pin, "nginx".as_ref())
            .arg("-c")
            .arg(&path)
            .args(["-p", &dir.display().to_string(), "-g", "daemon off;"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // Wait (bounded) until it accepts.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self {
                    child,
                    port,
                    conf: path,
                    prefix: dir.to_path_buf(),
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "nginx did not start; see {}",
            dir.join("nginx-error.log").display()
        );
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A graceful stop of this instance (signalled through its own pid file), then make sure.
        let _ = Command::new("nginx")
            .arg("-c")
            .arg(&self.conf)
            .args(["-p", &self.prefix.display().to_string(), "-s", "stop"])
            .stderr(Stdio::null())
            .status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `secure-channel proxy inbound` binary in front of a plaintext upstream; killed on drop.
struct Proxy {
    child: Child,
    port: u16,
}

impl Proxy {
    /// The CLI binary: `SECURE_CHANNEL_BIN`, or the one `cargo build --release -p
    /// secure-channel-cli` put beside this harness.
    fn binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("SECURE_CHANNEL_BIN") {
            return Some(PathBuf::from(path));
        }
        let exe = std::env::current_exe().ok()?;
        let path = exe.parent()?.parent()?.join("secure-channel");
        path.exists().then_some(path)
    }

    fn start(binary: &Path, dir: &Path, upstream: u16, pin: bool) -> Self {
        let file = |name: &str| dir.join(name).display().to_string();
        let mut child = pinned(pin, binary.as_os_str())
            .args([
                "proxy",
                "inbound",
                "--listen",
                "127.0.0.1:0",
                "--worker-threads",
                "2",
            ])
            .args(["--backend", &format!("127.0.0.1:{upstream}")])
            .args(["--cert", &file("server.pem"), "--key", &file("server.key")])
            .args(["--bundle", &file("ca.pem"), "--allow", CLIENT_ID])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse::<SocketAddr>().ok())
            .map(|addr| addr.port())
            .unwrap_or_else(|| panic!("the proxy did not start: {line:?}"));
        Self { child, port }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What terminates mTLS in front of the plaintext upstream.
enum Sidecar {
    Nginx(Nginx),
    Proxy(Proxy),
}

impl Sidecar {
    fn port(&self) -> u16 {
        match self {
            Self::Nginx(nginx) => nginx.port,
            Self::Proxy(proxy) => proxy.port,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Self::Nginx(nginx) => nginx.child.id(),
            Self::Proxy(proxy) => proxy.child.id(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client.

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

#[derive(Clone)]
struct Target {
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    proto: Proto,
    authorization: HeaderValue,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Target {
    async fn connect(&self) -> Sender {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(config) => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let name = ServerName::try_from("localhost").unwrap();
                Box::new(connector.connect(name, tcp).await.unwrap())
            }
        };
        match self.proto {
            Proto::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                Sender::H1(sender)
            }
            Proto::Http2 => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                Sender::H2(sender)
            }
        }
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let builder = match self.proto {
            Proto::Http1 => Request::get(PATH).header(http::header::HOST, "localhost"),
            Proto::Http2 => Request::get(format!("{scheme}://localhost{PATH}")),
        };
        builder
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .body(Empty::new())
            .unwrap()
    }
}

impl Sender {
    /// One request; `Err` on any failure or a status other than 200.
    async fn send(&mut self, request: Request<Empty<Bytes>>) -> Result<(), String> {
        let response = match self {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(request).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(request).await
            }
        }
        .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != 200 || body.as_ref() != b"ok" {
            return Err(format!("{status} {}", String::from_utf8_lossy(&body)));
        }
        Ok(())
    }
}

struct RunResult {
    requests: u64,
    errors: u64,
    seconds: f64,
    p50: Duration,
    p99: Duration,
    server_cpu: Duration,
}

/// Drives `o.connections` keep-alive connections for warmup + measurement; `server_pids` are
/// sampled for CPU at the window's edges.
async fn drive(target: &Target, o: &Options, server_pids: &[u32]) -> RunResult {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(o.warmup);
    let until = measure_from + Duration::from_secs_f64(o.seconds);
    let mut tasks = Vec::new();
    for _ in 0..o.connections {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = target.connect().await;
            let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let result = sender.send(target.request()).await;
                let done = Instant::now();
                if sent >= measure_from && done <= until {
                    match result {
                        Ok(()) => latencies
                            .push(u32::try_from((done - sent).as_micros()).unwrap_or(u32::MAX)),
                        Err(_) => errors += 1,
                    }
                }
                if let Err(error) = &result {
                    if errors <= 1 {
                        eprintln!("request failed: {error}");
                    }
                    if errors > 100 {
                        break;
                    }
                    sender = target.connect().await;
                }
            }
            (latencies, errors)
        }));
    }
    let cpu = |pids: &[u32]| pids.iter().map(|p| process_cpu(*p)).sum::<Duration>();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_start = cpu(server_pids);
    let wall_start = Instant::now();
    tokio::time::sleep_until(until.into()).await;
    let cpu_end = cpu(server_pids);
    let seconds = wall_start.elapsed().as_secs_f64();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(Duration::ZERO, |us| Duration::from_micros(u64::from(*us)))
    };
    RunResult {
        requests: all.len() as u64,
        errors,
        seconds,
        p50: pct(0.50),
        p99: pct(0.99),
        server_cpu: cpu_end.saturating_sub(cpu_start),
    }
}

/// RSS of a server child before and after `n` idle mTLS connections (one request each).
async fn idle_memory(target: &Target, pid: u32, n: usize) -> (u64, u64) {
    // Warm the server up (runtime, first handshake), then sample.
    for _ in 0..4 {
        let mut sender = target.connect().await;
        sender.send(target.request()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    let mut held = Vec::with_capacity(n);
    let mut pending = Vec::new();
    for i in 0..n {
        let target = target.clone();
        pending.push(tokio::spawn(async move {
            let mut sender = target.connect().await;
            sender.send(target.request()).await.unwrap();
            sender
        }));
        if pending.len() == 32 || i + 1 == n {
            for task in pending.drain(..) {
                held.push(task.await.unwrap());
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    drop(held);
    (before, after)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Row {
    round: usize,
    scenario: &'static str,
    proto: Proto,
    result: RunResult,
}

impl Row {
    fn rate(&self) -> f64 {
        self.result.requests as f64 / self.result.seconds
    }

    fn cpu_per_request(&self) -> f64 {
        us(self.result.server_cpu) / self.result.requests.max(1) as f64
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        let mode = args.get(1).expect("--serve MODE");
        let dir = args.get(3).expect("--dir DIR");
        serve(
            mode,
            Path::new(dir),
            !args.iter().any(|a| a == "--no-idle-timeout"),
        );
        return;
    }
    let o = options(&args);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    if o.pin {
        // This process (all its threads, before the runtime starts) on CPU 0.
        let status = Command::new("taskset")
            .args(["-a", "-cp", "0", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "--pin needs taskset (util-linux)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let material = Material::create(dir.path());
    let authorization = HeaderValue::from_str(&format!(
        "Bearer {}",
        String::from_utf8(material.read("token")).unwrap()
    ))
    .unwrap();
    let nginx = Nginx::available();
    let proxy = Proxy::binary();
    println!(
        "loadgen: {} connections, {:.1} s warm-up + {:.1} s measured per run, {} CPUs{}; \
         nginx {}; proxy {}",
        o.connections,
        o.warmup,
        o.seconds,
        cpus,
        if o.pin {
            " (client on CPU 0, servers on CPU 1)"
        } else {
            ""
        },
        if nginx {
            "found"
        } else {
            "not found (sidecar rows skipped)"
        },
        proxy.as_ref().map_or_else(
            || "not built (cargo build --release -p secure-channel-cli; rows skipped)".to_owned(),
            |path| path.display().to_string()
        )
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut rows: Vec<Row> = Vec::new();
    for round in 1..=o.rounds {
        for &proto in &o.protocols {
            run_round(
                &runtime,
                &o,
                &material,
                &authorization,
                Sidecars {
                    nginx,
                    proxy: proxy.as_deref(),
                },
                round,
                proto,
                &mut rows,
            );
        }
    }
    report(&o, &rows);

    if o.idle > 0 {
        idle_report(&runtime, &o, &material, &authorization);
    }
}

/// Which sidecars can run here.
#[derive(Clone, Copy)]
struct Sidecars<'a> {
    nginx: bool,
    proxy: Option<&'a Path>,
}

/// One run of every selected scenario for `proto`, appended to `rows`.
#[allow(clippy::too_many_arguments)]
fn run_round(
    runtime: &tokio::runtime::Runtime,
    o: &Options,
    material: &Material,
    authorization: &HeaderValue,
    sidecars: Sidecars<'_>,
    round: usize,
    proto: Proto,
    rows: &mut Vec<Row>,
) {
    let mut scenarios: Vec<&'static str> =
        ["plain", "rustls", "channel", "secure", "nginx", "proxy"]
            .into_iter()
            .filter(|&scenario| {
                o.scenarios.iter().any(|s| s == scenario)
                    && (scenario != "nginx" || sidecars.nginx)
                    && (scenario != "proxy" || sidecars.proxy.is_some())
            })
            .collect();
    // Every other round runs the scenarios in reverse order, so that a host that slows down
    // (or speeds up) over a round does not always favour the same scenario.
    if round.is_multiple_of(2) {
        scenarios.reverse();
    }
    // Side by side: one batch of every scenario; otherwise one scenario after the other.
    let batches: Vec<Vec<&'static str>> = if o.side_by_side {
        vec![scenarios]
    } else {
        scenarios.into_iter().map(|s| vec![s]).collect()
    };
    for batch in batches {
        let running: Vec<Running> = batch
            .iter()
            .map(|&scenario| {
                Running::start(scenario, material, authorization, proto, o, sidecars.proxy)
            })
            .collect();
        // The batch's drives start together and measure the same window.
        let drives: Vec<_> = running
            .iter()
            .map(|r| {
                let (target, pids, o) = (r.target.clone(), r.pids.clone(), o.clone());
                runtime.spawn(async move { drive(&target, &o, &pids).await })
            })
            .collect();
        for (&scenario, drive) in batch.iter().zip(drives) {
            let result = runtime.block_on(drive).unwrap();
            println!(
                "  round {round} {scenario:<7} {:<9}{:>10.0} req/s  ({} errors)",
                proto.name(),
                result.requests as f64 / result.seconds,
                result.errors
            );
            rows.push(Row {
                round,
                scenario,
                proto,
                result,
            });
        }
    }
}

/// A scenario's server (and sidecar), with the client's target and the processes to account.
struct Running {
    target: Target,
    pids: Vec<u32>,
    // Dropped after the sidecar: nginx (or the proxy) goes first, then its upstream.
    _sidecar: Option<Sidecar>,
    _server: ServerProcess,
}

impl Running {
    fn start(
        scenario: &str,
        material: &Material,
        authorization: &HeaderValue,
        proto: Proto,
        o: &Options,
        proxy: Option<&Path>,
    ) -> Self {
        let dir = material.dir.as_path();
        let server_mode = if matches!(scenario, "nginx" | "proxy") {
            "plain"
        } else {
            scenario
        };
        let server = ServerProcess::start(server_mode, dir, o);
        let sidecar = match (scenario, proxy) {
            ("nginx", _) => Some(Sidecar::Nginx(Nginx::start(dir, server.port, o.pin))),
            ("proxy", Some(binary)) => Some(Sidecar::Proxy(Proxy::start(
                binary,
                dir,
                server.port,
                o.pin,
            ))),
            _ => None,
        };
        let mut pids = vec![server.child.id()];
        let port = match &sidecar {
            Some(sidecar) => {
                pids.extend(with_children(sidecar.pid()));
                sidecar.port()
            }
            None => server.port,
        };
        let target = Target {
            port,
            tls: (scenario != "plain").then(|| material.client_config(proto)),
            proto,
            authorization: authorization.clone(),
        };
        Self {
            target,
            pids,
            _sidecar: sidecar,
            _server: server,
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The results table (every run, its ratios against `rustls` of the same round) and the
/// budget lines (medians over the rounds of those within-round ratios).
fn report(o: &Options, rows: &[Row]) {
    println!();
    println!(
        "| round | scenario | protocol | req/s | p50 µs | p99 µs | server CPU µs/req | req/s vs rustls | CPU/req vs rustls |"
    );
    println!("|---:|---|---|---:|---:|---:|---:|---:|---:|");
    let find = |scenario: &str, proto: Proto, round: usize| {
        rows.iter()
            .find(|r| r.scenario == scenario && r.proto == proto && r.round == round)
    };
    for row in rows {
        let base = find("rustls", row.proto, row.round);
        let ratio =
            |f: fn(&Row) -> f64| base.map_or("-".to_owned(), |b| format!("{:.3}", f(row) / f(b)));
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {} | {} |",
            row.round,
            row.scenario,
            row.proto.name(),
            row.rate(),
            us(row.result.p50),
            us(row.result.p99),
            row.cpu_per_request(),
            ratio(Row::rate),
            ratio(Row::cpu_per_request),
        );
    }
    println!();
    let rounds = o.rounds;
    // One within-round ratio per round where both scenarios ran.
    let ratios = |a: &str, b: &str, proto: Proto, f: &dyn Fn(&Row, &Row) -> f64| -> Vec<f64> {
        (1..=rounds)
            .filter_map(|round| Some(f(find(a, proto, round)?, find(b, proto, round)?)))
            .collect()
    };
    let summary = |values: Vec<f64>| -> String {
        let list: Vec<String> = values.iter().map(|v| format!("{v:.3}")).collect();
        format!("{:.3} [{}]", median(values), list.join(", "))
    };
    for &proto in &o.protocols {
        let name = proto.name();
        for (scenario, label) in [
            (
                "secure",
                "budget {name}: secure/rustls throughput {rate} (>= 0.95), CPU/req {cpu}",
            ),
            (
                "channel",
                "{name}: channel (transport only)/rustls throughput {rate}, CPU/req {cpu}",
            ),
        ] {
            let rate = ratios(scenario, "rustls", proto, &|s, b| s.rate() / b.rate());
            if rate.is_empty() {
                continue;
            }
            let cpu = ratios(scenario, "rustls", proto, &|s, b| {
                s.cpu_per_request() / b.cpu_per_request()
            });
            println!(
                "{}",
                label
                    .replace("{name}", name)
                    .replace("{rate}", &summary(rate))
                    .replace("{cpu}", &summary(cpu))
            );
        }
        let rate = ratios("secure", "nginx", proto, &|s, n| s.rate() / n.rate());
        if !rate.is_empty() {
            let p99 = ratios("secure", "nginx", proto, &|s, n| {
                us(s.result.p99) / us(n.result.p99)
            });
            let cpu = ratios("secure", "nginx", proto, &|s, n| {
                s.cpu_per_request() / n.cpu_per_request()
            });
            println!(
                "budget {name}: secure/nginx throughput {} (>= 1.5), p99 secure/nginx {} (< 1), \
                 CPU/req {}",
                summary(rate),
                summary(p99),
                summary(cpu)
            );
        }
        let rate = ratios("proxy", "nginx", proto, &|p, n| p.rate() / n.rate());
        if !rate.is_empty() {
            let p99 = ratios("proxy", "nginx", proto, &|p, n| {
                us(p.result.p99) / us(n.result.p99)
            });
            let cpu = ratios("proxy", "nginx", proto, &|p, n| {
                p.cpu_per_request() / n.cpu_per_request()
            });
            println!(
                "goal {name} (issue 17): proxy/nginx throughput {} (>= 1.3), p99 proxy/nginx {} \
                 (< 1), CPU/req {}",
                summary(rate),
                summary(p99),
                summary(cpu)
            );
        }
    }
    if rounds > 1 {
        println!("(median of {rounds} rounds [each round's ratio])");
    }
}

/// RSS per idle connection, bare rustls against the channel.
fn idle_report(
    runtime: &tokio::runtime::Runtime,
    o: &Options,
    material: &Material,
    authorization: &HeaderValue,
) {
    println!();
    println!("memory: {} idle mTLS HTTP/1.1 connections", o.idle);
    println!("| server | RSS before KiB | RSS after KiB | per connection KiB |");
    println!("|---|---:|---:|---:|");
    let mut per = Vec::new();
    for scenario in ["rustls", "secure"] {
        let server = ServerProcess::start(scenario, &material.dir, o);
        let target = Target {
            port: server.port,
            tls: Some(material.client_config(Proto::Http1)),
            proto: Proto::Http1,
            authorization: authorization.clone(),
        };
        let (before, after) = runtime.block_on(idle_memory(&target, server.child.id(), o.idle));
        let each = after.saturating_sub(before) as f64 / o.idle as f64;
        println!("| {scenario} | {before} | {after} | {each:.2} |");
        per.push(each);
    }
    if let [bare, ours] = per[..] {
        println!(
            "budget memory: secure - rustls = {:.2} KiB per idle connection (<= 2)",
            ours - bare
        );
    }
}
