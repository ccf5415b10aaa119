//! The examples as users and outside test suites run them: the quickstart's output, the
//! echo_server and echo_client binaries, curl over HTTP/1.1 and HTTP/2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use secure_channel::testkit::{DevCa, IssuedSvid};
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SERVER_ID: &str = "spiffe://example.org/echo";
const CLIENT_ID: &str = "spiffe://example.org/client";

/// The example binaries cargo built next to this test.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        dir.exists(),
        "{} not built (cargo test builds examples)",
        dir.display()
    );
    dir
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn svid(&self, name: &str, svid: &IssuedSvid) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        replace(&cert, &svid.chain_pem());
        replace(&key, &svid.key_pem());
        (cert, key)
    }
}

/// Write-then-rename, as rotating tools do.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct EchoServer {
    child: Child,
    addr: String,
}

async fn echo_server(args: &[&std::ffi::OsStr]) -> EchoServer {
    let mut child = Command::new(example("echo_server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = within(lines.next_line())
        .await
        .unwrap()
        .expect("echo_server exited before listening");
    let addr = line
        .strip_prefix("listening on ")
        .expect("the ready line")
        .to_owned();
    EchoServer { child, addr }
}

async fn echo_client(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let mut cmd = Command::new(example("echo_client"));
    cmd.args(args).kill_on_drop(true);
    within(cmd.output()).await.unwrap()
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

struct Setup {
    ca: DevCa,
    files: Files,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    bundle: PathBuf,
}

fn setup() -> Setup {
    let ca = DevCa::new("example.org").unwrap();
    let files = Files::new();
    // curl checks host names, so the server SVID also carries `localhost` (ignored by the crate).
    let (server_cert, server_key) = files.svid(
        "server",
        &ca.svid(SERVER_ID).dns_name("localhost").issue().unwrap(),
    );
    let (client_cert, client_key) = files.svid("client", &ca.svid(CLIENT_ID).issue().unwrap());
    let bundle = files.path("bundle.pem");
    replace(&bundle, &ca.bundle_pem());
    Setup {
        ca,
        files,
        server_cert,
        server_key,
        client_cert,
        client_key,
        bundle,
    }
}

async fn start(s: &Setup) -> EchoServer {
    echo_server(&server_args(s, &[os("--allow"), os(CLIENT_ID)])).await
}

async fn curl(s: &Setup, addr: &str, http: &str) -> std::process::Output {
    let port = addr.rsplit(':').next().unwrap();
    let mut cmd = Command::new("curl");
    cmd.args([
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        http,
        "--write-out",
        "\n%{http_version}",
    ])
    .arg("--resolve")
    .arg(format!("localhost:{port}:127.0.0.1"))
    .arg("--cacert")
    .arg(&s.bundle)
    .arg("--cert")
    .arg(&s.client_cert)
    .arg("--key")
    .arg(&s.client_key)
    .arg(format!("https://localhost:{port}/whoami"))
    .kill_on_drop(true);
    within(cmd.output()).await.unwrap()
}

#[tokio::test]
async fn curl_http1_and_http2_against_echo_server() {
    let s = setup();
    let server = start(&s).await;
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let output = curl(&s, &server.addr, flag).await;
        assert!(
            output.status.success(),
            "curl {flag}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let (body, used) = stdout.rsplit_once('\n').unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "spiffe_id": CLIENT_ID, "token_subject": null })
        );
        assert_eq!(used, version, "curl {flag} used HTTP/{used}");
    }
    drop(server.child);
}

#[tokio::test]
async fn echo_client_against_echo_server_and_wrong_identity() {
    let s = setup();
    let server = start(&s).await;
    let url = format!("https://{}/whoami", server.addr);
    let common = |expect: &'static str| {
        vec![
            os("--url").to_owned(),
            os(&url).to_owned(),
            os("--cert").to_owned(),
            s.client_cert.clone().into_os_string(),
            os("--key").to_owned(),
            s.client_key.clone().into_os_string(),
            os("--bundle").to_owned(),
            s.bundle.clone().into_os_string(),
            os("--expect-server").to_owned(),
            os(expect).to_owned(),
        ]
    };
    for extra in [None, Some("--http2")] {
        let mut args = common(SERVER_ID);
        args.extend(extra.map(|e| os(e).to_owned()));
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let output = echo_client(&args).await;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(json["spiffe_id"], CLIENT_ID);
    }

    let args = common("spiffe://example.org/payments");
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let output = echo_client(&args).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(SERVER_ID) && stderr.contains("spiffe://example.org/payments"),
        "{stderr}"
    );
    drop(server.child);
}

/// The PEM leaf certificate the server at `port` presents, as openssl s_client prints it.
async fn served_leaf(s: &Setup, port: &str) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(&s.client_cert)
        .arg("-key")
        .arg(&s.client_key)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = within(cmd.output()).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("s_client printed the certificate");
    let end = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    text[start..end].to_owned()
}

#[tokio::test]
async fn echo_server_follows_replaced_files_without_restart() {
    let s = setup();
    let server = start(&s).await;
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let first = served_leaf(&s, &port).await;
    let next = s.ca.svid(SERVER_ID).dns_name("localhost").issue().unwrap();
    s.files.svid("server", &next);
    // The server polls every second; allow it 5 s, checking without fixed sleeps per attempt.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let served = served_leaf(&s, &port).await;
        if served != first {
            assert_eq!(served.trim(), next.chain_pem().trim());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new SVID was not served within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(server.child);
}

async fn expect_config_error(args: &[&std::ffi::OsStr], needles: &[&str]) {
    let mut cmd = Command::new(example("echo_server"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .kill_on_drop(true);
    let output = within(cmd.output()).await.unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("listening on"),
        "must fail before listening"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{stderr:?} should mention {needle:?}"
        );
    }
}

#[tokio::test]
async fn echo_server_refuses_bad_configuration_naming_the_file() {
    let s = setup();
    let missing = s.files.path("missing.pem");
    expect_config_error(
        &[
            os("--cert"),
            os(&missing),
            os("--key"),
            os(&s.server_key),
            os("--bundle"),
            os(&s.bundle),
            os("--allow"),
            os(CLIENT_ID),
        ],
        &[&missing.display().to_string(), "cannot be read"],
    )
    .await;
    // A key of another certificate.
    expect_config_error(
        &[
            os("--cert"),
            os(&s.server_cert),
            os("--key"),
            os(&s.client_key),
            os("--bundle"),
            os(&s.bundle),
            os("--allow"),
            os(CLIENT_ID),
        ],
        &[&s.client_key.display().to_string(), "does not match"],
    )
    .await;
    // A certificate that is not an SVID.
    let plain =
        s.ca.svid(SERVER_ID)
            .without_uri()
            .dns_name("localhost")
            .issue()
            .unwrap();
    let (cert, key) = s.files.svid("plain", &plain);
    expect_config_error(
        &[
            os("--cert"),
            os(&cert),
            os("--key"),
            os(&key),
            os("--bundle"),
            os(&s.bundle),
            os("--allow"),
            os(CLIENT_ID),
        ],
        &[&cert.display().to_string(), "not an X.509-SVID"],
    )
    .await;
    // No --allow: nobody would be allowed.
    expect_config_error(
        &[
            os("--cert"),
            os(&s.server_cert),
            os("--key"),
            os(&s.server_key),
            os("--bundle"),
            os(&s.bundle),
        ],
        &["--allow"],
    )
    .await;
    // An unsafe matcher.
    expect_config_error(
        &[
            os("--cert"),
            os(&s.server_cert),
            os("--key"),
            os(&s.server_key),
            os("--bundle"),
            os(&s.bundle),
            os("--allow"),
            os("spiffe://example.org/cli*"),
        ],
        &["spiffe://example.org/cli*"],
    )
    .await;
}

fn client_args(s: &Setup, url: &str, extra: &[&std::ffi::OsStr]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--url".into(),
        url.into(),
        "--cert".into(),
        s.client_cert.clone().into(),
        "--key".into(),
        s.client_key.clone().into(),
        "--bundle".into(),
        s.bundle.clone().into(),
        "--expect-server".into(),
        SERVER_ID.into(),
    ];
    args.extend(extra.iter().map(|a| a.to_os_string()));
    args
}

async fn run_client(args: &[std::ffi::OsString]) -> std::process::Output {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    echo_client(&args).await
}

#[tokio::test]
async fn echo_server_policy_file_is_enforced_and_reloaded() {
    let s = setup();
    // A second workload, allowed everywhere by --allow.
    let ops = s.ca.svid("spiffe://example.org/ops").issue().unwrap();
    let (ops_cert, ops_key) = s.files.svid("ops", &ops);
    let policy = s.files.path("policy.toml");
    let deny_whoami = format!(
        "[[rule]]\nname = \"client-health\"\neffect = \"allow\"\nprincipals = [\"{CLIENT_ID}\"]\nroutes = [{{ path = \"/health\" }}]\n"
    );
    replace(&policy, &deny_whoami);
    let server = echo_server(&[
        os("--cert"),
        os(&s.server_cert),
        os("--key"),
        os(&s.server_key),
        os("--bundle"),
        os(&s.bundle),
        os("--allow"),
        os("spiffe://example.org/ops"),
        os("--policy"),
        os(&policy),
    ])
    .await;
    let url = format!("https://{}/whoami", server.addr);

    let output = run_client(&client_args(&s, &url, &[])).await;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut ops_args = client_args(&s, &url, &[]);
    ops_args[3] = ops_cert.into();
    ops_args[5] = ops_key.into();
    let output = run_client(&ops_args).await;
    assert!(
        output.status.success(),
        "--allow callers pass on every route: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The file changes: the client is now allowed on /whoami, without a restart.
    replace(
        &policy,
        &format!(
            "{deny_whoami}\n[[rule]]\nname = \"client-whoami\"\neffect = \"allow\"\nprincipals = [\"{CLIENT_ID}\"]\nroutes = [{{ methods = [\"GET\"], path = \"/whoami\" }}]\n"
        ),
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let output = run_client(&client_args(&s, &url, &[])).await;
        if output.status.success() {
            let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            assert_eq!(json["spiffe_id"], CLIENT_ID);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the policy change was not applied within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(server.child);

    // A broken policy file is refused at start, naming the file and the line.
    replace(
        &policy,
        "[[rule]]\nname = \"x\"\neffect = \"allow\"\nprincipals = [\"spiffe://example.org/bill*\"]\nroutes = [{ path = \"/\" }]\n",
    );
    expect_config_error(
        &[
            os("--cert"),
            os(&s.server_cert),
            os("--key"),
            os(&s.server_key),
            os("--bundle"),
            os(&s.bundle),
            os("--policy"),
            os(&policy),
        ],
        &[
            &format!("{}:4", policy.display()),
            "principals",
            "spiffe://example.org/bill*",
        ],
    )
    .await;
}

#[tokio::test]
async fn echo_server_requires_bound_tokens() {
    use secure_channel::jwt::Algorithm;
    use secure_channel::testkit::TokenIssuer;
    let s = setup();
    let issuer = TokenIssuer::new("https://issuer.test", "k1", Algorithm::ES256).unwrap();
    let jwks = s.files.path("jwks.json");
    replace(&jwks, &issuer.jwks());
    let server = echo_server(&[
        os("--cert"),
        os(&s.server_cert),
        os("--key"),
        os(&s.server_key),
        os("--bundle"),
        os(&s.bundle),
        os("--allow"),
        os(CLIENT_ID),
        os("--jwks"),
        os(&jwks),
        os("--audience"),
        os("echo"),
        os("--issuer"),
        os("https://issuer.test"),
        os("--require-bound-token"),
    ])
    .await;
    let url = format!("https://{}/whoami", server.addr);
    let client_leaf = {
        let pem = std::fs::read(&s.client_cert).unwrap();
        rustls_pki_types::CertificateDer::from(pem::parse(pem).unwrap().into_contents())
    };
    let token_file = |name: &str, token: String| {
        let path = s.files.path(name);
        // A final newline, as editors and `echo` write it: trimmed by echo_client.
        replace(&path, &format!("{token}\n"));
        path
    };

    let bound = issuer
        .token()
        .audience("echo")
        .subject("alice")
        .bound_to(&client_leaf)
        .sign()
        .unwrap();
    let path = token_file("bound.jwt", bound);
    let output = run_client(&client_args(&s, &url, &[os("--token"), os(&path)])).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "spiffe_id": CLIENT_ID, "token_subject": "alice" })
    );

    // No token, an unbound token, a token bound to another certificate: 401.
    let other = s.ca.svid(CLIENT_ID).issue().unwrap();
    for token in [
        None,
        Some(
            issuer
                .token()
                .audience("echo")
                .subject("alice")
                .sign()
                .unwrap(),
        ),
        Some(
            issuer
                .token()
                .audience("echo")
                .subject("alice")
                .bound_to(other.leaf())
                .sign()
                .unwrap(),
        ),
        Some(
            issuer
                .token()
                .audience("elsewhere")
                .subject("alice")
                .bound_to(&client_leaf)
                .sign()
                .unwrap(),
        ),
    ] {
        let extra_path;
        let extra: Vec<&std::ffi::OsStr> = match token {
            Some(token) => {
                extra_path = token_file("bad.jwt", token);
                vec![os("--token"), os(&extra_path)]
            }
            None => vec![],
        };
        let output = run_client(&client_args(&s, &url, &extra)).await;
        assert!(!output.status.success());
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("401"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    drop(server.child);
}

#[tokio::test]
async fn quickstart_serves_the_allowed_client_and_tells_the_refused_one_why() {
    let mut cmd = Command::new(example("quickstart"));
    cmd.kill_on_drop(true);
    let output = within(cmd.output()).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("server  spiffe://example.org/api serving https://127.0.0.1:"),
        "{stdout}"
    );
    assert_eq!(
        lines[1],
        "client  spiffe://example.org/web -> spiffe://example.org/api: 200 OK hello, spiffe://example.org/web",
    );
    // The refused client's one line: this crate's refusal, naming its own ID and the alert, and
    // what to check; not one of hyper's connection errors.
    let refused = lines[2];
    assert!(
        refused.starts_with(
            "client  spiffe://example.org/batch was refused: the server refused this workload's \
             SVID spiffe://example.org/batch with TLS alert access_denied: "
        ),
        "{refused}"
    );
    assert!(
        refused.contains("check that the server's allow-list"),
        "{refused}"
    );
    for hyper_text in ["client error", "broken pipe", "channel closed", "not ready"] {
        assert!(!refused.contains(hyper_text), "{refused}");
    }
}

/// The echo server's credential flags, then `extra`.
fn server_args<'a>(s: &'a Setup, extra: &[&'a std::ffi::OsStr]) -> Vec<&'a std::ffi::OsStr> {
    let mut args = vec![
        os("--cert"),
        os(&s.server_cert),
        os("--key"),
        os(&s.server_key),
        os("--bundle"),
        os(&s.bundle),
    ];
    args.extend_from_slice(extra);
    args
}

/// An HTTP/1.1 connection to the echo server, made in-process with the crate's client, kept
/// open between requests.
struct KeptConnection {
    _channel: secure_channel::SecureChannel,
    send: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    closed: tokio::task::JoinHandle<()>,
}

impl KeptConnection {
    async fn open(s: &Setup, svid: &IssuedSvid, addr: &str) -> Self {
        Self::try_open(s, svid, addr).await.unwrap()
    }

    async fn try_open(
        s: &Setup,
        svid: &IssuedSvid,
        addr: &str,
    ) -> Result<Self, secure_channel::ConnectionError> {
        let credentials = secure_channel::Credentials::new(
            svid.to_svid().unwrap(),
            secure_channel::TrustBundles::new().with(s.ca.bundle().unwrap()),
        );
        let source = secure_channel::MemorySource::new(credentials);
        let channel = secure_channel::SecureChannel::builder(&source)
            .expect_server(SERVER_ID)
            .build()
            .unwrap();
        let stream =
            within(channel.connect_tcp(addr.parse::<std::net::SocketAddr>().unwrap())).await?;
        let (send, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        let closed = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            _channel: channel,
            send,
            closed,
        })
    }

    /// `GET /whoami` on this connection: the caller's ID the server saw.
    async fn whoami(&mut self) -> String {
        let request = http::Request::get("/whoami")
            .header(http::header::HOST, "echo")
            .body(http_body_util::Empty::new())
            .unwrap();
        let response = within(self.send.send_request(request)).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        let body = within(http_body_util::BodyExt::collect(response.into_body()))
            .await
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        json["spiffe_id"].as_str().unwrap().to_owned()
    }

    /// Waits (bounded) until the server closed the connection.
    async fn closed_by_server(self) {
        within(self.closed).await.unwrap();
    }
}

/// The CRL, deny-list and maximum-age flags: each cuts off the open connection it concerns,
/// the file ones when the file changes, and leaves the other connection working.
#[tokio::test]
async fn echo_server_cuts_off_open_connections_on_crl_deny_list_and_age() {
    let s = setup();
    let web = s.ca.svid("spiffe://example.org/web").issue().unwrap();
    let client = s.ca.svid(CLIENT_ID).issue().unwrap();
    let (crl, deny) = (s.files.path("ca.crl"), s.files.path("denied.txt"));
    replace(&crl, &s.ca.crl(&[]).number(1).pem().unwrap());
    replace(&deny, "# nobody yet\n");
    let server = echo_server(&server_args(
        &s,
        &[
            os("--allow"),
            os("spiffe://example.org"),
            os("--crl"),
            os(&crl),
            os("--deny-list"),
            os(&deny),
        ],
    ))
    .await;

    let mut kept = KeptConnection::open(&s, &client, &server.addr).await;
    let mut revoked = KeptConnection::open(&s, &web, &server.addr).await;
    assert_eq!(kept.whoami().await, CLIENT_ID);
    assert_eq!(revoked.whoami().await, "spiffe://example.org/web");

    // The CRL file now revokes web's certificate: its open connection is closed, the other
    // stays, and web cannot come back.
    replace(&crl, &s.ca.crl(&[web.serial()]).number(2).pem().unwrap());
    revoked.closed_by_server().await;
    assert_eq!(kept.whoami().await, CLIENT_ID);
    // (TLS 1.3: the client's handshake ends before the server judged its certificate, so the
    // refusal shows on the first request.)
    match KeptConnection::try_open(&s, &web, &server.addr).await {
        Err(_) => {}
        Ok(mut again) => {
            let request = http::Request::get("/whoami")
                .header(http::header::HOST, "echo")
                .body(http_body_util::Empty::new())
                .unwrap();
            assert!(
                within(again.send.send_request(request)).await.is_err(),
                "a revoked certificate is refused"
            );
        }
    }

    // The deny-list file now names the client's certificate by its SHA-256: cut off too.
    let sha256: String = <sha2::Sha256 as sha2::Digest>::digest(client.leaf())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    replace(&deny, &format!("# leaked\nsha256:{sha256}\n"));
    kept.closed_by_server().await;
    drop(server.child);

    // --max-connection-age: a connection is closed that long after its handshake.
    let server = echo_server(&server_args(
        &s,
        &[
            os("--allow"),
            os(CLIENT_ID),
            os("--max-connection-age"),
            os("1"),
        ],
    ))
    .await;
    let mut aged = KeptConnection::open(&s, &client, &server.addr).await;
    assert_eq!(aged.whoami().await, CLIENT_ID);
    aged.closed_by_server().await;
    let mut fresh = KeptConnection::open(&s, &client, &server.addr).await;
    assert_eq!(
        fresh.whoami().await,
        CLIENT_ID,
        "new connections are served"
    );
}

#[tokio::test]
async fn echo_server_refuses_bad_revocation_flags_naming_them() {
    let s = setup();
    let base = server_args(&s, &[os("--allow"), os(CLIENT_ID)]);
    let missing = s.files.path("missing.crl");
    let mut args = base.clone();
    args.extend([os("--crl"), os(&missing)]);
    expect_config_error(&args, &["--crl", &missing.display().to_string()]).await;

    let not_crl = s.files.path("empty.crl");
    replace(&not_crl, "");
    let mut args = base.clone();
    args.extend([os("--crl"), os(&not_crl)]);
    expect_config_error(
        &args,
        &[&not_crl.display().to_string(), "no revocation list"],
    )
    .await;

    let deny = s.files.path("denied.txt");
    replace(&deny, "spiffe://example.org/ok\nnot an entry\n");
    let mut args = base.clone();
    args.extend([os("--deny-list"), os(&deny)]);
    expect_config_error(&args, &[&deny.display().to_string(), "line 2"]).await;

    for bad in ["0", "soon"] {
        let mut args = base.clone();
        args.extend([os("--max-connection-age"), os(bad)]);
        expect_config_error(&args, &[&format!("--max-connection-age {bad}")]).await;
    }
}
