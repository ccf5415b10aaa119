//! Operations: metrics, tracing spans, and resource limits that hold while good clients are
//! still served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use secure_channel::PeerIdentity;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/web";

/// Recorded metrics: key and value.
type Recorded = Vec<(metrics::Key, DebugValue)>;

/// One snapshot of the recorder (taking it resets the recorded values).
fn snapshot(snapshotter: &Snapshotter) -> Recorded {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key.key().clone(), value))
        .collect()
}

/// The value of the counter with these labels (0 when absent).
fn counter(snapshot: &[(metrics::Key, DebugValue)], name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(key, _)| {
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(_, value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

fn gauge(snapshot: &[(metrics::Key, DebugValue)], name: &str) -> Option<f64> {
    snapshot.iter().find_map(|(key, value)| match value {
        DebugValue::Gauge(v) if key.name() == name => Some(v.into_inner()),
        _ => None,
    })
}

#[tokio::test]
async fn handshake_credential_and_connection_metrics() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let mut pki = Pki::new();
    let mut server = TestServer::start(pki.server()).await;
    let snap = snapshot(&snapshotter);
    assert!(gauge(&snap, "secure_channel_svid_not_after_seconds").unwrap() > 1.7e9);

    let mut good = within(pki.client(CLIENT_ID).connect_tcp(server.addr))
        .await
        .unwrap();
    read_line(&mut good).await.unwrap();
    server.next().await.unwrap();
    let intruder = pki.client("spiffe://example.org/batch");
    let _ = async {
        read_line(&mut within(intruder.connect_tcp(server.addr)).await?)
            .await
            .map_err(secure_channel::ConnectionError::Handshake)
    }
    .await;
    assert!(server.next().await.is_err());

    let snap = snapshot(&snapshotter);
    // The negotiated key exchange group is a label: hybrid post-quantum by default.
    let accepted = [
        ("side", "server"),
        ("outcome", "accepted"),
        ("reason", "ok"),
        ("group", "X25519MLKEM768"),
    ];
    let refused = [
        ("side", "server"),
        ("outcome", "refused"),
        ("reason", "not_allowed"),
        ("group", "none"),
    ];
    assert_eq!(
        counter(&snap, "secure_channel_handshakes_total", &accepted),
        1
    );
    assert_eq!(
        counter(&snap, "secure_channel_handshakes_total", &refused),
        1
    );
    assert!(
        counter(
            &snap,
            "secure_channel_handshakes_total",
            &[("side", "client"), ("outcome", "accepted")]
        ) >= 1
    );

    // A rotation is counted as an applied reload.
    pki.sources[0].update(pki.ca.credentials(SERVER_ID).unwrap());
    let snap = snapshot(&snapshotter);
    assert_eq!(
        counter(
            &snap,
            "secure_channel_credential_reloads_total",
            &[("source", "memory"), ("outcome", "applied")]
        ),
        1
    );
}

/// A span as recorded: name, fields, parent's name.
type SpanRecord = (String, String, Option<String>);

/// Records span names, fields and parents.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<SpanRecord>>>);

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
        }
        let mut fields = Fields(String::new());
        attrs.record(&mut fields);
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|p| p.name().to_owned());
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_owned(), fields.0, parent));
    }
}

#[tokio::test]
async fn request_spans_are_children_of_the_connection_span() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut pki = Pki::new();
    let server = pki.server();
    let listener = server
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let service = tower::service_fn(|_request: http::Request<hyper::body::Incoming>| async {
        tracing::info!("handling");
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    tokio::spawn(secure_channel::integration::hyper::serve(listener, service).into_future());
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(pki.client(CLIENT_ID).connector());
    for _ in 0..2 {
        let response = within(client.get(format!("https://{addr}/orders/7").parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    let spans = spans.0.lock().unwrap().clone();
    let connection = spans
        .iter()
        .find(|(name, _, _)| name == "connection")
        .expect("a connection span");
    assert!(
        connection.1.contains(&format!("peer={CLIENT_ID}")),
        "{connection:?}"
    );
    assert!(
        connection.1.contains("peer_addr=127.0.0.1:"),
        "{connection:?}"
    );
    let requests: Vec<_> = spans
        .iter()
        .filter(|(name, _, _)| name == "request")
        .collect();
    assert_eq!(requests.len(), 2);
    for request in requests {
        assert_eq!(request.2.as_deref(), Some("connection"), "{request:?}");
        assert!(request.1.contains("path=/orders/7"), "{request:?}");
    }
}

#[tokio::test]
async fn connection_cap_holds_while_connected_clients_are_served() {
    let mut pki = Pki::new();
    let server = pki.server();
    let mut listener = server
        .listener_builder()
        .max_connections(2)
        .bind(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let _ = stream.write_all(b"hi\n").await;
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let client = pki.client(CLIENT_ID);
    let mut first = within(client.connect_tcp(addr)).await.unwrap();
    read_line(&mut first).await.unwrap();
    let mut second = within(client.connect_tcp(addr)).await.unwrap();
    read_line(&mut second).await.unwrap();

    // A third connection is not taken up while two are open...
    let third = tokio::spawn({
        let client = client.clone();
        async move {
            let mut stream = client.connect_tcp(addr).await?;
            read_line(&mut stream)
                .await
                .map_err(secure_channel::ConnectionError::Handshake)?;
            Ok::<_, secure_channel::ConnectionError>(stream)
        }
    });
    let early = tokio::time::timeout(Duration::from_millis(500), async {
        while !third.is_finished() {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(early.is_err(), "the third connection must wait for a slot");
    // ...the connected clients are served meanwhile...
    round_trip(&mut first, "first").await.unwrap();
    round_trip(&mut second, "second").await.unwrap();
    // ...and it proceeds as soon as one closes.
    drop(first);
    let mut third = within(third).await.unwrap().unwrap();
    round_trip(&mut third, "third").await.unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed_active_ones_kept() {
    let mut pki = Pki::new();
    let server = pki.server();
    let mut listener = server
        .listener_builder()
        .idle_timeout(Some(Duration::from_millis(1000)))
        .bind(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let client = pki.client(CLIENT_ID);
    let mut idle = within(client.connect_tcp(addr)).await.unwrap();
    let mut active = within(client.connect_tcp(addr)).await.unwrap();
    // The active client talks every 100 ms for 2 s: twice the idle timeout, with wide margins
    // (the idle close needs two 500 ms ticks without a byte).
    for i in 0..20 {
        round_trip(&mut active, &format!("ping {i}")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The idle one was closed by the server.
    let mut buf = [0u8; 8];
    let read = within(idle.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn oversized_request_headers_get_431_and_good_requests_pass() {
    let mut pki = Pki::new();
    let server = pki.server();
    let listener = server
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let service = tower::service_fn(|request: http::Request<hyper::body::Incoming>| async move {
        let caller = request
            .extensions()
            .get::<PeerIdentity>()
            .unwrap()
            .spiffe_id()
            .to_string();
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(caller))))
    });
    tokio::spawn(
        secure_channel::integration::hyper::serve(listener, service)
            .max_header_size(16 * 1024)
            .into_future(),
    );
    let client = Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(pki.client(CLIENT_ID).connector().http1_only());
    let url = format!("https://{addr}/");
    let huge = http::Request::get(&url)
        .header("x-padding", "a".repeat(64 * 1024))
        .body(Empty::new())
        .unwrap();
    let response = within(client.request(huge)).await.unwrap();
    assert_eq!(response.status(), 431);
    let response = within(client.get(url.parse().unwrap())).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, CLIENT_ID.as_bytes());
}

#[tokio::test]
async fn handshake_cap_holds_and_frees_when_stalled_handshakes_time_out() {
    let mut pki = Pki::new();
    let server = pki.server();
    let mut listener = server
        .listener_builder()
        .max_concurrent_handshakes(1)
        .handshake_timeout(Duration::from_millis(500))
        .bind(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let stats = listener.stats();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"hi\n").await;
        }
    });
    // A client that connects and stalls holds the only handshake slot...
    let _stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    // ...so a good client waits for it (the cap holds), and gets through once the stalled
    // handshake times out and frees the slot.
    let client = pki.client(CLIENT_ID);
    let started = std::time::Instant::now();
    let mut stream = within(client.connect_tcp(addr)).await.unwrap();
    assert_eq!(read_line(&mut stream).await.unwrap(), "hi");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the good client did not wait for the slot"
    );
    assert_eq!(
        stats.failed_handshakes(),
        1,
        "the stalled handshake timed out"
    );
    assert_eq!(stats.accepted(), 1);
}

#[tokio::test]
async fn a_client_that_sends_half_a_header_is_cut_off() {
    let mut pki = Pki::new();
    let server = pki.server();
    let listener = server
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let service = tower::service_fn(|_: http::Request<hyper::body::Incoming>| async move {
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
    });
    tokio::spawn(
        secure_channel::integration::hyper::serve(listener, service)
            .header_read_timeout(Some(Duration::from_millis(300)))
            .into_future(),
    );
    // Over mutual TLS with HTTP/1.1 negotiated, half a header section, then nothing.
    let connection = within(
        pki.client(CLIENT_ID)
            .connector()
            .http1_only()
            .connect(format!("https://{addr}/").parse().unwrap()),
    )
    .await
    .unwrap();
    let mut stream = connection.into_inner();
    assert_eq!(stream.alpn_protocol(), Some(&b"http/1.1"[..]));
    within(stream.write_all(b"GET / HTTP/1.1\r\nhost: api\r\nx-half: "))
        .await
        .unwrap();
    // The server gives up on the header and closes (the idle timeout, 5 minutes, would not):
    // EOF or an error well before STEP, and never a response.
    let mut buf = Vec::new();
    let _ = within(stream.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("200"),
        "half a header must not be served"
    );
}

/// Records the fields of every WARN event on target `secure_channel::transport`.
#[derive(Clone, Default)]
struct TransportWarnings(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for TransportWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
        }
        let metadata = event.metadata();
        if *metadata.level() == tracing::Level::WARN
            && metadata.target() == "secure_channel::transport"
        {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

#[tokio::test]
async fn refused_handshakes_are_logged_briefly_and_rate_limited() {
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = TransportWarnings::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));

    let mut pki = Pki::new();
    let listener = pki
        .server()
        .listener(TcpListener::bind("127.0.0.1:0").await.unwrap())
        .unwrap();
    let addr = listener.local_addr();
    let stats = listener.stats();
    let mut listener = listener;
    tokio::spawn(async move { while listener.accept().await.is_ok() {} });
    let intruder = pki.client("spiffe://example.org/intruder");
    let started = std::time::Instant::now();
    const REFUSED: u64 = 100;
    for _ in 0..REFUSED {
        // Refused by the server (the client may or may not notice before it returns).
        let _ = within(intruder.connect_tcp(addr)).await;
    }
    within(async {
        while stats.failed_handshakes() < REFUSED {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let seconds = started.elapsed().as_secs();

    let lines = warnings.0.lock().unwrap().clone();
    // At most 10 lines a second however many refusals...
    assert!(!lines.is_empty());
    assert!(
        (lines.len() as u64) <= 10 * (seconds + 1) && (lines.len() as u64) < REFUSED,
        "{} lines in {seconds} s",
        lines.len()
    );
    // ...each naming the presented ID and the kind of refusal, never the allow-list.
    for line in &lines {
        assert!(
            line.contains("presented=spiffe://example.org/intruder"),
            "{line}"
        );
        assert!(line.contains("reason=\"not_allowed\""), "{line}");
        assert!(
            !line.contains(CLIENT_ID) && !line.contains("expected"),
            "{line}"
        );
    }
    // The lines left out are counted in a later line once a new second starts.
    if lines.len() > 10 {
        assert!(
            lines.iter().any(|line| !line.contains("suppressed=0")),
            "{lines:?}"
        );
    }
}
