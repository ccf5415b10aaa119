//! The outbound connector: a `tower::Service<Uri>` for hyper-util's client and tonic channels.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::ConfigError;
use crate::identity::{AllowList, IdMatcher, PeerIdentity};
use crate::transport::error::ConnectionError;
use crate::transport::{ClientTls, Handshaker, SecureStream};

/// Connects to servers over mutual TLS and verifies their SPIFFE ID.
///
/// A `tower::Service<http::Uri>` for `hyper_util::client::legacy::Client` (HTTP/1.1 or HTTP/2 as
/// ALPN decides, pooled by the client) and tonic's `Endpoint::connect_with_connector`. Every
/// connection is TLS whatever the URI scheme (`https://` or, as tonic writes it, `http://`);
/// the server is authenticated by SPIFFE ID, never by the host name in the URI.
///
/// The expected server IDs are the channel's ([`expect_server`]), or, for one authority
/// (`host:port`), those given to [`expect_server_at`](Self::expect_server_at). A mismatch fails
/// the call with [`ConnectionError::PeerRejected`](crate::ConnectionError::PeerRejected) naming the presented and the expected IDs. The
/// server's [`PeerIdentity`] is in the extensions of every response hyper's client returns, and
/// on the [`SecureConnection`].
///
/// When the server stops being trusted (see [`CutOffSignal`](crate::transport::CutOffSignal)),
/// its connections are closed after the channel's grace period. To have hyper-util's pool stop
/// reusing them at once, wrap the client in
/// [`EvictCutOffLayer`](crate::integration::hyper::EvictCutOffLayer).
///
/// [`expect_server`]: crate::SecureChannelBuilder::expect_server
#[derive(Clone)]
pub struct SecureConnector {
    handshaker: Handshaker,
    overrides: Arc<HashMap<String, Override>>,
    alpn: Option<&'static [&'static [u8]]>,
}

#[derive(Clone)]
struct Override {
    expected: AllowList,
    client: ClientTls,
}

impl fmt::Debug for SecureConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let overrides: HashMap<&str, &AllowList> = self
            .overrides
            .iter()
            .map(|(k, v)| (k.as_str(), &v.expected))
            .collect();
        f.debug_struct("SecureConnector")
            .field("overrides", &overrides)
            .finish_non_exhaustive()
    }
}

impl SecureConnector {
    /// A connector for the channel that hands `handshaker` down.
    pub(crate) fn new(handshaker: Handshaker) -> Self {
        Self {
            handshaker,
            overrides: Arc::new(HashMap::new()),
            alpn: None,
        }
    }

    /// For the authority `host:port` (as written in request URIs; the port is required), expect
    /// servers matched by `matcher` instead of the channel's list. May be called several times,
    /// also for the same authority (the matchers add up).
    ///
    /// Every spelling of the host that reaches the same destination finds the override: host
    /// names compare case-insensitively and with or without one trailing dot, IP literals by
    /// address (`[::1]` and `[0:0::1]`; `[::ffff:127.0.0.1]` and `127.0.0.1`).
    pub fn expect_server_at<M>(mut self, authority: &str, matcher: M) -> Result<Self, ConfigError>
    where
        M: TryInto<IdMatcher>,
        M::Error: Into<ConfigError>,
    {
        let matcher = matcher.try_into().map_err(Into::into)?;
        let authority = normalize_authority(authority)?;
        let mut overrides = (*self.overrides).clone();
        let mut expected = overrides
            .get(&authority)
            .map(|o| o.expected.clone())
            .unwrap_or_default();
        expected.push(matcher);
        let client = self.handshaker.client_expecting(expected.clone());
        overrides.insert(authority, Override { expected, client });
        self.overrides = Arc::new(overrides);
        Ok(self)
    }

    /// Offers only `http/1.1` in ALPN (default: `h2` and `http/1.1`, the server choosing).
    pub fn http1_only(mut self) -> Self {
        self.alpn = Some(&[b"http/1.1"]);
        self
    }

    /// Offers only `h2` in ALPN, for HTTP/2-only clients such as tonic.
    pub fn http2_only(mut self) -> Self {
        self.alpn = Some(&[b"h2"]);
        self
    }

    fn with_alpn(&self, config: Arc<ClientConfig>) -> Arc<ClientConfig> {
        match self.alpn {
            None => config,
            Some(protocols) => {
                let mut config = (*config).clone();
                config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
                Arc::new(config)
            }
        }
    }

    /// Connects to `uri` and runs the handshake; what the `Service` implementation does.
    pub async fn connect(&self, uri: Uri) -> Result<SecureConnection, ConnectionError> {
        let invalid = |problem: String| ConnectionError::InvalidUri {
            uri: uri.to_string(),
            problem,
        };
        let host = uri
            .host()
            .ok_or_else(|| invalid("the URI has no host".to_owned()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|e| invalid(format!("host {host:?}: {e}")))?;
        let timeout = self.handshaker.handshake_timeout();
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout)?
            .map_err(|error| ConnectionError::Connect {
                address: format!("{host}:{port}"),
                error,
            })?;
        tcp.set_nodelay(true).map_err(ConnectionError::Handshake)?;
        let mut client = match self.overrides.get(&authority_key(host, port)) {
            Some(o) => o.client.clone(),
            None => self.handshaker.client(),
        };
        client.config = self.with_alpn(client.config);
        let stream = self.handshaker.connect(&client, server_name, tcp).await?;
        Ok(SecureConnection {
            inner: TokioIo::new(stream),
        })
    }
}

fn normalize_authority(authority: &str) -> Result<String, ConfigError> {
    let invalid = |problem: String| ConfigError::InvalidAuthority {
        authority: authority.to_owned(),
        problem,
    };
    let parsed: http::uri::Authority = authority
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
    let port = parsed
        .port_u16()
        .ok_or_else(|| invalid("a port is required (host:port)".to_owned()))?;
    Ok(authority_key(parsed.host(), port))
}

/// The key an override is registered and looked up under: the host in one spelling per
/// destination (see [`canonical_host`]) and the port.
///
/// hyper-util's pool compares authorities case-insensitively, so two spellings of one host
/// share pooled connections: both must meet the same expectation.
fn authority_key(host: &str, port: u16) -> String {
    match canonical_host(host) {
        CanonicalHost::V6(ip) => format!("[{ip}]:{port}"),
        CanonicalHost::Other(host) => format!("{host}:{port}"),
    }
}

enum CanonicalHost {
    V6(Ipv6Addr),
    Other(String),
}

/// One spelling per destination: brackets and one trailing dot removed, names lowercased, IPv6
/// literals in their compressed form, IPv4-mapped IPv6 as IPv4.
///
/// The other IPv4 forms the system resolver accepts (`127.1`, `0x7f.0.0.1`, `2130706433`) need
/// no folding: they are not valid server names (rustls refuses a name whose last label is
/// numeric), so no connection is made to them.
fn canonical_host(host: &str) -> CanonicalHost {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    match host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical()) {
        Some(IpAddr::V6(ip)) => CanonicalHost::V6(ip),
        Some(IpAddr::V4(ip)) => CanonicalHost::Other(ip.to_string()),
        None => CanonicalHost::Other(host.to_ascii_lowercase()),
    }
}

/// The future of a connector call.
pub struct Connecting<C = SecureConnection> {
    inner: Pin<Box<dyn Future<Output = Result<C, ConnectionError>> + Send>>,
}

impl<C> Connecting<C> {
    pub(crate) fn new(
        future: impl Future<Output = Result<C, ConnectionError>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<C> fmt::Debug for Connecting<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connecting")
    }
}

impl<C> Future for Connecting<C> {
    type Output = Result<C, ConnectionError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl tower_service::Service<Uri> for SecureConnector {
    type Response = SecureConnection;
    type Error = ConnectionError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Connecting::new(async move { connector.connect(uri).await })
    }
}

/// A client connection made by [`SecureConnector`], with hyper's I/O traits.
#[derive(Debug)]
pub struct SecureConnection {
    inner: TokioIo<SecureStream<TcpStream>>,
}

impl SecureConnection {
    /// The server's verified identity.
    pub fn peer_identity(&self) -> &PeerIdentity {
        self.inner.inner().peer_identity()
    }

    /// The underlying secure stream.
    pub fn into_inner(self) -> SecureStream<TcpStream> {
        self.inner.into_inner()
    }
}

impl Connection for SecureConnection {
    fn connected(&self) -> Connected {
        let stream = self.inner.inner();
        let connected = Connected::new()
            .extra(stream.peer_identity().clone())
            .extra(stream.cut_off_signal());
        if stream.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

crate::transport::hyper_io::delegate_hyper_io!(SecureConnection);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn host_spellings_of_one_destination_share_a_key() {
        for (spellings, key) in [
            (
                &["localhost", "LOCALHOST", "LocalHost.", "localhost."][..],
                "localhost:8443",
            ),
            (
                &["api.example.org", "API.Example.ORG.", "[api.example.org]"][..],
                "api.example.org:8443",
            ),
            (
                &[
                    "[::1]",
                    "::1",
                    "[0:0:0:0:0:0:0:1]",
                    "[0000::0001]",
                    "[::0.0.0.1]",
                ][..],
                "[::1]:8443",
            ),
            (
                &["[2001:DB8::A]", "[2001:db8:0:0:0:0:0:a]"][..],
                "[2001:db8::a]:8443",
            ),
            (
                &[
                    "127.0.0.1",
                    "127.0.0.1.",
                    "[::ffff:127.0.0.1]",
                    "[::FFFF:7f00:1]",
                ][..],
                "127.0.0.1:8443",
            ),
        ] {
            for spelling in spellings {
                assert_eq!(authority_key(spelling, 8443), key, "{spelling}");
            }
        }
    }

    #[test]
    fn only_one_trailing_dot_is_folded() {
        assert_eq!(authority_key("localhost..", 1), "localhost.:1");
    }

    #[test]
    fn other_ipv4_spellings_are_not_server_names() {
        // Hence never connected to, and in no need of folding.
        for spelling in [
            "127.1",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "2130706433",
            "0x7F000001",
        ] {
            assert!(ServerName::try_from(spelling).is_err(), "{spelling}");
        }
    }

    #[test]
    fn registration_canonicalizes_like_lookup() {
        assert_eq!(
            normalize_authority("LOCALHOST.:8443").unwrap(),
            "localhost:8443"
        );
        assert_eq!(
            normalize_authority("[0:0:0:0:0:0:0:1]:8443").unwrap(),
            "[::1]:8443"
        );
        assert!(normalize_authority("localhost").is_err());
    }
}
