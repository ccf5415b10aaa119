//! Serving and calling over secure channels: axum, hyper and the listener's robustness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secure_channel::identity::PeerRejection;
use secure_channel::transport::ListenerStats;
use secure_channel::{ConnectionError, PeerIdentity, SecureChannel};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/web";

/// An axum app answering `/whoami` with the caller's ID, served over `channel`; counts
/// connections.
async fn axum_server(channel: &SecureChannel) -> (std::net::SocketAddr, Arc<ListenerStats>) {
    let listener = channel
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let connections = listener.stats();
    let app = Router::new()
        .route(
            "/whoami",
            get(|peer: PeerIdentity| async move { peer.spiffe_id().to_string() }),
        )
        .route(
            "/version",
            get(
                |request: axum::extract::Request| async move { format!("{:?}", request.version()) },
            ),
        );
    tokio::spawn(async move { secure_channel::integration::axum::serve(listener, app).await });
    (addr, connections)
}

async fn get_text(
    client: &Client<secure_channel::SecureConnector, Empty<Bytes>>,
    url: &str,
) -> Result<(http::StatusCode, String, Option<PeerIdentity>), hyper_util::client::legacy::Error> {
    let response = within(client.get(url.parse().unwrap())).await?;
    let status = response.status();
    let server = response.extensions().get::<PeerIdentity>().cloned();
    let body = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), server))
}

/// A listener of `pki`'s server channel on a free loopback port.
async fn server_listener(pki: &mut Pki) -> secure_channel::SecureListener {
    pki.server()
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap()
}

/// Finds this crate's error in a hyper client error's sources.
fn crate_error(error: &hyper_util::client::legacy::Error) -> Option<&ConnectionError> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(e) = cause.downcast_ref::<ConnectionError>() {
            return Some(e);
        }
        source = cause.source();
    }
    None
}

#[tokio::test]
async fn axum_over_mtls_http1_and_http2_with_pooled_connections() {
    init_tracing();
    let mut pki = Pki::new();
    let (addr, connections) = axum_server(&pki.server()).await;
    let channel = pki.client(CLIENT_ID);

    // Default ALPN offers h2 first: HTTP/2.
    let client =
        Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(channel.connector());
    let (status, body, server) = get_text(&client, &format!("https://{addr}/whoami"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, CLIENT_ID, "the handler sees the caller's identity");
    assert_eq!(
        server.unwrap().spiffe_id().to_string(),
        SERVER_ID,
        "the response carries the server's identity"
    );
    let (_, version, _) = get_text(&client, &format!("https://{addr}/version"))
        .await
        .unwrap();
    assert_eq!(version, "HTTP/2.0");
    assert_eq!(
        connections.accepted(),
        1,
        "the second request reused the pooled connection"
    );

    // HTTP/1.1 by ALPN, also pooled across requests.
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(channel.connector().http1_only());
    for _ in 0..3 {
        let (_, version, _) = get_text(&client, &format!("http://{addr}/version"))
            .await
            .unwrap();
        assert_eq!(version, "HTTP/1.1");
    }
    assert_eq!(
        connections.accepted(),
        2,
        "HTTP/1.1 keep-alive reused one connection"
    );
}

#[tokio::test]
async fn an_identity_only_in_axum_connect_info_fails_closed() {
    let mut pki = Pki::new();
    let listener = server_listener(&mut pki).await;
    let addr = listener.local_addr();
    let app = Router::new().route(
        "/whoami",
        get(|peer: PeerIdentity| async move { peer.spiffe_id().to_string() }),
    );
    // What `into_make_service_with_connect_info::<PeerIdentity>()` used to do: the identity as
    // axum's ConnectInfo, which any make-service can set. Only the bare PeerIdentity the
    // secure servers insert is trusted.
    let moved = tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            let peer = request.extensions_mut().remove::<PeerIdentity>().unwrap();
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            tower::ServiceExt::oneshot(app, request).await
        }
    });
    tokio::spawn(secure_channel::integration::hyper::serve(listener, moved).into_future());
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(pki.client(CLIENT_ID).connector());
    let (status, body, _) = get_text(&client, &format!("https://{addr}/whoami"))
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(body.contains("no verified peer identity"), "{body}");
}

#[tokio::test]
async fn server_identity_mismatch_names_both_and_per_authority_override_applies() {
    let mut pki = Pki::new();
    let (addr, _) = axum_server(&pki.server()).await;
    let channel = pki.channel(CLIENT_ID, |b| {
        b.expect_server("spiffe://example.org/payments")
    });

    let client =
        Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(channel.connector());
    let error = get_text(&client, &format!("https://{addr}/whoami"))
        .await
        .unwrap_err();
    match crate_error(&error) {
        Some(ConnectionError::PeerRejected(PeerRejection::NotAllowed {
            presented,
            expected,
        })) => {
            assert_eq!(presented.to_string(), SERVER_ID);
            assert_eq!(expected.to_string(), "[spiffe://example.org/payments]");
        }
        other => panic!("expected NotAllowed, got {other:?} from {error:?}"),
    }

    let connector = channel
        .connector()
        .expect_server_at(&addr.to_string(), SERVER_ID)
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
    let (status, body, _) = get_text(&client, &format!("https://{addr}/whoami"))
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, CLIENT_ID));

    // The override is per authority: another authority still uses the channel's expectation.
    let connector = channel
        .connector()
        .expect_server_at("127.0.0.1:1", SERVER_ID)
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
    assert!(
        get_text(&client, &format!("https://{addr}/whoami"))
            .await
            .is_err()
    );
    for bad in ["no-port", "a b:1"] {
        match channel.connector().expect_server_at(bad, SERVER_ID) {
            Err(secure_channel::ConfigError::InvalidAuthority { authority, .. }) => {
                assert_eq!(authority, bad);
            }
            other => panic!("{bad}: expected InvalidAuthority, got {:?}", other.err()),
        }
    }
}

/// A URI the connectors cannot call is a typed error of kind `InvalidTarget`, naming the URI,
/// before any connection is attempted.
#[tokio::test]
async fn uris_that_cannot_be_called_are_refused_by_kind() {
    use secure_channel::ConnectionErrorKind;

    let mut pki = Pki::new();
    let connector = pki.client(CLIENT_ID).connector();
    let error = within(connector.connect(http::Uri::from_static("/no-host")))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ConnectionErrorKind::InvalidTarget, "{error}");
    assert!(error.to_string().contains("/no-host"), "{error}");

    let roots =
        secure_channel::transport::WebPkiConnector::with_roots(rustls::RootCertStore::empty());
    let webpki = roots.unwrap();
    for uri in ["http://example.org/plain", "/no-host"] {
        let error = within(webpki.connect(http::Uri::from_static(uri)))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ConnectionErrorKind::InvalidTarget, "{error}");
        assert!(error.to_string().contains(uri), "{error}");
    }
}

#[tokio::test]
async fn silent_and_garbage_clients_do_not_block_good_ones() {
    let mut pki = Pki::new();
    let server = pki.server();
    let listener = server
        .listener_builder()
        .handshake_timeout(Duration::from_secs(60))
        .bind(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let app = Router::new().route(
        "/whoami",
        get(|peer: PeerIdentity| async move { peer.spiffe_id().to_string() }),
    );
    tokio::spawn(async move { secure_channel::integration::axum::serve(listener, app).await });

    // Connects and sends nothing, for longer than the good client needs.
    let _silent = TcpStream::connect(addr).await.unwrap();
    // Sends half a ClientHello and stalls.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    // Sends garbage instead of a ClientHello: the server closes it.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = within(garbage.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("200"),
        "garbage must not be served"
    );

    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(pki.client(CLIENT_ID).connector());
    let (status, body, _) = get_text(&client, &format!("https://{addr}/whoami"))
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, CLIENT_ID));
}

#[tokio::test]
async fn handshake_timeout_closes_silent_clients() {
    let mut pki = Pki::new();
    let server = pki.server();
    let mut listener = server
        .listener_builder()
        .handshake_timeout(Duration::from_millis(200))
        .bind(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    // The server gives up on the handshake and closes: EOF (or reset) well before STEP.
    let read = within(silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn two_hundred_concurrent_handshakes_all_succeed() {
    let mut pki = Pki::new();
    let mut listener = server_listener(&mut pki).await;
    let addr = listener.local_addr();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(b"ok").await;
                let _ = stream.shutdown().await;
            });
        }
    });
    let client = pki.client(CLIENT_ID);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut stream = client.connect_tcp(addr).await?;
                let mut answer = String::new();
                stream
                    .read_to_string(&mut answer)
                    .await
                    .map_err(ConnectionError::Handshake)?;
                Ok::<_, ConnectionError>(answer)
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        if within(task).await.unwrap().unwrap() == "ok" {
            ok += 1;
        }
    }
    assert_eq!(ok, 200);
}

#[tokio::test]
async fn hyper_serve_graceful_shutdown_finishes_in_flight_requests() {
    let mut pki = Pki::new();
    let listener = server_listener(&mut pki).await;
    let addr = listener.local_addr();
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (started2, release2) = (started.clone(), release.clone());
    let service = tower::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let (started, release) = (started2.clone(), release2.clone());
        async move {
            let caller = request
                .extensions()
                .get::<PeerIdentity>()
                .unwrap()
                .spiffe_id()
                .to_string();
            started.notify_one();
            release.notified().await;
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(caller))))
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(
        secure_channel::integration::hyper::serve(listener, service).with_graceful_shutdown(
            async move {
                let _ = stop_rx.await;
            },
        ),
    );

    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(pki.client(CLIENT_ID).connector());
    let url = format!("https://{addr}/slow");
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { get_text(&client, &url).await }
    });
    within(started.notified()).await;
    stop_tx.send(()).unwrap();
    release.notify_one();
    // The request in flight completes, and then the server returns.
    let (status, body, _) = within(in_flight).await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, CLIENT_ID));
    within(serving).await.unwrap().unwrap();
}

#[tokio::test]
async fn hyper_serve_gives_each_connection_its_own_extension() {
    let mut pki = Pki::new();
    let listener = server_listener(&mut pki).await;
    let addr = listener.local_addr();
    /// The number of the connection a request came on.
    #[derive(Clone)]
    struct Connection(usize);
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let service = tower::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
        let number = request.extensions().get::<Connection>().map(|c| c.0);
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(format!(
            "{number:?}"
        )))))
    });
    tokio::spawn(
        secure_channel::integration::hyper::serve(listener, service)
            .connection_extension(move || {
                Connection(accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
            })
            .into_future(),
    );
    let url = format!("https://{addr}/");
    let mut seen = Vec::new();
    // Two clients, so two connections; each keeps its connection for its second request.
    for _ in 0..2 {
        let client = Client::builder(TokioExecutor::new())
            .build::<_, Empty<Bytes>>(pki.client(CLIENT_ID).connector());
        for _ in 0..2 {
            let (status, body, _) = get_text(&client, &url).await.unwrap();
            assert_eq!(status, 200);
            seen.push(body);
        }
    }
    assert_eq!(seen, ["Some(0)", "Some(0)", "Some(1)", "Some(1)"]);
}

#[tokio::test]
async fn a_connection_extension_never_replaces_the_verified_peer() {
    let mut pki = Pki::new();
    // A verified identity of another workload, offered as every connection's own value.
    let impostor = peer_identity_of(&pki.ca, "spiffe://example.org/impostor").await;
    let listener = server_listener(&mut pki).await;
    let addr = listener.local_addr();
    let service = tower::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
        let peer = request
            .extensions()
            .get::<PeerIdentity>()
            .map(|p| p.spiffe_id().to_string());
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(format!(
            "{peer:?}"
        )))))
    });
    tokio::spawn(
        secure_channel::integration::hyper::serve(listener, service)
            .connection_extension(move || impostor.clone())
            .into_future(),
    );
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(pki.client(CLIENT_ID).connector());
    let (status, body, _) = get_text(&client, &format!("https://{addr}/"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, format!("Some({CLIENT_ID:?})"));
}

#[tokio::test]
async fn axum_handlers_get_the_identity_and_the_client_address() {
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;

    let mut pki = Pki::new();
    let listener = pki
        .server()
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let app = Router::new()
        .route(
            "/peer",
            get(
                |peer: PeerIdentity, ConnectInfo(address): ConnectInfo<SocketAddr>| async move {
                    format!("{} {address}", peer.spiffe_id())
                },
            ),
        )
        .route(
            "/whoami",
            get(|peer: PeerIdentity| async move { peer.spiffe_id().to_string() }),
        );
    tokio::spawn(secure_channel::integration::axum::serve(listener, app).into_future());

    let channel = pki.client(CLIENT_ID);
    for (path, expected) in [("/peer", None), ("/whoami", Some(CLIENT_ID.to_owned()))] {
        let tcp = within(TcpStream::connect(addr)).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let mut stream = within(channel.connect(
            rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
            tcp,
        ))
        .await
        .unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        within(stream.write_all(request.as_bytes())).await.unwrap();
        let mut response = String::new();
        within(stream.read_to_string(&mut response)).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        let expected = expected.unwrap_or_else(|| format!("{CLIENT_ID} {local}"));
        assert_eq!(body, expected);
    }
}

/// `expect_server_at` is found under every spelling of the host that reaches the same server,
/// over real TLS: the narrow override applies, never the channel's broader default (which
/// would accept this server).
#[tokio::test]
async fn expect_server_at_applies_to_every_spelling_of_the_authority() {
    let mut pki = Pki::new();
    let server = pki.server();
    let (v4, _) = axum_server(&server).await;
    let v6_listener = server
        .listener(TcpListener::bind("[::1]:0").await.unwrap())
        .unwrap();
    let v6 = v6_listener.local_addr();
    let app = Router::new().route(
        "/whoami",
        get(|peer: PeerIdentity| async move { peer.spiffe_id().to_string() }),
    );
    tokio::spawn(async move { secure_channel::integration::axum::serve(v6_listener, app).await });
    // The default accepts any server of the trust domain; the overrides only `payments`.
    let channel = pki.channel(CLIENT_ID, |b| b.expect_server("spiffe://example.org/*"));
    let (p4, p6) = (v4.port(), v6.port());
    let cases = [
        (format!("localhost:{p4}"), "LOCALHOST"),
        // (A trailing dot in the request is folded the same way, see the unit tests; the
        // sandbox's resolver may not resolve `localhost.`.)
        (format!("localhost.:{p4}"), "LOCALHOST"),
        (format!("LocalHost.:{p4}"), "localhost"),
        (format!("127.0.0.1:{p4}"), "[::ffff:127.0.0.1]"),
        (format!("[::ffff:7f00:1]:{p4}"), "127.0.0.1"),
        (format!("[::1]:{p6}"), "[0:0:0:0:0:0:0:1]"),
        (format!("[0000:0::1]:{p6}"), "[::1]"),
    ];
    for (registered, host) in cases {
        let port = if host.contains(':') && !host.contains("ffff") {
            p6
        } else {
            p4
        };
        let url = format!("https://{host}:{port}/whoami");
        // The default alone accepts this server under this spelling...
        let client =
            Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(channel.connector());
        let (status, _, _) = get_text(&client, &url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:?}"));
        assert_eq!(status.as_u16(), 200, "{url}");
        // ...the override registered under another spelling refuses it.
        let connector = channel
            .connector()
            .expect_server_at(&registered, "spiffe://example.org/payments")
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
        let error = get_text(&client, &url).await.unwrap_err();
        match crate_error(&error) {
            Some(ConnectionError::PeerRejected(PeerRejection::NotAllowed { expected, .. })) => {
                assert_eq!(
                    expected.to_string(),
                    "[spiffe://example.org/payments]",
                    "{registered} / {url}"
                )
            }
            other => panic!("{registered} / {url}: expected NotAllowed, got {other:?}"),
        }
    }
}

/// `count` TCP connections to `addr` from 127.0.0.2 (another source than the real clients'
/// 127.0.0.1) that send nothing; kept open while held.
async fn silent_connections(addr: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut silent = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        silent.push(within(socket.connect(addr)).await.unwrap());
    }
    silent
}

/// Serves `/whoami` on `listener`.
fn serve_whoami(listener: secure_channel::SecureListener) {
    let app = Router::new().route(
        "/whoami",
        get(|peer: PeerIdentity| async move { peer.spiffe_id().to_string() }),
    );
    tokio::spawn(async move { secure_channel::integration::axum::serve(listener, app).await });
}

#[tokio::test]
async fn hundreds_of_silent_connections_do_not_stop_a_real_client() {
    let mut pki = Pki::new();
    let listener = pki
        .server()
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    serve_whoami(listener);
    // More silent connections than the default 512 handshake slots.
    let _silent = silent_connections(addr, 600).await;
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(pki.client(CLIENT_ID).connector());
    // Well within the default 10 s handshake timeout that used to be the only way out.
    let url = format!("https://{addr}/whoami");
    let (status, body, _) = tokio::time::timeout(Duration::from_secs(6), get_text(&client, &url))
        .await
        .expect("the real client waited for the silent ones")
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, CLIENT_ID));
}

#[tokio::test]
async fn one_source_cannot_take_every_handshake_slot() {
    let mut pki = Pki::new();
    // Generous timeouts: only the cap per source can free slots for the real client in time.
    let listener = pki
        .server()
        .listener_builder()
        .max_concurrent_handshakes(16)
        .max_handshakes_per_source(4)
        .client_hello_timeout(Duration::from_secs(60))
        .handshake_timeout(Duration::from_secs(60))
        .bind(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    serve_whoami(listener);
    let _silent = silent_connections(addr, 200).await;
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(pki.client(CLIENT_ID).connector());
    let (status, body, _) = get_text(&client, &format!("https://{addr}/whoami"))
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, CLIENT_ID));
}

#[tokio::test]
async fn a_silent_client_gives_its_slot_back_at_the_client_hello_deadline() {
    let mut pki = Pki::new();
    // One minute for the handshake, 200 ms for its ClientHello, no cap per source to speak of.
    let listener = pki
        .server()
        .listener_builder()
        .max_concurrent_handshakes(4)
        .max_handshakes_per_source(1000)
        .client_hello_timeout(Duration::from_millis(200))
        .handshake_timeout(Duration::from_secs(60))
        .bind(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let stats = listener.stats();
    serve_whoami(listener);
    let mut silent = silent_connections(addr, 40).await;
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(pki.client(CLIENT_ID).connector());
    let (status, body, _) = get_text(&client, &format!("https://{addr}/whoami"))
        .await
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, CLIENT_ID));
    // The silent ones were closed (EOF or reset), long before the handshake timeout.
    let mut buf = [0u8; 1];
    let read = within(silent[0].read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(stats.failed_handshakes() >= 1);
}

#[tokio::test]
async fn a_refused_client_gets_the_refusal_from_hyper_every_time() {
    let mut pki = Pki::new();
    let (addr, _) = axum_server(&pki.server()).await;
    let intruder = pki.client("spiffe://example.org/batch");
    let url = format!("https://{addr}/whoami");
    // HTTP/2 and HTTP/1.1, fresh pools: the same typed error each time, never one of hyper's
    // connection errors.
    for connector in [intruder.connector(), intruder.connector().http1_only()]
        .into_iter()
        .cycle()
        .take(20)
    {
        let client = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
        let error = get_text(&client, &url).await.unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        match crate_error(&error) {
            Some(ConnectionError::RefusedByServer { own_id, alert }) => {
                assert_eq!(own_id.to_string(), "spiffe://example.org/batch");
                assert_eq!(*alert, rustls::AlertDescription::AccessDenied);
            }
            other => panic!("expected RefusedByServer, got {other:?} from {error:?}"),
        }
    }
}

/// A client transport that sends its first flight (the ClientHello) at once and holds every
/// later write back for `delay` once: a slow client, not a silent one.
struct SlowAfterHello {
    io: TcpStream,
    writes: usize,
    delay: Duration,
    held: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl tokio::io::AsyncRead for SlowAfterHello {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SlowAfterHello {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.writes >= 1 {
            let delay = self.delay;
            let held = self
                .held
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            std::task::ready!(held.as_mut().poll(cx));
        }
        self.writes += 1;
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn the_client_hello_deadline_does_not_cut_a_slow_handshake_short() {
    let mut pki = Pki::new();
    let mut listener = pki
        .server()
        .listener_builder()
        .client_hello_timeout(Duration::from_millis(200))
        .handshake_timeout(Duration::from_secs(30))
        .bind(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let client = pki.client(CLIENT_ID);
    let tcp = within(TcpStream::connect(addr)).await.unwrap();
    // The client's second flight comes well after the ClientHello deadline.
    let slow = SlowAfterHello {
        io: tcp,
        writes: 0,
        delay: Duration::from_millis(600),
        held: None,
    };
    let name = rustls_pki_types::ServerName::try_from("api.example.org").unwrap();
    let (connected, accepted) = tokio::join!(within(client.connect(name, slow)), async {
        within(listener.accept()).await
    });
    connected.unwrap();
    let (stream, _) = accepted.unwrap();
    assert_eq!(stream.peer_identity().spiffe_id().to_string(), CLIENT_ID);
}
