//! Credential expiry: a warning while the SVID nears expiry, fail closed once it has expired,
//! recovery when valid material arrives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secure_channel::identity::{ChainError, PeerRejection};
use secure_channel::testkit::DevCa;
use secure_channel::{
    ConnectionError, CredentialStatus, Credentials, MemorySource, SecureChannel, TrustBundles,
};
use support::*;

const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/web";
const MINUTE: Duration = Duration::from_secs(60);

fn short_lived(ca: &DevCa, id: &str, now: SystemTime, lifetime: Duration) -> Credentials {
    let svid = ca
        .svid(id)
        .validity(now - MINUTE, now + lifetime)
        .issue()
        .unwrap();
    Credentials::new(
        svid.to_svid().unwrap(),
        TrustBundles::new().with(ca.bundle().unwrap()),
    )
}

#[tokio::test]
async fn server_fails_closed_when_its_svid_expires_and_recovers() {
    let ca = DevCa::new("example.org").unwrap();
    let now = SystemTime::now();
    let clock = Arc::new(TestClock::at(now));
    let server_source = MemorySource::new(short_lived(&ca, SERVER_ID, now, 30 * MINUTE));
    let channel = SecureChannel::builder(&server_source)
        .allow_client(CLIENT_ID)
        .time_provider(clock.clone())
        .build()
        .unwrap();
    assert!(matches!(
        channel.credential_status(),
        CredentialStatus::Valid { .. }
    ));
    clock.set(now + 25 * MINUTE);
    assert!(matches!(
        channel.credential_status(),
        CredentialStatus::ExpiringSoon { .. }
    ));

    let mut server = TestServer::start(channel.clone()).await;
    let client_source = MemorySource::new(ca.credentials(CLIENT_ID).unwrap());
    let client = SecureChannel::builder(&client_source)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    // Still valid, if expiring soon: served.
    let mut stream = within(client.connect_tcp(server.addr)).await.unwrap();
    assert_eq!(read_line(&mut stream).await.unwrap(), CLIENT_ID);
    assert_eq!(server.next().await.unwrap(), CLIENT_ID);

    // Past expiry: no handshake with the expired SVID, and a clear error on the server.
    clock.set(now + 31 * MINUTE);
    assert!(matches!(
        channel.credential_status(),
        CredentialStatus::Expired { .. }
    ));
    assert!(within(client.connect_tcp(server.addr)).await.is_err());
    match server.next().await {
        Err(error @ ConnectionError::CredentialsExpired { .. }) => {
            assert!(error.to_string().contains(SERVER_ID), "{error}");
        }
        other => panic!("expected CredentialsExpired, got {other:?}"),
    }
    // The connection made before expiry keeps working.
    round_trip(&mut stream, "still here").await.unwrap();

    // Valid material arrives: the channel recovers by itself.
    server_source.update(short_lived(&ca, SERVER_ID, now, 90 * MINUTE));
    assert!(matches!(
        channel.credential_status(),
        CredentialStatus::Valid { .. }
    ));
    let mut stream = within(client.connect_tcp(server.addr)).await.unwrap();
    assert_eq!(read_line(&mut stream).await.unwrap(), CLIENT_ID);
}

#[tokio::test]
async fn client_refuses_to_connect_with_an_expired_svid() {
    let ca = DevCa::new("example.org").unwrap();
    let now = SystemTime::now();
    let clock = Arc::new(TestClock::at(now + 10 * MINUTE));
    let server_source = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let server = TestServer::start(
        SecureChannel::builder(&server_source)
            .allow_client(CLIENT_ID)
            .build()
            .unwrap(),
    )
    .await;
    let client_source = MemorySource::new(short_lived(&ca, CLIENT_ID, now, 5 * MINUTE));
    let client = SecureChannel::builder(&client_source)
        .expect_server(SERVER_ID)
        .time_provider(clock)
        .build()
        .unwrap();
    match within(client.connect_tcp(server.addr)).await {
        Err(ConnectionError::CredentialsExpired { spiffe_id, .. }) => {
            assert_eq!(spiffe_id.to_string(), CLIENT_ID)
        }
        other => panic!("expected CredentialsExpired, got {other:?}"),
    }
}

#[tokio::test]
async fn the_rustls_config_never_presents_an_expired_svid() {
    // Serving straight from `server_config()` skips the channel's check; the certificate
    // resolver still refuses to present an expired SVID.
    let ca = DevCa::new("example.org").unwrap();
    let now = SystemTime::now();
    let clock = Arc::new(TestClock::at(now + 10 * MINUTE));
    let source = MemorySource::new(short_lived(&ca, SERVER_ID, now, 5 * MINUTE));
    let channel = SecureChannel::builder(&source)
        .allow_client(CLIENT_ID)
        .time_provider(clock)
        .build()
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(channel.server_config());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(|_| ())
    });
    let svid = ca.svid(CLIENT_ID).issue().unwrap();
    let config = raw_client_config(Some((&svid, true)), &[&rustls::version::TLS13]);
    assert!(raw_connect(config, addr).await.is_err());
    let error = within(server).await.unwrap().unwrap_err();
    assert!(error.to_string().contains("certificate"), "{error}");
}

/// A transport that moves `clock` to the time in `jump` (if one is set) when the first bytes
/// arrive: time passing while a handshake runs.
#[derive(Debug)]
struct ClockJumpsOnFirstRead {
    inner: tokio::net::TcpStream,
    clock: Arc<TestClock>,
    jump: Option<SystemTime>,
}

impl tokio::io::AsyncRead for ClockJumpsOnFirstRead {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before
            && let Some(at) = this.jump.take()
        {
            this.clock.set(at);
        }
        poll
    }
}

impl tokio::io::AsyncWrite for ClockJumpsOnFirstRead {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_resumed_session_is_checked_at_the_time_the_handshake_ends() {
    // The client's leaf expires while the resumed handshake runs (the clock jumps when the
    // ClientHello arrives): the re-validation must use a clock read after the handshake, and
    // refuse, not the one read before it.
    let ca = DevCa::new("example.org").unwrap();
    let now = SystemTime::now();
    let clock = Arc::new(TestClock::at(now));
    let server_source = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let channel = SecureChannel::builder(&server_source)
        .allow_client(CLIENT_ID)
        .time_provider(clock.clone())
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (jumps, mut next_jump) = tokio::sync::mpsc::unbounded_channel::<Option<SystemTime>>();
    let (verdicts, mut verdict) = tokio::sync::mpsc::unbounded_channel();
    let server_clock = clock.clone();
    let server = tokio::spawn(async move {
        while let Some(jump) = next_jump.recv().await {
            let (tcp, _) = listener.accept().await.unwrap();
            let io = ClockJumpsOnFirstRead {
                inner: tcp,
                clock: server_clock.clone(),
                jump,
            };
            match channel.accept(io).await {
                Ok(mut stream) => {
                    let kind = stream.handshake_kind();
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, b"hello\n").await;
                    let _ = verdicts.send(Ok(kind));
                    // Hold the connection until the client has read the greeting and hung up.
                    let mut rest = [0u8; 16];
                    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut rest).await;
                }
                Err(error) => {
                    let _ = verdicts.send(Err(error));
                }
            }
        }
    });
    let client_source = MemorySource::new(short_lived(&ca, CLIENT_ID, now, 10 * MINUTE));
    let client = SecureChannel::builder(&client_source)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();

    // A full handshake at `now`, which leaves the client a session to resume.
    jumps.send(None).unwrap();
    let mut stream = within(client.connect_tcp(addr)).await.unwrap();
    assert_eq!(read_line(&mut stream).await.unwrap(), "hello");
    drop(stream);
    let first = within(verdict.recv()).await.unwrap();
    assert_eq!(first.unwrap(), Some(rustls::HandshakeKind::Full));

    // The resumed handshake starts at `now` and ends after the client's leaf expired.
    jumps.send(Some(now + 20 * MINUTE)).unwrap();
    let attempt = async {
        let mut stream = within(client.connect_tcp(addr)).await?;
        read_line(&mut stream)
            .await
            .map_err(ConnectionError::Handshake)
    };
    assert!(attempt.await.is_err());
    match within(verdict.recv()).await.unwrap() {
        Err(ConnectionError::PeerRejected(PeerRejection::ResumedSessionInvalid(inner))) => {
            assert!(
                matches!(
                    *inner,
                    PeerRejection::InvalidChain {
                        reason: ChainError::Expired { .. },
                        ..
                    }
                ),
                "{inner:?}"
            );
        }
        other => panic!("expected the resumed session to be refused, got {other:?}"),
    }
    server.abort();
}

#[tokio::test]
async fn a_resumed_session_is_checked_at_the_time_the_handshake_ends_client_side() {
    // The same on the client: the server's leaf expires while the resumed handshake runs.
    let ca = DevCa::new("example.org").unwrap();
    let now = SystemTime::now();
    let clock = Arc::new(TestClock::at(now));
    let server_source = MemorySource::new(short_lived(&ca, SERVER_ID, now, 10 * MINUTE));
    let mut server = TestServer::start(
        SecureChannel::builder(&server_source)
            .allow_client(CLIENT_ID)
            .build()
            .unwrap(),
    )
    .await;
    let client_source = MemorySource::new(ca.credentials(CLIENT_ID).unwrap());
    let client = SecureChannel::builder(&client_source)
        .expect_server(SERVER_ID)
        .time_provider(clock.clone())
        .build()
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("api.example.org").unwrap();
    let addr = server.addr;
    let connect = |jump| {
        let (client, clock, name) = (&client, clock.clone(), name.clone());
        async move {
            let tcp = within(tokio::net::TcpStream::connect(addr))
                .await
                .map_err(ConnectionError::Handshake)?;
            let io = ClockJumpsOnFirstRead {
                inner: tcp,
                clock,
                jump,
            };
            within(client.connect(name, io)).await
        }
    };

    let mut stream = connect(None).await.unwrap();
    assert_eq!(stream.handshake_kind(), Some(rustls::HandshakeKind::Full));
    assert_eq!(read_line(&mut stream).await.unwrap(), CLIENT_ID);
    assert_eq!(server.next().await.unwrap(), CLIENT_ID);
    drop(stream);

    match connect(Some(now + 20 * MINUTE)).await {
        Err(ConnectionError::PeerRejected(PeerRejection::ResumedSessionInvalid(inner))) => {
            assert!(
                matches!(
                    *inner,
                    PeerRejection::InvalidChain {
                        reason: ChainError::Expired { .. },
                        ..
                    }
                ),
                "{inner:?}"
            );
        }
        other => panic!("expected the resumed session to be refused, got {other:?}"),
    }
}

#[test]
fn a_short_lived_svid_rotated_at_half_life_is_not_expiring_soon() {
    // SPIRE-style: a 30 s SVID, renewed at half its lifetime. The default 10-minute warning
    // would report every such SVID; a quarter of the lifetime is the bound.
    let ca = DevCa::new("example.org").unwrap();
    let now = SystemTime::now();
    let clock = Arc::new(TestClock::at(now));
    let svid = ca
        .svid(SERVER_ID)
        .validity(now, now + Duration::from_secs(30))
        .issue()
        .unwrap();
    let source = MemorySource::new(Credentials::new(
        svid.to_svid().unwrap(),
        TrustBundles::new().with(ca.bundle().unwrap()),
    ));
    let channel = SecureChannel::builder(&source)
        .allow_client(CLIENT_ID)
        .time_provider(clock.clone())
        .build()
        .unwrap();
    clock.set(now + Duration::from_secs(15));
    assert!(
        matches!(channel.credential_status(), CredentialStatus::Valid { .. }),
        "{:?}",
        channel.credential_status()
    );
    // Past three quarters without a rotation: expiring soon.
    clock.set(now + Duration::from_secs(23));
    assert!(matches!(
        channel.credential_status(),
        CredentialStatus::ExpiringSoon { .. }
    ));
}
