//! `proxy inbound` as a user runs it: the binary in front of a plaintext backend, called by the
//! library's client, curl and openssl s_client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;

fn headers(body: &str) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["headers"].clone()
}

async fn proxy(pki: &Pki, backend: &str, extra: &[&str]) -> Running {
    let mut args: Vec<String> = vec![
        "proxy".into(),
        "inbound".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--backend".into(),
        backend.into(),
    ];
    args.extend(pki.cred_args("proxy"));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Running::start(args).await
}

#[tokio::test]
async fn forwards_with_the_verified_identity_and_never_a_spoofed_one() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    let backend = BackendServer::start().await;
    let running = proxy(&pki, &backend.addr.to_string(), &["--allow", WEB_ID]).await;

    // The library's client, sending the headers a caller could try to forge.
    let (_source, channel) = pki.client(WEB_ID, PROXY_ID);
    let client = lib_client(&channel);
    let spoofed = [
        ("x-spiffe-id", "spiffe://example.org/admin"),
        ("X-Spiffe-Id", "spiffe://example.org/root"),
        ("x-spiffe-token-subject", "admin"),
        ("x-forwarded-for", "10.9.9.9"),
        ("x-forwarded-proto", "http"),
        ("forwarded", "for=10.9.9.9"),
        ("connection", "x-drop-me"),
        ("x-drop-me", "1"),
    ];
    let url = format!("https://127.0.0.1:{}/orders/1?x=1", running.addr.port());
    let (status, body) = get(&client, &url, &spoofed).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let seen = headers(&body);
    assert_eq!(seen["x-spiffe-id"], serde_json::json!([WEB_ID]), "{body}");
    assert!(seen.get("x-spiffe-token-subject").is_none(), "{body}");
    assert_eq!(
        seen["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"]),
        "{body}"
    );
    assert_eq!(
        seen["x-forwarded-proto"],
        serde_json::json!(["https"]),
        "{body}"
    );
    assert!(seen.get("forwarded").is_none(), "{body}");
    assert!(seen.get("x-drop-me").is_none(), "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["path"], "/orders/1");
    assert_eq!(json["query"], "x=1");
    // Each forgery alone: the proxy first looks for any of them in one pass over the names.
    for (name, value) in [
        ("x-spiffe-token-subject", "admin"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "1"),
        ("forwarded", "for=10.9.9.9"),
    ] {
        let (status, body) = get(&client, &url, &[(name, value)]).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(headers(&body).get(name).is_none(), "{name}: {body}");
    }

    // curl, over HTTP/1.1 and HTTP/2, with the same forgeries.
    for version in ["--http1.1", "--http2"] {
        let (code, out, err) = curl(
            &pki,
            "web",
            &running.url("/whoami"),
            &[
                version,
                "-H",
                "x-spiffe-id: spiffe://example.org/admin",
                "-H",
                "X-SPIFFE-ID: spiffe://example.org/root",
                "-H",
                "x-spiffe-token-subject: admin",
            ],
        )
        .await;
        assert_eq!(code, 0, "{version}: {err}");
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, "200", "{version}: {out}");
        let seen = headers(body);
        assert_eq!(
            seen["x-spiffe-id"],
            serde_json::json!([WEB_ID]),
            "{version}: {body}"
        );
        assert!(
            seen.get("x-spiffe-token-subject").is_none(),
            "{version}: {body}"
        );
        assert_eq!(
            seen["host"],
            serde_json::json!([format!("localhost:{}", running.addr.port())]),
            "{version}: {body}"
        );
    }

    // openssl s_client, writing the request by hand.
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-ign_eof", "-connect"])
        .arg(running.addr.to_string())
        .args(["-cert", &pki.path("web.pem"), "-key", &pki.path("web.key")])
        .args(["-CAfile", &pki.path("ca.pem")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"GET /raw HTTP/1.1\r\nHost: localhost\r\nx-spiffe-id: spiffe://example.org/admin\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    drop(stdin);
    let output = within(child.wait_with_output()).await.unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains(&format!("\"x-spiffe-id\":[\"{WEB_ID}\"]")),
        "{out}"
    );
    assert!(!out.contains("spiffe://example.org/admin"), "{out}");
}

const POLICY: &str = r#"
[[rule]]
name = "other-reads-orders"
effect = "allow"
principals = ["spiffe://example.org/other"]
routes = [{ methods = ["GET"], path = "/orders/*" }]
"#;

#[tokio::test]
async fn refuses_callers_and_routes_as_the_library_does() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    pki.svid("other", OTHER_ID);
    pki.svid("stranger", "spiffe://example.org/stranger");
    let policy = pki.dir.write("policy.toml", POLICY);
    let backend = BackendServer::start().await;
    let running = proxy(
        &pki,
        &backend.addr.to_string(),
        &["--allow", WEB_ID, "--policy", policy.to_str().unwrap()],
    )
    .await;

    // --allow: every route.
    let (code, out, _) = curl(&pki, "web", &running.url("/admin"), &[]).await;
    assert_eq!(
        (code, out.rsplit_once('\n').unwrap().1),
        (0, "200"),
        "{out}"
    );
    // The policy: its routes only; 403 elsewhere, and the backend never sees it.
    let (code, out, _) = curl(&pki, "other", &running.url("/orders/7"), &[]).await;
    assert_eq!(
        (code, out.rsplit_once('\n').unwrap().1),
        (0, "200"),
        "{out}"
    );
    let (code, out, _) = curl(&pki, "other", &running.url("/admin"), &[]).await;
    assert_eq!(
        (code, out.rsplit_once('\n').unwrap().1),
        (0, "403"),
        "{out}"
    );
    let (code, out, _) = curl(
        &pki,
        "other",
        &running.url("/orders/x/../../admin"),
        &["--path-as-is"],
    )
    .await;
    assert_eq!(
        (code, out.rsplit_once('\n').unwrap().1),
        (0, "403"),
        "{out}"
    );
    let (code, out, _) = curl(&pki, "other", &running.url("/orders/7"), &["-X", "DELETE"]).await;
    assert_eq!(
        (code, out.rsplit_once('\n').unwrap().1),
        (0, "403"),
        "{out}"
    );

    // A caller neither allowed nor named by the policy is refused at the handshake.
    let (code, out, err) = curl(&pki, "stranger", &running.url("/orders/7"), &[]).await;
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("200"), "{out}{err}");
    let (_source, channel) = pki.client("spiffe://example.org/stranger", PROXY_ID);
    let error = get(&lib_client(&channel), &running.url("/orders/7"), &[])
        .await
        .unwrap_err();
    let refused = std::error::Error::source(&error)
        .and_then(|e| e.downcast_ref::<secure_channel::ConnectionError>())
        .map(ToString::to_string)
        .unwrap_or_else(|| format!("{error:?}"));
    assert!(refused.contains("access_denied"), "{refused}");

    // The proxy must be the expected server: a client expecting someone else refuses it.
    let (_source, channel) = pki.client(WEB_ID, "spiffe://example.org/api");
    assert!(
        get(&lib_client(&channel), &running.url("/"), &[])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_backend_that_is_down_gives_502_without_hanging() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    // A port nobody listens on, and a unix socket that does not exist.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let missing = format!("unix:{}", pki.path("nobody.sock"));
    for backend in [closed.as_str(), missing.as_str()] {
        let running = proxy(&pki, backend, &["--allow", WEB_ID]).await;
        let (code, out, err) = curl(&pki, "web", &running.url("/x"), &[]).await;
        assert_eq!(code, 0, "{backend}: {err}");
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, "502", "{backend}: {out}");
        assert!(body.contains("bad gateway"), "{body}");
    }
}

/// Reads from `stream` into `received` until it holds a request's head: the head's length
/// (its blank line included), or `None` when the stream ended first.
async fn read_head(stream: &mut tokio::net::TcpStream, received: &mut Vec<u8>) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(end + 4);
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => received.extend_from_slice(&buf[..read]),
        }
    }
}

/// A plaintext backend that answers one request per connection (`conn N`, N counting its
/// connections) and then closes it, without saying so (no `Connection: close`); after
/// `connections` connections it stops listening too (a backend going down).
async fn one_request_per_connection(connections: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for n in 1..=connections {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let _ = read_head(&mut stream, &mut Vec::new()).await;
            let body = format!("conn {n}");
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    addr
}

/// curl (`version`: `--http1.1` or `--http2`) fetching `urls` one after the other on one
/// connection: per URL, the body, the status and how many connections curl opened for it.
async fn curl_one_connection(
    pki: &Pki,
    version: &str,
    urls: &[String],
) -> Vec<(String, String, String)> {
    // Options apply to every URL, and curl keeps its connection for the next one.
    let (last, first) = urls.split_last().unwrap();
    let mut args = vec![version, "-w", "\n@@%{http_code} %{num_connects}@@\n"];
    args.extend(first.iter().map(String::as_str));
    let (code, out, err) = curl(pki, "web", last, &args).await;
    assert_eq!(code, 0, "{err}");
    out.split_terminator("@@\n")
        .map(|answer| {
            let (body, written) = answer.rsplit_once("\n@@").unwrap();
            let (status, connects) = written.split_once(' ').unwrap();
            (body.to_owned(), status.to_owned(), connects.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_backend_closing_each_connection_still_answers_every_request_of_a_caller_connection() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    let backend = one_request_per_connection(usize::MAX).await;
    let running = proxy(&pki, &backend.to_string(), &["--allow", WEB_ID]).await;
    let urls: Vec<String> = (0..3).map(|i| running.url(&format!("/{i}"))).collect();
    let mut seen = 0;
    for version in ["--http1.1", "--http2"] {
        let answers = curl_one_connection(&pki, version, &urls).await;
        // One caller connection; the proxy connected to the backend again for each request.
        let expected: Vec<(String, String, String)> = (1..=3)
            .map(|i| {
                let connects = if i == 1 { "1" } else { "0" };
                (format!("conn {}", seen + i), "200".into(), connects.into())
            })
            .collect();
        assert_eq!(answers, expected, "{version}");
        seen += 3;
    }
}

#[tokio::test]
async fn a_backend_going_down_between_two_requests_of_a_caller_connection_gives_502() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    for version in ["--http1.1", "--http2"] {
        let backend = one_request_per_connection(1).await;
        let running = proxy(&pki, &backend.to_string(), &["--allow", WEB_ID]).await;
        let urls = [running.url("/up"), running.url("/down")];
        let started = std::time::Instant::now();
        let answers = curl_one_connection(&pki, version, &urls).await;
        assert_eq!(
            answers[0],
            ("conn 1".into(), "200".into(), "1".into()),
            "{version}"
        );
        let (body, status, connects) = &answers[1];
        assert_eq!(
            (status.as_str(), connects.as_str()),
            ("502", "0"),
            "{version}: {body}"
        );
        assert!(body.contains("bad gateway"), "{body}");
        // Refused at once: no wait for a connection that will never answer.
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(10), "{version}: {elapsed:?}");
    }
}

/// A plaintext backend that reads each request's head, reports it on the first channel, and
/// never answers; when the proxy closes that connection, it reports that on the second.
async fn never_answers() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    let (closed, closes) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (arrived, closed) = (arrived.clone(), closed.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(read) => {
                            request.extend_from_slice(&buf[..read]);
                            if request.windows(4).any(|w| w == b"\r\n\r\n") {
                                request.clear();
                                let _ = arrived.send(());
                            }
                        }
                    }
                }
                let _ = closed.send(());
            });
        }
    });
    (addr, arrivals, closes)
}

#[tokio::test]
async fn a_backend_that_never_answers_gives_504_after_the_backend_timeout() {
    let pki = proxy_and_web();
    for version in ["--http1.1", "--http2"] {
        let (backend, mut arrivals, mut closes) = never_answers().await;
        let running = bounded_proxy(&pki, &backend.to_string()).await;
        let started = std::time::Instant::now();
        let (code, out, err) = curl(&pki, "web", &running.url("/stuck"), &[version]).await;
        let elapsed = started.elapsed();
        assert_eq!(code, 0, "{version}: {err}");
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, "504", "{version}: {out}");
        assert!(body.contains("did not answer within 1 s"), "{body}");
        assert!(
            elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(10),
            "{version}: {elapsed:?}"
        );
        // The request reached the backend, and the proxy gave up that connection.
        within(arrivals.recv()).await.unwrap();
        within(closes.recv()).await.unwrap();
    }
}

/// A plaintext backend that reads each request whole (its head, then a `content-length`
/// body) and answers how many body bytes it got.
async fn counts_body_bytes() -> std::net::SocketAddr {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut received = Vec::new();
                let Some(head) = read_head(&mut stream, &mut received).await else {
                    return;
                };
                let length: usize = String::from_utf8_lossy(&received[..head])
                    .to_lowercase()
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map_or(0, |value| value.trim().parse().unwrap());
                let mut buf = [0u8; 1024];
                while received.len() < head + length {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => received.extend_from_slice(&buf[..read]),
                    }
                }
                let body = format!("got {length} bytes");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// A PKI with the proxy's SVID and the caller `web`'s.
fn proxy_and_web() -> Pki {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    pki
}

/// The proxy allowing `web`, with a bound of one second on the backend (`--backend-timeout`).
async fn bounded_proxy(pki: &Pki, backend: &str) -> Running {
    proxy(pki, backend, &["--allow", WEB_ID, "--backend-timeout", "1"]).await
}

/// Reads from `caller` until what it read ends with `until`; what it read.
async fn read_response(caller: &mut (impl tokio::io::AsyncRead + Unpin), until: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.ends_with(until.as_bytes()) {
        let read = within(caller.read(&mut buf)).await.unwrap();
        assert!(read > 0, "closed: {}", String::from_utf8_lossy(&response));
        response.extend_from_slice(&buf[..read]);
    }
    String::from_utf8_lossy(&response).into_owned()
}

/// A caller connection to `running`, having sent the head of a POST of `length` bytes.
async fn posting(
    pki: &Pki,
    running: &Running,
    length: usize,
) -> secure_channel::SecureStream<tokio::net::TcpStream> {
    let (_source, channel) = pki.client(WEB_ID, PROXY_ID);
    let mut caller = within(channel.connect_tcp(running.addr)).await.unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nhost: proxy\r\ncontent-length: {length}\r\n\r\n");
    within(caller.write_all(head.as_bytes())).await.unwrap();
    within(caller.flush()).await.unwrap();
    caller
}

#[tokio::test]
async fn an_upload_that_keeps_moving_is_not_cut_off_however_long_it_takes() {
    let pki = proxy_and_web();
    let backend = counts_body_bytes().await;
    let running = bounded_proxy(&pki, &backend.to_string()).await;
    let mut caller = posting(&pki, &running, 20).await;
    // A slow caller: four parts, each within the bound of the previous one, two seconds in
    // all (twice the bound).
    for part in ["hello", "world", "again", "done."] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        within(caller.write_all(part.as_bytes())).await.unwrap();
        within(caller.flush()).await.unwrap();
    }
    let response = read_response(&mut caller, "got 20 bytes").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// A plaintext backend that reads a request's head and then nothing more, without answering;
/// reports each request on the channel.
async fn reads_only_the_head() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let arrived = arrived.clone();
            tokio::spawn(async move {
                if read_head(&mut stream, &mut Vec::new()).await.is_some() {
                    let _ = arrived.send(());
                }
                std::future::pending::<()>().await;
                drop(stream);
            });
        }
    });
    (addr, arrivals)
}

#[tokio::test]
async fn a_stalled_upload_is_cut_off_naming_who_stalled() {
    let pki = proxy_and_web();

    // The caller stops sending its body: 408.
    let backend = counts_body_bytes().await;
    let running = bounded_proxy(&pki, &backend.to_string()).await;
    let mut caller = posting(&pki, &running, 10).await;
    within(caller.write_all(b"hello")).await.unwrap();
    within(caller.flush()).await.unwrap();
    let response = read_response(&mut caller, "stalled for 1 s\n").await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");

    // The backend stops taking the body (it reads the head only), far more of it than the
    // buffers on the way hold: 504.
    let (backend, mut arrivals) = reads_only_the_head().await;
    let running = bounded_proxy(&pki, &backend.to_string()).await;
    const LENGTH: usize = 256 << 20;
    let caller = posting(&pki, &running, LENGTH).await;
    let (mut reader, mut writer) = tokio::io::split(caller);
    let uploading = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..LENGTH / chunk.len() {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    within(arrivals.recv()).await.unwrap();
    let response = read_response(&mut reader, "did not answer within 1 s\n").await;
    assert!(response.starts_with("HTTP/1.1 504"), "{response}");
    uploading.abort();
}

/// A plaintext backend that answers each request with a head announcing 10 bytes, sends 5,
/// and then nothing more.
async fn stops_mid_answer() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut stream, &mut Vec::new()).await.is_some() {
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";
                    let _ = stream.write_all(answer).await;
                }
                std::future::pending::<()>().await;
                drop(stream);
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_answer_that_stops_midway_is_cut_short_after_the_backend_timeout() {
    let pki = proxy_and_web();
    let backend = stops_mid_answer().await;
    let running = bounded_proxy(&pki, &backend.to_string()).await;
    for version in ["--http1.1", "--http2"] {
        let started = std::time::Instant::now();
        let (code, out, err) = curl(&pki, "web", &running.url("/half"), &[version]).await;
        let elapsed = started.elapsed();
        // The head and what came of the body reached the caller; then the answer was cut
        // short (curl: a transfer closed early), not left waiting until curl's own limit.
        assert!(out.starts_with("hello"), "{version}: {out}");
        assert!(code != 0 && code != 28, "{version}: exit {code}: {err}");
        assert!(
            elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(10),
            "{version}: {elapsed:?}"
        );
    }
}

#[tokio::test]
async fn forwards_to_a_unix_socket() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    let socket = pki.dir.path("app.sock");
    let _backend = BackendServer::start_unix(&socket).await;
    let running = proxy(
        &pki,
        &format!("unix:{}", socket.display()),
        &["--allow", WEB_ID],
    )
    .await;
    let (code, out, err) = curl(&pki, "web", &running.url("/over-unix"), &[]).await;
    assert_eq!(code, 0, "{err}");
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{out}");
    assert_eq!(headers(body)["x-spiffe-id"], serde_json::json!([WEB_ID]));
}

#[tokio::test]
async fn sigterm_drains_the_request_in_flight_and_exits_0() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    let mut backend = BackendServer::start().await;
    let mut running = proxy(&pki, &backend.addr.to_string(), &["--allow", WEB_ID]).await;
    let (_source, channel) = pki.client(WEB_ID, PROXY_ID);
    let client = lib_client(&channel);

    let url = running.url("/slow");
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { get(&client, &url, &[]).await }
    });
    within(backend.arrivals.recv()).await.unwrap();
    running.terminate().await;

    // New connections are refused once the proxy stops accepting.
    let addr = running.addr;
    within(async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The proxy is still there for the request in flight, which completes.
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "exited before draining"
    );
    backend.release.notify_one();
    let (status, body) = within(in_flight).await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (200, "slow done"));
    let exit = within(running.child.wait()).await.unwrap();
    assert_eq!(exit.code(), Some(0));
    // The ready line was printed once; results and nothing else go to stdout.
    let later = running.stdout_after_ready().await;
    assert!(later.is_empty(), "{later:?}");
}

#[tokio::test]
async fn sigterm_with_a_stuck_request_exits_after_the_grace() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    let mut backend = BackendServer::start().await;
    let mut running = proxy(
        &pki,
        &backend.addr.to_string(),
        &["--allow", WEB_ID, "--drain-timeout", "1"],
    )
    .await;
    let (_source, channel) = pki.client(WEB_ID, PROXY_ID);
    let client = lib_client(&channel);
    let url = running.url("/slow");
    let stuck = tokio::spawn(async move { get(&client, &url, &[]).await });
    within(backend.arrivals.recv()).await.unwrap();
    running.terminate().await;
    let exit = within(running.child.wait()).await.unwrap();
    assert_eq!(exit.code(), Some(0));
    // The stuck request was not answered with success.
    assert!(!matches!(within(stuck).await.unwrap(), Ok((200, _))));
}

#[tokio::test]
async fn rotated_files_reach_new_connections_while_serving() {
    let pki = Pki::new();
    let first = pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    let backend = BackendServer::start().await;
    let running = proxy(&pki, &backend.addr.to_string(), &["--allow", WEB_ID]).await;
    let (_source, channel) = pki.client(WEB_ID, PROXY_ID);

    let serial_seen = || async {
        let stream = within(channel.connect_tcp(running.addr)).await.unwrap();
        stream.peer_identity().leaf_certificate().clone()
    };
    assert_eq!(&serial_seen().await, first.leaf());
    // An open connection keeps working across the rotation.
    let client = lib_client(&channel);
    let url = running.url("/before");
    assert_eq!(get(&client, &url, &[]).await.unwrap().0, 200);

    let second = pki.ca.svid(PROXY_ID).dns_name("localhost").issue().unwrap();
    pki.write_svid("proxy", &second);
    within(async {
        loop {
            if &serial_seen().await == second.leaf() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(get(&client, &url, &[]).await.unwrap().0, 200);
}

#[tokio::test]
async fn token_subjects_are_forwarded_and_requests_without_tokens_refused() {
    use secure_channel::testkit::TokenIssuer;

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
    let running = proxy(
        &pki,
        &backend.addr.to_string(),
        &[
            "--allow",
            WEB_ID,
            "--jwks",
            jwks.to_str().unwrap(),
            "--audience",
            "orders",
            "--issuer",
            "https://issuer.test",
            "--require-bound-token",
        ],
    )
    .await;
    let bound = issuer
        .token()
        .subject("alice")
        .audience("orders")
        .bound_to_svid(&web)
        .sign()
        .unwrap();
    let (code, out, err) = curl(
        &pki,
        "web",
        &running.url("/t"),
        &[
            "-H",
            &format!("authorization: Bearer {bound}"),
            "-H",
            "x-spiffe-token-subject: mallory",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{out}");
    let seen = headers(body);
    assert_eq!(
        seen["x-spiffe-token-subject"],
        serde_json::json!(["alice"]),
        "{body}"
    );
    assert_eq!(seen["x-spiffe-id"], serde_json::json!([WEB_ID]), "{body}");

    let (_, out, _) = curl(&pki, "web", &running.url("/t"), &[]).await;
    assert_eq!(out.rsplit_once('\n').unwrap().1, "401", "{out}");
    let unbound = issuer
        .token()
        .subject("alice")
        .audience("orders")
        .sign()
        .unwrap();
    let (_, out, _) = curl(
        &pki,
        "web",
        &running.url("/t"),
        &["-H", &format!("authorization: Bearer {unbound}")],
    )
    .await;
    assert_eq!(out.rsplit_once('\n').unwrap().1, "401", "{out}");
}

#[tokio::test]
async fn bad_configuration_exits_nonzero_naming_the_flag_or_file() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    let base = |extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "proxy".into(),
            "inbound".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--backend".into(),
            "127.0.0.1:9".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let creds = pki.cred_args("proxy");
    let creds: Vec<&str> = creds.iter().map(String::as_str).collect();
    let with = |extra: &[&str]| {
        let mut all = creds.clone();
        all.extend_from_slice(extra);
        base(&all)
    };
    let missing = pki.path("missing.pem");
    let bad_policy = pki.dir.write("bad.toml", "[[rule]]\nname = 1\n");
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (with(&[]), 2, "--allow"),
        (base(&["--allow", WEB_ID]), 2, "--cert"),
        (
            with(&["--allow", "spiffe://example.org/bill*"]),
            2,
            "--allow",
        ),
        (
            with(&["--allow", WEB_ID, "--jwks", "x.json"]),
            2,
            "--audience",
        ),
        (
            with(&["--allow", WEB_ID, "--listen", "nonsense"]),
            2,
            "--listen",
        ),
        (
            with(&["--allow", WEB_ID, "--identity-header", "bad header"]),
            2,
            "--identity-header",
        ),
        (
            with(&["--allow", WEB_ID, "--identity-header", "host"]),
            2,
            "--identity-header",
        ),
        (
            base(&[
                "--allow", WEB_ID, "--cert", &missing, "--key", &missing, "--bundle", &missing,
            ]),
            1,
            "missing.pem",
        ),
        (
            with(&["--policy", bad_policy.to_str().unwrap()]),
            1,
            "bad.toml",
        ),
        (
            with(&["--allow", WEB_ID, "--jwks", &missing, "--audience", "a"]),
            1,
            "missing.pem",
        ),
        (
            with(&["--allow", WEB_ID, "--crl", &missing]),
            1,
            "missing.pem",
        ),
        (
            with(&["--allow", WEB_ID, "--deny-list", &missing]),
            1,
            "missing.pem",
        ),
        (
            with(&["--allow", WEB_ID, "--workload-api", "unix:/x"]),
            2,
            "--workload-api",
        ),
        (
            base(&["--allow", WEB_ID, "--workload-api", "tcp:1"]),
            2,
            "--workload-api",
        ),
        (
            with(&["--allow", WEB_ID, "--backend-timeout", "0"]),
            2,
            "--backend-timeout",
        ),
        (
            with(&["--allow", WEB_ID, "--mode", "tcp", "--backend-timeout", "5"]),
            2,
            "--backend-timeout",
        ),
    ];
    for (args, expected, named) in cases {
        let (code, _, stderr) = parts(&run(&args).await);
        assert_eq!(code, expected, "{args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?} should name {named}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_deny_list_change_cuts_off_open_connections() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    let denied = pki.dir.write("denied.txt", "# nobody yet\n");
    let backend = BackendServer::start().await;
    let running = proxy(
        &pki,
        &backend.addr.to_string(),
        &["--allow", WEB_ID, "--deny-list", denied.to_str().unwrap()],
    )
    .await;
    let (_source, channel) = pki.client(WEB_ID, PROXY_ID);
    // An open connection, made before the change.
    let mut stream = within(channel.connect_tcp(running.addr)).await.unwrap();
    let client = lib_client(&channel);
    assert_eq!(get(&client, &running.url("/x"), &[]).await.unwrap().0, 200);

    pki.dir.write("denied.txt", format!("{WEB_ID}\n"));
    // The proxy closes the open connection (our side sees the end of the stream)...
    let mut buf = [0u8; 1];
    let read = within(tokio::io::AsyncReadExt::read(&mut stream, &mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // ...and refuses new ones.
    within(async {
        loop {
            let fresh = lib_client(&channel);
            if get(&fresh, &running.url("/x"), &[]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn federated_callers_tls12_and_policy_reloads() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    // A caller of another trust domain, trusted through its bundle.
    let partner = secure_channel::testkit::DevCa::new("partner.org").unwrap();
    let partner_svid = partner
        .svid("spiffe://partner.org/batch")
        .dns_name("localhost")
        .issue()
        .unwrap();
    pki.write_svid("partner", &partner_svid);
    let partner_bundle = pki.dir.write("partner-ca.pem", partner.bundle_pem());
    let policy = pki.dir.write(
        "policy.toml",
        "[[rule]]\nname = \"partner-reads\"\neffect = \"allow\"\nprincipals = [\"spiffe://partner.org\"]\nroutes = [{ methods = [\"GET\"], path = \"/reports/*\" }]\n",
    );
    let backend = BackendServer::start().await;
    let federated = format!("partner.org={}", partner_bundle.display());
    let running = proxy(
        &pki,
        &backend.addr.to_string(),
        &[
            "--allow",
            WEB_ID,
            "--policy",
            policy.to_str().unwrap(),
            "--federated-bundle",
            &federated,
            "--tls12",
        ],
    )
    .await;
    // curl presents the partner SVID (its chain validates against partner.org's bundle).
    let (code, out, err) = curl(&pki, "partner", &running.url("/reports/1"), &[]).await;
    assert_eq!(code, 0, "{err}");
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{out}");
    assert_eq!(
        headers(body)["x-spiffe-id"],
        serde_json::json!(["spiffe://partner.org/batch"])
    );
    // TLS 1.2 is accepted with --tls12.
    let (code, out, err) = curl(&pki, "web", &running.url("/x"), &["--tls-max", "1.2"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.rsplit_once('\n').unwrap().1, "200");

    // The policy file changes: the partner loses the route (while the proxy keeps serving).
    pki.dir.write(
        "policy.toml",
        "[[rule]]\nname = \"partner-reads\"\neffect = \"allow\"\nprincipals = [\"spiffe://partner.org\"]\nroutes = [{ methods = [\"GET\"], path = \"/other/*\" }]\n",
    );
    within(async {
        loop {
            let (_, out, _) = curl(&pki, "partner", &running.url("/reports/1"), &[]).await;
            if out.ends_with("\n403") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let (_, out, _) = curl(&pki, "partner", &running.url("/other/1"), &[]).await;
    assert!(out.ends_with("\n200"), "{out}");
}

#[tokio::test]
async fn tls12_is_refused_without_the_flag() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    let backend = BackendServer::start().await;
    let running = proxy(&pki, &backend.addr.to_string(), &["--allow", WEB_ID]).await;
    let (code, out, _) = curl(&pki, "web", &running.url("/x"), &["--tls-max", "1.2"]).await;
    assert_ne!(code, 0, "{out}");
    let (code, out, _) = curl(&pki, "web", &running.url("/x"), &[]).await;
    assert_eq!((code, out.rsplit_once('\n').unwrap().1), (0, "200"));
}

/// GET `url`: the status and the `Retry-After` header.
async fn status_and_retry_after(client: &LibClient, url: &str) -> (u16, Option<String>) {
    let request = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = within(client.request(request)).await.unwrap();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry_after)
}

const LIMITED_POLICY: &str = r#"
[[rule]]
name = "other-reads-orders"
effect = "allow"
principals = ["spiffe://example.org/other"]
routes = [{ methods = ["GET"], path = "/orders/*" }]
rate = "1/h"
"#;

#[tokio::test]
async fn per_caller_limits_from_flags_and_from_policy_rules_answer_429() {
    const BATCH_ID: &str = "spiffe://example.org/batch/nightly";
    const LATE_ID: &str = "spiffe://example.org/batch/late";
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    for (name, id) in [
        ("web", WEB_ID),
        ("other", OTHER_ID),
        ("batch", BATCH_ID),
        ("late", LATE_ID),
    ] {
        pki.svid(name, id);
    }
    let policy = pki.dir.write("policy.toml", LIMITED_POLICY);
    let backend = BackendServer::start().await;
    let running = proxy(
        &pki,
        &backend.addr.to_string(),
        &[
            "--allow",
            WEB_ID,
            "--allow",
            "spiffe://example.org/batch/*",
            "--policy",
            policy.to_str().unwrap(),
            "--rate-limit",
            "1/h",
            "--rate-burst",
            "2",
            "--limit-for",
            "spiffe://example.org/batch/*=rate=4/h,name=batch",
            "--total-rate-limit",
            "9/h",
        ],
    )
    .await;
    let url = running.url("/orders/1");
    let client_of = |id: &str| {
        let (source, channel) = pki.client(id, PROXY_ID);
        (source, lib_client(&channel))
    };

    // A policy rule's own limit (rate = "1/h"), under the flags' default (a burst of 2).
    let (_other_source, other) = client_of(OTHER_ID);
    assert_eq!(status_and_retry_after(&other, &url).await.0, 200);
    let (status, retry_after) = status_and_retry_after(&other, &url).await;
    assert_eq!(status, 429);
    assert!(retry_after.is_some());

    // The default limit (--rate-limit 1/h --rate-burst 2): the third request is refused, with
    // the time until the next one may come.
    let (_web_source, web) = client_of(WEB_ID);
    for _ in 0..2 {
        assert_eq!(status_and_retry_after(&web, &url).await.0, 200);
    }
    let (status, retry_after) = status_and_retry_after(&web, &url).await;
    assert_eq!(status, 429);
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=3600).contains(&secs), "{secs}");

    // The override: another caller, with its own and larger budget, is unaffected by web's.
    let (_batch_source, batch) = client_of(BATCH_ID);
    for _ in 0..4 {
        assert_eq!(status_and_retry_after(&batch, &url).await.0, 200);
    }
    assert_eq!(status_and_retry_after(&batch, &url).await.0, 429);

    // The total (9/h): the layer has let 2 + 2 + 4 through, so a new caller with a budget of
    // its own gets one more, and then the total refuses it.
    let (_late_source, late) = client_of(LATE_ID);
    assert_eq!(status_and_retry_after(&late, &url).await.0, 200);
    assert_eq!(status_and_retry_after(&late, &url).await.0, 429);
    running.terminate().await;

    // --concurrency-limit: a second request while the first is in flight is refused; once
    // the first is answered, the next is served.
    let mut backend = backend;
    let running = proxy(
        &pki,
        &backend.addr.to_string(),
        &["--allow", WEB_ID, "--concurrency-limit", "1"],
    )
    .await;
    let slow_url = running.url("/slow");
    let slow = tokio::spawn({
        let web = web.clone();
        async move { status_and_retry_after(&web, &slow_url).await.0 }
    });
    within(backend.arrivals.recv()).await.unwrap();
    assert_eq!(
        status_and_retry_after(&web, &running.url("/orders/1"))
            .await
            .0,
        429
    );
    backend.release.notify_one();
    assert_eq!(within(slow).await.unwrap(), 200);
    assert_eq!(
        status_and_retry_after(&web, &running.url("/orders/1"))
            .await
            .0,
        200
    );
    running.terminate().await;

    // Limits are for requests: tcp mode refuses them; a bad --limit-for names itself.
    let mut tcp = pki.cred_args("proxy");
    tcp.extend(["--mode", "tcp", "--allow", WEB_ID, "--rate-limit", "2/h"].map(String::from));
    let mut args: Vec<String> = ["proxy", "inbound", "--listen", "127.0.0.1:0"]
        .map(String::from)
        .to_vec();
    args.extend(["--backend".into(), backend.addr.to_string()]);
    let (code, _, err) = parts(&run(args.iter().chain(&tcp)).await);
    assert_ne!(code, 0);
    assert!(
        err.contains("--rate-limit") && err.contains("--mode http"),
        "{err}"
    );
    let mut bad = pki.cred_args("proxy");
    bad.extend(
        [
            "--allow",
            WEB_ID,
            "--limit-for",
            "spiffe://example.org/batch/*=rate=0/s",
        ]
        .map(String::from),
    );
    let (code, _, err) = parts(&run(args.iter().chain(&bad)).await);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--limit-for"), "{err}");
    let mut zero = pki.cred_args("proxy");
    zero.extend(["--allow", WEB_ID, "--concurrency-limit", "0"].map(String::from));
    let (code, _, err) = parts(&run(args.iter().chain(&zero)).await);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--concurrency-limit"), "{err}");
}
