//! `proxy inbound --mode tcp`: bytes both ways with half-closes, a PROXY protocol v2 header
//! parsed here, the allow-list, a backend that is down.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a PROXY v2 header said.
#[derive(Debug, Default)]
struct ProxyHeader {
    source: Option<SocketAddr>,
    destination: Option<SocketAddr>,
    spiffe_id: Option<String>,
    leaf_sha256: Option<Vec<u8>>,
}

/// Parses a PROXY protocol v2 header (TCP over IPv4 or IPv6) from `stream`.
async fn read_proxy_header(stream: &mut tokio::net::TcpStream) -> ProxyHeader {
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).await.unwrap();
    assert_eq!(&fixed[..12], b"\r\n\r\n\0\r\nQUIT\n", "signature");
    assert_eq!(fixed[12], 0x21, "version 2, PROXY");
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let mut rest = vec![0u8; length];
    stream.read_exact(&mut rest).await.unwrap();
    let (addresses, mut tlvs) = match fixed[13] {
        0x11 => {
            let ip = |b: &[u8]| std::net::IpAddr::from(<[u8; 4]>::try_from(b).unwrap());
            let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
            (
                (
                    SocketAddr::new(ip(&rest[0..4]), port(&rest[8..10])),
                    SocketAddr::new(ip(&rest[4..8]), port(&rest[10..12])),
                ),
                &rest[12..],
            )
        }
        0x21 => {
            let ip = |b: &[u8]| std::net::IpAddr::from(<[u8; 16]>::try_from(b).unwrap());
            let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
            (
                (
                    SocketAddr::new(ip(&rest[0..16]), port(&rest[32..34])),
                    SocketAddr::new(ip(&rest[16..32]), port(&rest[34..36])),
                ),
                &rest[36..],
            )
        }
        other => panic!("family {other:#x}"),
    };
    let mut header = ProxyHeader {
        source: Some(addresses.0),
        destination: Some(addresses.1),
        ..ProxyHeader::default()
    };
    while !tlvs.is_empty() {
        let kind = tlvs[0];
        let len = usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        let value = &tlvs[3..3 + len];
        match kind {
            0xE0 => header.spiffe_id = Some(String::from_utf8(value.to_vec()).unwrap()),
            0xE1 => header.leaf_sha256 = Some(value.to_vec()),
            _ => {}
        }
        tlvs = &tlvs[3 + len..];
    }
    header
}

/// A backend that (optionally) reads a PROXY header, reads until the caller half-closes, then
/// answers `got: <what it read>` and closes.
async fn backend(
    proxy_protocol: bool,
) -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<ProxyHeader>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let header = if proxy_protocol {
                    read_proxy_header(&mut stream).await
                } else {
                    ProxyHeader::default()
                };
                let _ = tx.send(header);
                let mut received = Vec::new();
                stream.read_to_end(&mut received).await.unwrap();
                stream.write_all(b"got: ").await.unwrap();
                stream.write_all(&received).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
    });
    (addr, rx)
}

async fn tcp_proxy(pki: &Pki, backend: &str, extra: &[&str]) -> Running {
    let mut args: Vec<String> = vec![
        "proxy".into(),
        "inbound".into(),
        "--mode".into(),
        "tcp".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--backend".into(),
        backend.into(),
        "--allow".into(),
        WEB_ID.into(),
    ];
    args.extend(pki.cred_args("proxy"));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Running::start(args).await
}

#[tokio::test]
async fn bytes_both_ways_with_half_close_and_a_proxy_v2_header() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    let (backend_addr, mut headers) = backend(true).await;
    let running = tcp_proxy(&pki, &backend_addr.to_string(), &["--proxy-protocol"]).await;

    let (_source, channel) = pki.client(WEB_ID, PROXY_ID);
    let mut stream = within(channel.connect_tcp(running.addr)).await.unwrap();
    let local = stream.get_ref().local_addr().unwrap();
    stream.write_all(b"hello ").await.unwrap();
    stream.write_all(b"world").await.unwrap();
    // Half-close: our side is done; the answer still comes back.
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    within(stream.read_to_end(&mut answer)).await.unwrap();
    assert_eq!(answer, b"got: hello world");

    let header = within(headers.recv()).await.unwrap();
    assert_eq!(header.spiffe_id.as_deref(), Some(WEB_ID));
    assert_eq!(header.source, Some(local), "the caller's address");
    assert_eq!(
        header.destination,
        Some(running.addr),
        "the address it called"
    );
    assert_eq!(header.leaf_sha256.as_ref().map(Vec::len), Some(32));
}

#[tokio::test]
async fn the_leaf_digest_is_the_callers_certificate() {
    use sha2::Digest;
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    let web = pki.svid("web", WEB_ID);
    let (backend_addr, mut headers) = backend(true).await;
    let running = tcp_proxy(&pki, &backend_addr.to_string(), &["--proxy-protocol"]).await;
    // openssl s_client as the caller (`-quiet` keeps the connection open after stdin ends).
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-connect"])
        .arg(running.addr.to_string())
        .args(["-cert", &pki.path("web.pem"), "-key", &pki.path("web.key")])
        .args(["-CAfile", &pki.path("ca.pem")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ping").await.unwrap();
    drop(stdin);
    let header = within(headers.recv()).await.unwrap();
    assert_eq!(header.spiffe_id.as_deref(), Some(WEB_ID));
    assert_eq!(
        header.leaf_sha256.unwrap(),
        sha2::Sha256::digest(web.leaf()).to_vec()
    );
    child.kill().await.unwrap();
}

#[tokio::test]
async fn without_proxy_protocol_the_stream_is_untouched() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    let (backend_addr, _headers) = backend(false).await;
    let running = tcp_proxy(&pki, &backend_addr.to_string(), &[]).await;
    let (_source, channel) = pki.client(WEB_ID, PROXY_ID);
    let mut stream = within(channel.connect_tcp(running.addr)).await.unwrap();
    stream.write_all(b"\r\n\r\n\0raw bytes").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    within(stream.read_to_end(&mut answer)).await.unwrap();
    assert_eq!(answer, b"got: \r\n\r\n\0raw bytes");
}

#[tokio::test]
async fn refused_callers_and_a_backend_that_is_down_get_a_closed_connection() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let running = tcp_proxy(&pki, &closed, &[]).await;

    // Allowed, but the backend is down: the connection is closed, promptly.
    let (_source, channel) = pki.client(WEB_ID, PROXY_ID);
    let mut stream = within(channel.connect_tcp(running.addr)).await.unwrap();
    let mut answer = Vec::new();
    let read = within(stream.read_to_end(&mut answer)).await;
    assert!(read.is_err() || answer.is_empty(), "{read:?} {answer:?}");

    // Not allowed: refused at the handshake.
    let (_source, channel) = pki.client(OTHER_ID, PROXY_ID);
    let refused = async {
        let mut stream = channel.connect_tcp(running.addr).await?;
        let mut buf = Vec::new();
        stream
            .read_to_end(&mut buf)
            .await
            .map_err(Into::into)
            .map(|_| buf)
    };
    let result: Result<Vec<u8>, Box<dyn std::error::Error>> = within(refused).await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn tcp_mode_refuses_http_only_flags() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    let policy = pki.dir.write("p.toml", "");
    for extra in [
        vec![
            "--mode",
            "tcp",
            "--policy",
            policy.to_str().unwrap(),
            "--allow",
            WEB_ID,
        ],
        vec![
            "--mode",
            "tcp",
            "--jwks",
            "j.json",
            "--audience",
            "a",
            "--allow",
            WEB_ID,
        ],
        vec!["--mode", "http", "--proxy-protocol", "--allow", WEB_ID],
        vec!["--mode", "udp", "--allow", WEB_ID],
    ] {
        let mut args: Vec<String> = vec![
            "proxy".into(),
            "inbound".into(),
            "--backend".into(),
            "127.0.0.1:9".into(),
        ];
        args.extend(pki.cred_args("proxy"));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let (code, _, stderr) = parts(&run(&args).await);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
    }
}

#[tokio::test]
async fn sigterm_lets_open_connections_finish() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    let (backend_addr, mut arrivals) = backend(false).await;
    let mut running = tcp_proxy(&pki, &backend_addr.to_string(), &[]).await;
    let (_source, channel) = pki.client(WEB_ID, PROXY_ID);
    let mut stream = within(channel.connect_tcp(running.addr)).await.unwrap();
    stream.write_all(b"in flight").await.unwrap();
    // The connection is open once the proxy has accepted it and reached the backend (the
    // client's side of the handshake ends before the proxy's: a SIGTERM in between would find
    // a connection still being accepted, which a drain rightly does not wait for).
    within(arrivals.recv()).await.unwrap();
    running.terminate().await;
    let addr = running.addr;
    within(async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "exited before draining"
    );
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    within(stream.read_to_end(&mut answer)).await.unwrap();
    assert_eq!(answer, b"got: in flight");
    let exit = within(running.child.wait()).await.unwrap();
    assert_eq!(exit.code(), Some(0));
}
