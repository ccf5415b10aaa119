//! Foreign peers: curl and `openssl s_client` against the crate's server, and the crate's client
//! against `openssl s_server -Verify`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use secure_channel::identity::PeerRejection;
use secure_channel::testkit::{DevCa, IssuedSvid};
use secure_channel::{ConnectionError, Credentials, MemorySource, SecureChannel, TrustBundles};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/curl";

struct Pem {
    dir: tempfile::TempDir,
}

impl Pem {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn svid(&self, name: &str, svid: &IssuedSvid) -> (PathBuf, PathBuf) {
        let cert = self.dir.path().join(format!("{name}.pem"));
        let key = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert, svid.chain_pem()).unwrap();
        std::fs::write(&key, svid.key_pem()).unwrap();
        (cert, key)
    }

    fn bundle(&self, ca: &DevCa) -> PathBuf {
        let path = self.dir.path().join("bundle.pem");
        std::fs::write(&path, ca.bundle_pem()).unwrap();
        path
    }
}

/// A minimal HTTP/1.1 server on the crate's channel: answers every request with the caller's
/// SPIFFE ID, and reports each handshake's outcome.
async fn http_server(
    channel: SecureChannel,
) -> (
    u16,
    tokio::sync::mpsc::UnboundedReceiver<Result<String, ConnectionError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (channel, tx) = (channel.clone(), tx.clone());
            tokio::spawn(async move {
                let mut stream = match channel.accept(tcp).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let id = stream.peer_identity().spiffe_id().to_string();
                let _ = tx.send(Ok(id.clone()));
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match within(stream.read(&mut buf)).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{id}",
                    id.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (port, rx)
}

fn server_channel(ca: &DevCa) -> SecureChannel {
    // curl checks the host name, so this SVID also carries `localhost` as a DNS SAN; the crate
    // itself never looks at it.
    let svid = ca.svid(SERVER_ID).dns_name("localhost").issue().unwrap();
    let creds = MemorySource::new(Credentials::new(
        svid.to_svid().unwrap(),
        TrustBundles::new().with(ca.bundle().unwrap()),
    ));
    SecureChannel::builder(&creds)
        .allow_client(CLIENT_ID)
        .build()
        .unwrap()
}

async fn curl(port: u16, bundle: &Path, client: Option<(&Path, &Path)>) -> std::process::Output {
    let mut cmd = Command::new("curl");
    cmd.args([
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--http1.1",
        "--tlsv1.3",
    ])
    .arg("--resolve")
    .arg(format!("localhost:{port}:127.0.0.1"))
    .arg("--cacert")
    .arg(bundle);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.arg(format!("https://localhost:{port}/whoami"))
        .kill_on_drop(true);
    within(cmd.output()).await.expect("curl is installed")
}

#[tokio::test]
async fn curl_with_client_certificate() {
    let ca = DevCa::new("example.org").unwrap();
    let pem = Pem::new();
    let bundle = pem.bundle(&ca);
    let (cert, key) = pem.svid("client", &ca.svid(CLIENT_ID).issue().unwrap());
    let (port, mut results) = http_server(server_channel(&ca)).await;

    let output = curl(port, &bundle, Some((&cert, &key))).await;
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), CLIENT_ID);
    assert_eq!(within(results.recv()).await.unwrap().unwrap(), CLIENT_ID);

    // Without a client certificate curl is refused in the handshake.
    let output = curl(port, &bundle, None).await;
    assert!(!output.status.success());
    assert!(matches!(
        within(results.recv()).await.unwrap(),
        Err(ConnectionError::PeerRejected(PeerRejection::NoCertificate))
    ));

    // A client certificate of another CA is refused too.
    let rogue = DevCa::new("example.org").unwrap();
    let (cert, key) = pem.svid("rogue", &rogue.svid(CLIENT_ID).issue().unwrap());
    let output = curl(port, &bundle, Some((&cert, &key))).await;
    assert!(!output.status.success());
    assert!(matches!(
        within(results.recv()).await.unwrap(),
        Err(ConnectionError::PeerRejected(
            PeerRejection::InvalidChain { .. }
        ))
    ));
}

async fn s_client(
    port: u16,
    bundle: &Path,
    cert: &Path,
    key: &Path,
    version: &str,
) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            version,
            "-verify_return_error",
        ])
        .arg("-CAfile")
        .arg(bundle)
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().unwrap();
    within(stdin.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"))
        .await
        .unwrap();
    let output = within(child.wait_with_output()).await.unwrap();
    drop(stdin);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (
        stdout.contains("Verify return code: 0 (ok)") && stdout.contains(CLIENT_ID),
        stdout,
    )
}

#[tokio::test]
async fn openssl_s_client_against_the_server() {
    let ca = DevCa::new("example.org").unwrap();
    let pem = Pem::new();
    let bundle = pem.bundle(&ca);
    let (cert, key) = pem.svid("client", &ca.svid(CLIENT_ID).issue().unwrap());
    let (port, mut results) = http_server(server_channel(&ca)).await;

    let (ok, stdout) = s_client(port, &bundle, &cert, &key, "-tls1_3").await;
    assert!(ok, "s_client did not get through:\n{stdout}");
    assert_eq!(within(results.recv()).await.unwrap().unwrap(), CLIENT_ID);

    // TLS 1.2 is refused by default.
    let (ok, _) = s_client(port, &bundle, &cert, &key, "-tls1_2").await;
    assert!(!ok);
    assert!(matches!(
        within(results.recv()).await.unwrap(),
        Err(ConnectionError::Handshake(_))
    ));
}

#[tokio::test]
async fn client_against_openssl_s_server_with_verify() {
    let ca = DevCa::new("example.org").unwrap();
    let pem = Pem::new();
    let bundle = pem.bundle(&ca);
    let (cert, key) = pem.svid("server", &ca.svid(SERVER_ID).issue().unwrap());
    let (mut server, addr) = s_server(
        &[
            "-Verify",
            "2",
            "-verify_return_error",
            "-tls1_3",
            "-www",
            "-naccept",
            "2",
        ],
        &cert,
        &key,
        &bundle,
    )
    .await;

    let client_creds = MemorySource::new(ca.credentials(CLIENT_ID).unwrap());
    let client = SecureChannel::builder(&client_creds)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    let mut stream = within(client.connect_tcp(addr)).await.unwrap();
    assert_eq!(stream.peer_identity().spiffe_id().to_string(), SERVER_ID);
    within(stream.write_all(b"GET / HTTP/1.0\r\n\r\n"))
        .await
        .unwrap();
    let mut page = String::new();
    let _ = within(stream.read_to_string(&mut page)).await;
    assert!(
        page.starts_with("HTTP/1.0 200 ok"),
        "unexpected answer: {page}"
    );
    assert!(
        page.contains("Client certificate"),
        "s_server saw no client certificate:\n{page}"
    );

    // s_server serves one connection at a time.
    drop(stream);

    // The same server is refused when another ID is expected.
    let picky = SecureChannel::builder(&client_creds)
        .expect_server("spiffe://example.org/billing")
        .build()
        .unwrap();
    assert!(matches!(
        within(picky.connect_tcp(addr)).await,
        Err(ConnectionError::PeerRejected(
            PeerRejection::NotAllowed { .. }
        ))
    ));
    let _ = server.kill().await;
}

/// Runs `openssl s_client` with extra arguments against `port` and returns (stdout+stderr).
async fn s_client_raw(port: u16, args: &[&std::ffi::OsStr]) -> String {
    let output = within(
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn tls12_opt_in_offers_only_ecdhe_with_aead() {
    let ca = DevCa::new("example.org").unwrap();
    let pem = Pem::new();
    let (cert, key) = pem.svid("client", &ca.svid(CLIENT_ID).issue().unwrap());
    let svid = ca.svid(SERVER_ID).issue().unwrap();
    let creds = MemorySource::new(Credentials::new(
        svid.to_svid().unwrap(),
        TrustBundles::new().with(ca.bundle().unwrap()),
    ));
    let channel = SecureChannel::builder(&creds)
        .allow_client(CLIENT_ID)
        .allow_tls12()
        .build()
        .unwrap();
    let (port, mut results) = http_server(channel).await;
    let client = [
        std::ffi::OsStr::new("-cert"),
        cert.as_os_str(),
        std::ffi::OsStr::new("-key"),
        key.as_os_str(),
    ];

    // ECDHE + AEAD over TLS 1.2: accepted.
    let mut args = client.to_vec();
    args.extend(["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"].map(std::ffi::OsStr::new));
    let out = s_client_raw(port, &args).await;
    assert!(out.contains("ECDHE-ECDSA-AES128-GCM-SHA256"), "{out}");
    assert_eq!(within(results.recv()).await.unwrap().unwrap(), CLIENT_ID);

    // CBC (no AEAD) and non-ECDHE key exchange: refused in the handshake.
    for cipher in [
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384",
        "AES128-GCM-SHA256",
        "DHE-RSA-AES128-GCM-SHA256",
    ] {
        let mut args = client.to_vec();
        args.extend(["-tls1_2", "-cipher", cipher].map(std::ffi::OsStr::new));
        let out = s_client_raw(port, &args).await;
        assert!(
            !out.contains("Cipher is ") || out.contains("Cipher is (NONE)"),
            "{cipher} negotiated:\n{out}"
        );
        assert!(within(results.recv()).await.unwrap().is_err(), "{cipher}");
    }
}

#[tokio::test]
async fn a_refused_client_learns_access_denied_and_nothing_of_the_policy() {
    let ca = DevCa::new("example.org").unwrap();
    let pem = Pem::new();
    let (cert, key) = pem.svid(
        "intruder",
        &ca.svid("spiffe://example.org/intruder").issue().unwrap(),
    );
    let (port, mut results) = http_server(server_channel(&ca)).await;
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "-cert".as_ref(),
        cert.as_os_str(),
        "-key".as_ref(),
        key.as_os_str(),
    ];
    // Keep reading after stdin's EOF: in TLS 1.3 the refusal comes after the client's Finished.
    args.extend(["-tls1_3", "-ign_eof"].map(std::ffi::OsStr::new));
    let out = s_client_raw(port, &args).await;
    // The server's own error names the IDs...
    match within(results.recv()).await.unwrap() {
        Err(ConnectionError::PeerRejected(PeerRejection::NotAllowed { presented, .. })) => {
            assert_eq!(presented.to_string(), "spiffe://example.org/intruder")
        }
        other => panic!("expected NotAllowed, got {other:?}"),
    }
    // ...the peer sees access_denied (its ID is authenticated and not allowed), nothing about
    // the policy.
    assert!(out.contains("access denied"), "{out}");
    assert!(
        !out.contains(CLIENT_ID) && !out.contains("not allowed"),
        "{out}"
    );
}

#[tokio::test]
async fn client_refuses_a_tls12_only_server_by_default() {
    let ca = DevCa::new("example.org").unwrap();
    let pem = Pem::new();
    let bundle = pem.bundle(&ca);
    let (cert, key) = pem.svid("server", &ca.svid(SERVER_ID).issue().unwrap());
    let (mut server, addr) =
        s_server(&["-tls1_2", "-www", "-Verify", "2"], &cert, &key, &bundle).await;
    let creds = MemorySource::new(ca.credentials(CLIENT_ID).unwrap());
    let client = SecureChannel::builder(&creds)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    match within(client.connect_tcp(addr)).await {
        Err(ConnectionError::Handshake(e)) => {
            let text = e.to_string();
            assert!(
                text.contains("ProtocolVersion")
                    || text.contains("protocol version")
                    || text.contains("alert"),
                "{text}"
            );
        }
        other => panic!("expected a protocol failure, got {other:?}"),
    }
    // The same client with the opt-in gets through.
    let tls12 = SecureChannel::builder(&creds)
        .expect_server(SERVER_ID)
        .allow_tls12()
        .build()
        .unwrap();
    let stream = within(tls12.connect_tcp(addr)).await.unwrap();
    assert_eq!(
        stream.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let _ = server.kill().await;
}

/// Starts `openssl s_server` on a free 127.0.0.1 port with `args` and the given identity and
/// CA file, and waits until it is ready (it prints `ACCEPT`).
async fn s_server(
    args: &[&str],
    cert: &Path,
    key: &Path,
    bundle: &Path,
) -> (tokio::process::Child, std::net::SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .args(args)
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .arg("-CAfile")
        .arg(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl is installed");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    loop {
        let line = within(lines.next_line())
            .await
            .unwrap()
            .expect("s_server exited early");
        if line.contains("ACCEPT") {
            break;
        }
    }
    (server, format!("127.0.0.1:{port}").parse().unwrap())
}

/// The README's "Issuing SVIDs with your own CA" recipe, as written there.
fn readme_openssl_recipe() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("### Issuing SVIDs with your own CA")
        .nth(1)
        .expect("README has the section");
    let block = section.split("```sh\n").nth(1).expect("a sh block");
    block.split("```").next().unwrap().to_owned()
}

#[tokio::test]
async fn svids_from_the_readme_openssl_recipe_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let output = within(
        Command::new("bash")
            .args(["-euc", &readme_openssl_recipe()])
            .current_dir(dir.path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the recipe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let files = |name: &str| {
        secure_channel::CredentialSource::from_files(
            dir.path().join(format!("{name}.pem")),
            dir.path().join(format!("{name}.key")),
        )
        .own_bundle(dir.path().join("ca.pem"))
        .start()
        .unwrap()
    };
    let (api, web) = (files("api"), files("web"));
    assert_eq!(
        api.current().svid().spiffe_id().to_string(),
        "spiffe://example.org/api"
    );
    let mut server = TestServer::start(
        SecureChannel::builder(api)
            .allow_client("spiffe://example.org/web")
            .build()
            .unwrap(),
    )
    .await;
    let client = SecureChannel::builder(web)
        .expect_server("spiffe://example.org/api")
        .build()
        .unwrap();
    let mut stream = within(client.connect_tcp(server.addr)).await.unwrap();
    assert_eq!(
        stream.peer_identity().spiffe_id().to_string(),
        "spiffe://example.org/api"
    );
    assert_eq!(
        read_line(&mut stream).await.unwrap(),
        "spiffe://example.org/web"
    );
    assert_eq!(server.next().await.unwrap(), "spiffe://example.org/web");
}

/// A foreign server (OpenSSL, TLS 1.3 and TLS 1.2) that does not trust the client's CA: the
/// client gets `ConnectionError::RefusedByServer` with `unknown_ca`, whether the alert comes after the
/// handshake (TLS 1.3) or within it (TLS 1.2).
#[tokio::test]
async fn a_foreign_server_refusing_our_svid_gives_the_typed_refusal() {
    let ca = DevCa::new("example.org").unwrap();
    let strangers = DevCa::new("example.org").unwrap();
    let pem = Pem::new();
    // The server trusts only the strangers' CA for its clients.
    let client_cas = pem.bundle(&strangers);
    let (cert, key) = pem.svid("server", &ca.svid(SERVER_ID).issue().unwrap());
    let creds = MemorySource::new(ca.credentials(CLIENT_ID).unwrap());
    let client = SecureChannel::builder(&creds)
        .expect_server(SERVER_ID)
        .allow_tls12()
        .build()
        .unwrap();
    for version in ["-tls1_3", "-tls1_2"] {
        let (mut server, addr) = s_server(
            &[version, "-www", "-Verify", "2", "-verify_return_error"],
            &cert,
            &key,
            &client_cas,
        )
        .await;
        match within(client.connect_tcp(addr)).await {
            Err(ConnectionError::RefusedByServer { own_id, alert }) => {
                assert_eq!(own_id.to_string(), CLIENT_ID, "{version}");
                assert_eq!(alert, rustls::AlertDescription::UnknownCA, "{version}");
            }
            other => panic!("{version}: expected RefusedByServer, got {other:?}"),
        }
        let _ = server.kill().await;
    }
}
