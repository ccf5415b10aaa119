//! Shared helpers of the CLI's tests: the built binary, bounded waits, files.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

/// The binary under test, as cargo built it for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_secure-channel");

/// Every await in these tests is bounded.
pub const LIMIT: Duration = Duration::from_secs(30);

/// `future`, failing the test after [`LIMIT`].
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("timed out")
}

/// Runs the binary with `args` to completion.
pub async fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(BIN);
    command.args(args).kill_on_drop(true);
    within(command.output()).await.expect("the binary runs")
}

/// The exit code, stdout and stderr of `output`, for assertions.
pub fn parts(output: &Output) -> (i32, String, String) {
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A temporary directory with helpers to write files into it.
pub struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` to `name` by write-then-rename (as rotating tools do).
    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        let tmp = self.path(&format!("{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

// ---------------------------------------------------------------------------------------------
// Proxies: PKI files, the binary running as a proxy, a plaintext backend, callers.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secure_channel::testkit::{DevCa, IssuedSvid};
use secure_channel::{MemorySource, SecureChannel, SecureConnector};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// The proxy's SPIFFE ID in these tests.
pub const PROXY_ID: &str = "spiffe://example.org/proxy";
/// A caller the tests allow.
pub const WEB_ID: &str = "spiffe://example.org/web";
/// A caller the tests do not allow (unless a policy says otherwise).
pub const OTHER_ID: &str = "spiffe://example.org/other";

/// A development CA and SVID files in a temporary directory.
pub struct Pki {
    pub ca: DevCa,
    pub dir: Dir,
}

impl Pki {
    pub fn new() -> Self {
        let ca = DevCa::new("example.org").unwrap();
        let dir = Dir::new();
        dir.write("ca.pem", ca.bundle_pem());
        Self { ca, dir }
    }

    /// Mints an SVID for `id` (with the DNS name `localhost`, for curl) and writes
    /// `NAME.pem` / `NAME.key`.
    pub fn svid(&self, name: &str, id: &str) -> IssuedSvid {
        let svid = self.ca.svid(id).dns_name("localhost").issue().unwrap();
        self.write_svid(name, &svid);
        svid
    }

    pub fn write_svid(&self, name: &str, svid: &IssuedSvid) {
        self.dir.write(&format!("{name}.key"), svid.key_pem());
        self.dir.write(&format!("{name}.pem"), svid.chain_pem());
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path(name).to_str().unwrap().to_owned()
    }

    /// `--cert --key --bundle` of the SVID files `name`.
    pub fn cred_args(&self, name: &str) -> Vec<String> {
        vec![
            "--cert".into(),
            self.path(&format!("{name}.pem")),
            "--key".into(),
            self.path(&format!("{name}.key")),
            "--bundle".into(),
            self.path("ca.pem"),
        ]
    }

    /// A client channel of this CA for `id`, expecting the server `server`.
    pub fn client(&self, id: &str, server: &str) -> (MemorySource, SecureChannel) {
        let source = MemorySource::new(self.ca.credentials(id).unwrap());
        let channel = SecureChannel::builder(&source)
            .expect_server(server)
            .build()
            .unwrap();
        (source, channel)
    }
}

/// The binary running as a proxy, killed when dropped.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin listener's address, when `--admin` was given.
    pub admin: Option<SocketAddr>,
    /// Reads what the proxy prints on stdout after its ready line, until it exits.
    later_stdout: Option<tokio::task::JoinHandle<Vec<String>>>,
}

impl Running {
    /// Starts the binary with `args` and waits (bounded) for its `listening on ADDR` line.
    pub async fn start<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut admin = None;
        let addr = loop {
            let line = within(lines.next_line())
                .await
                .unwrap()
                .expect("the proxy exited before listening");
            if let Some(addr) = line.strip_prefix("admin listening on ") {
                admin = Some(addr.parse().unwrap());
            } else if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.parse().unwrap();
            } else {
                panic!("not a ready line: {line}");
            }
        };
        // Keep reading stdout so the proxy never blocks on a full pipe.
        let later_stdout = Some(tokio::spawn(async move {
            let mut later = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                later.push(line);
            }
            later
        }));
        Self {
            child,
            addr,
            admin,
            later_stdout,
        }
    }

    /// GET `path` on the admin listener (curl, plaintext): the status code and the body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.admin.expect("started with --admin"));
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", &url])
            .kill_on_drop(true);
        let (code, out, err) = parts(&within(command.output()).await.unwrap());
        assert_eq!(code, 0, "{url}: {err}");
        let (body, status) = out.rsplit_once('\n').unwrap();
        (status.parse().unwrap(), body.to_owned())
    }

    /// What the proxy printed on stdout after its ready line (waits for it to exit).
    pub async fn stdout_after_ready(&mut self) -> Vec<String> {
        let task = self.later_stdout.take().expect("read once");
        within(task).await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// Sends SIGTERM.
    pub async fn terminate(&self) {
        let pid = self.child.id().unwrap().to_string();
        let status = within(Command::new("kill").args(["-TERM", &pid]).status())
            .await
            .unwrap();
        assert!(status.success());
    }
}

/// A plaintext backend: answers every request with what it received (JSON: method, path,
/// headers); `/slow` first reports its arrival on `arrivals` and waits for `release`.
pub struct BackendServer {
    pub addr: SocketAddr,
    pub arrivals: tokio::sync::mpsc::UnboundedReceiver<()>,
    pub release: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn backend_router() -> (
    Router,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    Arc<tokio::sync::Notify>,
) {
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let waiter = release.clone();
    let router = Router::new()
        .route(
            "/slow",
            axum::routing::get(move || {
                let (arrived, waiter) = (arrived.clone(), waiter.clone());
                async move {
                    let _ = arrived.send(());
                    waiter.notified().await;
                    "slow done"
                }
            }),
        )
        .fallback(|request: Request| async move { describe(&request) });
    (router, arrivals, release)
}

/// What the backend saw, as JSON.
fn describe(request: &Request) -> String {
    let mut headers = serde_json::Map::new();
    for name in request.headers().keys() {
        let values: Vec<_> = request
            .headers()
            .get_all(name)
            .iter()
            .map(|v| serde_json::Value::from(v.to_str().unwrap_or("<binary>")))
            .collect();
        headers.insert(name.as_str().to_owned(), values.into());
    }
    serde_json::json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query(),
        "headers": headers,
    })
    .to_string()
}

impl BackendServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (router, arrivals, release) = backend_router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            arrivals,
            release,
            task,
        }
    }

    /// The same backend on a unix socket at `path`.
    pub async fn start_unix(path: &Path) -> Self {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let (router, arrivals, release) = backend_router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            arrivals,
            release,
            task,
        }
    }
}

/// An HTTP client over the crate's connector.
pub type LibClient = Client<SecureConnector, Full<Bytes>>;

pub fn lib_client(channel: &SecureChannel) -> LibClient {
    Client::builder(TokioExecutor::new()).build(channel.connector())
}

/// GET `url` with `headers`; the status and the body.
pub async fn get(
    client: &LibClient,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), hyper_util::client::legacy::Error> {
    let mut request = http::Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = within(client.request(request.body(Full::new(Bytes::new())).unwrap())).await?;
    let status = response.status().as_u16();
    let body = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// curl as a caller presenting the SVID files `name`; the exit code and stdout (the body
/// followed by a last line with the status code).
pub async fn curl(pki: &Pki, name: &str, url: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "-sS".to_owned(),
        "--max-time".into(),
        "20".into(),
        "--cacert".into(),
        pki.path("ca.pem"),
        "--cert".into(),
        pki.path(&format!("{name}.pem")),
        "--key".into(),
        pki.path(&format!("{name}.key")),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push(url.to_owned());
    let mut command = Command::new("curl");
    command.args(&args).kill_on_drop(true);
    parts(&within(command.output()).await.unwrap())
}
