//! `proxy outbound` in front of our own `proxy inbound`: a plaintext local caller reaches the
//! backend over mutual TLS, with its identity and a token, in http and tcp modes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use secure_channel::testkit::{TokenIssuer, WorkloadApiServer};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| (*s).to_owned()).collect()
}

async fn inbound(pki: &Pki, backend: &str, extra: &[&str]) -> Running {
    let mut all = args(&[
        "proxy",
        "inbound",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        backend,
    ]);
    all.extend(pki.cred_args("proxy"));
    all.extend(args(extra));
    Running::start(all).await
}

async fn outbound(pki: &Pki, target: &Running, extra: &[&str]) -> Running {
    let mut all = args(&[
        "proxy",
        "outbound",
        "--listen",
        "127.0.0.1:0",
        "--target",
        &format!("localhost:{}", target.addr.port()),
    ]);
    all.extend(pki.cred_args("web"));
    all.extend(args(extra));
    Running::start(all).await
}

/// curl over plain HTTP to the outbound proxy: (exit code, body, status).
async fn plain_get(url: &str, extra: &[&str]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new("curl");
    command
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .kill_on_drop(true);
    let (code, out, err) = parts(&within(command.output()).await.unwrap());
    let (body, status) = out.rsplit_once('\n').unwrap_or((&out, ""));
    assert!(!err.contains("panicked"), "{err}");
    (code, body.to_owned(), status.to_owned())
}

fn seen(body: &str) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["headers"].clone()
}

#[tokio::test]
async fn http_through_outbound_then_inbound_with_a_token_file_that_changes() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    let web = pki.svid("web", WEB_ID);
    let issuer = TokenIssuer::new(
        "https://issuer.test",
        "k1",
        secure_channel::jwt::Algorithm::ES256,
    )
    .unwrap();
    let jwks = pki.dir.write("jwks.json", issuer.jwks());
    let backend = BackendServer::start().await;
    let inbound = inbound(
        &pki,
        &backend.addr.to_string(),
        &[
            "--allow",
            WEB_ID,
            "--jwks",
            jwks.to_str().unwrap(),
            "--audience",
            "orders",
            "--require-bound-token",
        ],
    )
    .await;
    let token = |subject: &str| {
        issuer
            .token()
            .subject(subject)
            .audience("orders")
            .bound_to_svid(&web)
            .sign()
            .unwrap()
    };
    let token_file = pki.dir.write("token", format!("{}\n", token("alice")));
    let outbound = outbound(
        &pki,
        &inbound,
        &[
            "--expect-server",
            PROXY_ID,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    )
    .await;
    let url = format!("http://{}/orders/1?q=2", outbound.addr);

    // The local caller's own Authorization and identity headers are replaced.
    let (code, body, status) = plain_get(
        &url,
        &[
            "-H",
            "authorization: Bearer forged",
            "-H",
            "x-spiffe-id: spiffe://example.org/admin",
        ],
    )
    .await;
    assert_eq!((code, status.as_str()), (0, "200"), "{body}");
    let headers = seen(&body);
    assert_eq!(
        headers["x-spiffe-id"],
        serde_json::json!([WEB_ID]),
        "{body}"
    );
    assert_eq!(
        headers["x-spiffe-token-subject"],
        serde_json::json!(["alice"]),
        "{body}"
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (json["path"].as_str(), json["query"].as_str()),
        (Some("/orders/1"), Some("q=2"))
    );
    // HTTP/1.1 and HTTP/2 prior knowledge from the local caller alike.
    let (_, body, status) = plain_get(&url, &["--http2-prior-knowledge"]).await;
    assert_eq!(status, "200", "{body}");

    // The token agent rewrites the file: the new token is used.
    pki.dir.write("token", token("bob"));
    within(async {
        loop {
            let (_, body, _) = plain_get(&url, &[]).await;
            if seen(&body)["x-spiffe-token-subject"] == serde_json::json!(["bob"]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // A broken write keeps the last good token.
    pki.dir.write("token", "");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, body, status) = plain_get(&url, &[]).await;
    assert_eq!(status, "200", "{body}");
    assert_eq!(
        seen(&body)["x-spiffe-token-subject"],
        serde_json::json!(["bob"])
    );
}

#[tokio::test]
async fn the_target_must_prove_the_expected_identity() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    let backend = BackendServer::start().await;
    let inbound = inbound(&pki, &backend.addr.to_string(), &["--allow", WEB_ID]).await;
    let outbound = outbound(
        &pki,
        &inbound,
        &["--expect-server", "spiffe://example.org/api"],
    )
    .await;
    let (code, body, status) = plain_get(&format!("http://{}/x", outbound.addr), &[]).await;
    assert_eq!((code, status.as_str()), (0, "502"), "{body}");
    assert!(
        body.contains("spiffe://example.org/proxy"),
        "names the presented ID: {body}"
    );

    // A target that is down: 502 as well, promptly.
    drop(inbound);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut all = args(&[
        "proxy",
        "outbound",
        "--listen",
        "127.0.0.1:0",
        "--target",
        &format!("127.0.0.1:{port}"),
        "--expect-server",
        PROXY_ID,
    ]);
    all.extend(pki.cred_args("web"));
    let down = Running::start(all).await;
    let (_, body, status) = plain_get(&format!("http://{}/x", down.addr), &[]).await;
    assert_eq!(status, "502", "{body}");
}

#[tokio::test]
async fn a_target_that_does_not_answer_in_time_gives_504() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    let mut backend = BackendServer::start().await;
    let inbound = inbound(&pki, &backend.addr.to_string(), &["--allow", WEB_ID]).await;
    let outbound = outbound(
        &pki,
        &inbound,
        &["--expect-server", PROXY_ID, "--target-timeout", "1"],
    )
    .await;
    let started = std::time::Instant::now();
    let (code, body, status) = plain_get(&format!("http://{}/slow", outbound.addr), &[]).await;
    let elapsed = started.elapsed();
    assert_eq!((code, status.as_str()), (0, "504"), "{body}");
    assert!(body.contains("target did not answer within 1 s"), "{body}");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    // It had reached the backend through the inbound proxy.
    within(backend.arrivals.recv()).await.unwrap();
    backend.release.notify_waiters();
}

#[tokio::test]
async fn a_unix_socket_listener() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    let backend = BackendServer::start().await;
    let inbound = inbound(&pki, &backend.addr.to_string(), &["--allow", WEB_ID]).await;
    let socket = pki.dir.path("out.sock");
    let mut all = args(&[
        "proxy",
        "outbound",
        "--listen",
        &format!("unix:{}", socket.display()),
        "--target",
        &format!("localhost:{}", inbound.addr.port()),
        "--expect-server",
        PROXY_ID,
    ]);
    all.extend(pki.cred_args("web"));
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(&all)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    within(tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line))
        .await
        .unwrap();
    assert_eq!(
        line.trim(),
        format!("listening on unix:{}", socket.display())
    );
    let (code, body, status) = plain_get(
        "http://localhost/over-unix",
        &["--unix-socket", socket.to_str().unwrap()],
    )
    .await;
    assert_eq!((code, status.as_str()), (0, "200"), "{body}");
    assert_eq!(seen(&body)["x-spiffe-id"], serde_json::json!([WEB_ID]));
}

#[tokio::test]
async fn tcp_through_outbound_then_inbound() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    // A backend answering `got: <everything read>` once the caller half-closed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                stream.read_to_end(&mut received).await.unwrap();
                stream.write_all(b"got: ").await.unwrap();
                stream.write_all(&received).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
    });
    let inbound = inbound(
        &pki,
        &backend_addr.to_string(),
        &["--mode", "tcp", "--allow", WEB_ID],
    )
    .await;
    let outbound = outbound(
        &pki,
        &inbound,
        &["--mode", "tcp", "--expect-server", PROXY_ID],
    )
    .await;
    let mut stream = within(tokio::net::TcpStream::connect(outbound.addr))
        .await
        .unwrap();
    stream.write_all(b"plain in, mTLS between").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    within(stream.read_to_end(&mut answer)).await.unwrap();
    assert_eq!(answer, b"got: plain in, mTLS between");
}

#[tokio::test]
async fn jwt_svids_from_the_workload_api() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    let (response, _) = pki.ca.workload_api_response(WEB_ID).unwrap();
    let agent = WorkloadApiServer::start(response).await.unwrap();
    let issuer =
        TokenIssuer::new("", "jwt-authority", secure_channel::jwt::Algorithm::ES256).unwrap();
    let jwks = pki.dir.write("jwks.json", issuer.jwks());
    agent.set_jwt_authority("example.org", issuer);
    let backend = BackendServer::start().await;
    let inbound = inbound(
        &pki,
        &backend.addr.to_string(),
        &[
            "--allow",
            WEB_ID,
            "--jwks",
            jwks.to_str().unwrap(),
            "--audience",
            "spiffe://example.org/proxy",
        ],
    )
    .await;
    let all = args(&[
        "proxy",
        "outbound",
        "--listen",
        "127.0.0.1:0",
        "--target",
        &format!("localhost:{}", inbound.addr.port()),
        "--expect-server",
        PROXY_ID,
        "--workload-api",
        &agent.endpoint(),
        "--token-audience",
        "spiffe://example.org/proxy",
    ]);
    let outbound = Running::start(all).await;
    let (code, body, status) = plain_get(&format!("http://{}/svid", outbound.addr), &[]).await;
    assert_eq!((code, status.as_str()), (0, "200"), "{body}");
    let headers = seen(&body);
    assert_eq!(
        headers["x-spiffe-id"],
        serde_json::json!([WEB_ID]),
        "{body}"
    );
    assert_eq!(
        headers["x-spiffe-token-subject"],
        serde_json::json!([WEB_ID]),
        "{body}"
    );
    assert!(agent.jwt_svid_calls() >= 1);
}

#[tokio::test]
async fn refuses_non_local_listeners_and_bad_flags() {
    let pki = Pki::new();
    pki.svid("web", WEB_ID);
    let creds = pki.cred_args("web");
    let base = |extra: &[&str]| {
        let mut all = args(&["proxy", "outbound"]);
        all.extend(creds.clone());
        all.extend(args(extra));
        all
    };
    // A valid target and expectation, with `extra`.
    let to_a = |extra: &[&str]| {
        let mut all = base(&["--target", "a:1", "--expect-server", PROXY_ID]);
        all.extend(args(extra));
        all
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (to_a(&["--listen", "0.0.0.0:15001"]), "--listen"),
        (to_a(&["--listen", "10.1.2.3:15001"]), "--listen"),
        (base(&["--target", "a:1"]), "--expect-server"),
        (
            base(&["--target", "no-port", "--expect-server", PROXY_ID]),
            "--target",
        ),
        (
            base(&["--target", "a:1", "--expect-server", "spiffe://x/y*"]),
            "--expect-server",
        ),
        (to_a(&["--token-audience", "a"]), "--workload-api"),
        (
            to_a(&["--mode", "tcp", "--token-file", "t"]),
            "--token-file",
        ),
        (to_a(&["--target-timeout", "0"]), "--target-timeout"),
        (
            to_a(&["--mode", "tcp", "--target-timeout", "5"]),
            "--target-timeout",
        ),
    ];
    for (all, named) in cases {
        let (code, _, stderr) = parts(&run(&all).await);
        assert_eq!(code, 2, "{all:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{all:?} should name {named}: {stderr}"
        );
    }
    let missing = pki.path("missing-token");
    let (code, _, stderr) = parts(
        &run(&base(&[
            "--listen",
            "127.0.0.1:0",
            "--target",
            "a:1",
            "--expect-server",
            PROXY_ID,
            "--token-file",
            &missing,
        ]))
        .await,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("missing-token"), "{stderr}");
}
