//! Shared helpers for the integration tests: loopback servers, raw (foreign) rustls peers, and
//! bounded waits.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use secure_channel::testkit::{DevCa, IssuedSvid};
use secure_channel::{
    ConnectionError as Error, MemorySource, PeerIdentity, SecureChannel, SecureStream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound for any single network step in a test.
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test if it takes longer than [`STEP`].
pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .expect("test step timed out")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "secure_channel=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A server that accepts `count` connections on 127.0.0.1 with `channel`; for each, writes the
/// caller's SPIFFE ID followed by a newline, then echoes lines until EOF. Each accept result is
/// sent back through the returned handle.
pub struct TestServer {
    pub addr: SocketAddr,
    pub results: tokio::sync::mpsc::UnboundedReceiver<Result<String, Error>>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start(channel: SecureChannel) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, results) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let channel = channel.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match channel.accept(tcp).await {
                        Ok(stream) => {
                            let id = stream.peer_identity().spiffe_id().to_string();
                            let _ = tx.send(Ok(id.clone()));
                            echo(stream, &id).await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            }
        });
        Self {
            addr,
            results,
            task,
        }
    }

    /// The result of the next accepted handshake.
    pub async fn next(&mut self) -> Result<String, Error> {
        within(self.results.recv())
            .await
            .expect("server task ended")
    }
}

/// Greets the peer with `id` and a newline, then echoes until EOF.
pub async fn echo(mut stream: SecureStream<TcpStream>, id: &str) {
    if stream
        .write_all(format!("{id}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut buf = [0u8; 1024];
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
}

/// Reads the greeting line the [`TestServer`] sends.
pub async fn read_line<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = within(stream.read(&mut byte)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        out.push(byte[0]);
    }
}

/// Sends a line and expects it echoed.
pub async fn round_trip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    line: &str,
) -> std::io::Result<()> {
    within(stream.write_all(format!("{line}\n").as_bytes())).await?;
    let echoed = read_line(stream).await?;
    assert_eq!(echoed, line);
    Ok(())
}

/// A foreign TLS client built on plain rustls that presents any certificate (or none) and
/// accepts any server: the attacker's or a misconfigured peer's view.
pub fn raw_client_config(
    identity: Option<(&IssuedSvid, bool)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let chain = identity.map(|(svid, _)| (svid.chain().to_vec(), svid));
    match chain {
        Some((chain, svid)) => raw_client_config_with_chain(Some((chain, svid)), versions),
        None => raw_client_config_with_chain(None, versions),
    }
}

/// [`raw_client_config`] presenting `chain` (leaf first, any intermediates, junk included) with
/// the key of `svid`.
pub fn raw_client_config_with_chain(
    identity: Option<(Vec<CertificateDer<'static>>, &IssuedSvid)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    raw_client_config_with_provider(
        identity,
        versions,
        rustls::crypto::aws_lc_rs::default_provider(),
    )
}

/// [`raw_client_config_with_chain`] with another crypto provider (other key exchange groups).
pub fn raw_client_config_with_provider(
    identity: Option<(Vec<CertificateDer<'static>>, &IssuedSvid)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    provider: rustls::crypto::CryptoProvider,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(provider);
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer));
    let config = match identity {
        Some((chain, svid)) => builder
            .with_client_auth_cert(chain, PrivateKeyDer::Pkcs8(svid.key().clone_key()))
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Connects a raw rustls client to `addr` and reads the greeting: Ok(caller id as the server saw
/// it) or the client-side error.
pub async fn raw_connect(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> std::io::Result<String> {
    let tcp = within(TcpStream::connect(addr)).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut stream =
        within(connector.connect(ServerName::try_from("localhost").unwrap(), tcp)).await?;
    read_line(&mut stream).await
}

#[derive(Debug)]
struct AcceptAnyServer;

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A development CA, panicking on failure (tests only).
pub fn ca(trust_domain: &str) -> DevCa {
    DevCa::new(trust_domain).unwrap()
}

/// A memory source presenting `svid` and trusting `ca`'s bundle.
pub fn source_of(ca: &DevCa, svid: &IssuedSvid) -> MemorySource {
    MemorySource::new(secure_channel::Credentials::new(
        svid.to_svid().unwrap(),
        secure_channel::TrustBundles::new().with(ca.bundle().unwrap()),
    ))
}

/// A clock that tests can move, for the channel's and validators' `time_provider`.
#[derive(Debug)]
pub struct TestClock(std::sync::Mutex<std::time::SystemTime>);

impl TestClock {
    pub fn at(now: std::time::SystemTime) -> Self {
        Self(std::sync::Mutex::new(now))
    }

    pub fn set(&self, now: std::time::SystemTime) {
        *self.0.lock().unwrap() = now;
    }
}

impl rustls::time_provider::TimeProvider for TestClock {
    fn current_time(&self) -> Option<UnixTime> {
        let now = *self.0.lock().unwrap();
        Some(UnixTime::since_unix_epoch(
            now.duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap(),
        ))
    }
}

/// The server ID the [`Pki`] fixture's server uses.
pub const PKI_SERVER_ID: &str = "spiffe://example.org/api";
/// The client ID the [`Pki`] fixture's server allows.
pub const PKI_CLIENT_ID: &str = "spiffe://example.org/web";

/// One development CA and the sources of the channels made from it (kept alive with them).
pub struct Pki {
    pub ca: DevCa,
    pub sources: Vec<secure_channel::MemorySource>,
}

impl Pki {
    pub fn new() -> Self {
        Self {
            ca: DevCa::new("example.org").unwrap(),
            sources: Vec::new(),
        }
    }

    /// A channel for `id`, configured by `configure`.
    pub fn channel(
        &mut self,
        id: &str,
        configure: impl FnOnce(
            secure_channel::SecureChannelBuilder,
        ) -> secure_channel::SecureChannelBuilder,
    ) -> SecureChannel {
        let source = secure_channel::MemorySource::new(self.ca.credentials(id).unwrap());
        let channel = configure(SecureChannel::builder(&source)).build().unwrap();
        self.sources.push(source);
        channel
    }

    /// The server `PKI_SERVER_ID`, allowing `PKI_CLIENT_ID`.
    pub fn server(&mut self) -> SecureChannel {
        self.channel(PKI_SERVER_ID, |b| b.allow_client(PKI_CLIENT_ID))
    }

    /// A client `id` expecting `PKI_SERVER_ID`.
    pub fn client(&mut self, id: &str) -> SecureChannel {
        self.channel(id, |b| b.expect_server(PKI_SERVER_ID))
    }
}

/// A real `PeerIdentity` for the client `id` of `ca`, obtained the only way there is: a
/// loopback handshake with a server of the same CA.
pub async fn peer_identity_of(ca: &DevCa, id: &str) -> PeerIdentity {
    let server_id = format!("spiffe://{}/api", ca.trust_domain());
    let server_source = MemorySource::new(ca.credentials(&server_id).unwrap());
    let server = SecureChannel::builder(&server_source)
        .allow_client(id)
        .build()
        .unwrap();
    let client_source = MemorySource::new(ca.credentials(id).unwrap());
    let client = SecureChannel::builder(&client_source)
        .expect_server(server_id.as_str())
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = async {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await.unwrap()
    };
    let (stream, _client) = tokio::join!(accept, async { client.connect_tcp(addr).await.unwrap() });
    stream.peer_identity().clone()
}

/// The status, the value of `header` (if any) and the body of a response, read in bounded
/// steps.
pub async fn response_parts(
    response: http::Response<hyper::body::Incoming>,
    header: http::header::HeaderName,
) -> (u16, Option<String>, String) {
    use http_body_util::BodyExt;

    let status = response.status().as_u16();
    let value = response
        .headers()
        .get(header)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (status, value, String::from_utf8_lossy(&body).into_owned())
}

/// Calls `WhoAmI/Get` of the testkit's gRPC service at `addr` as `caller` (an SVID of `ca`),
/// expecting the server `server_id`.
pub async fn grpc_whoami_as(
    ca: &DevCa,
    caller: &str,
    server_id: &str,
    addr: SocketAddr,
) -> Result<String, tonic::Status> {
    let source = MemorySource::new(ca.credentials(caller).unwrap());
    let channel = SecureChannel::builder(&source)
        .expect_server(server_id)
        .build()
        .unwrap();
    let grpc = within(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_with_connector(channel.connector().http2_only()),
    )
    .await
    .unwrap();
    within(secure_channel::testkit::whoami::whoami(grpc)).await
}
