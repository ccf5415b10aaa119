//! An ordinary HTTPS connector with WebPKI server authentication, for talking to services that are
//! not SPIFFE workloads (such as a token issuer's JWKS endpoint).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::error::{ConfigError, Location, read_file};
use crate::source::parse_certificates;
use crate::transport::connector::Connecting;
use crate::transport::error::ConnectionError;

/// Connects over TLS and authenticates the server by the host name in the URI against WebPKI
/// roots: the system's, or given CA certificates. No client certificate is sent, unless the
/// connector came from [`SecureChannel::presenting_svid`](crate::SecureChannel::presenting_svid),
/// which presents the channel's current SVID (mutual TLS with a server that is not a SPIFFE
/// workload, such as an OAuth 2.0 authorization server).
///
/// Only `https` URIs are accepted. TLS 1.3 and 1.2 (rustls defaults), ALPN `http/1.1`.
#[derive(Clone)]
pub struct WebPkiConnector {
    config: Arc<ClientConfig>,
    timeout: std::time::Duration,
}

impl fmt::Debug for WebPkiConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebPkiConnector").finish_non_exhaustive()
    }
}

impl WebPkiConnector {
    /// Trusts the CA certificates in the PEM file `path`.
    pub fn with_ca_file(path: impl AsRef<std::path::Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let location = Location::File(path.to_owned());
        let pem = read_file(path)?;
        let mut roots = RootCertStore::empty();
        for (index, cert) in parse_certificates(&pem, &location)?.into_iter().enumerate() {
            roots
                .add(cert)
                .map_err(|e| ConfigError::InvalidTrustAnchor {
                    location: location.clone(),
                    index,
                    reason: e.to_string(),
                })?;
        }
        Self::with_roots(roots)
    }

    /// Trusts the system's certificate store (as found by `rustls-native-certs`).
    pub fn with_system_roots() -> Result<Self, ConfigError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(ConfigError::InvalidTrustAnchor {
                location: Location::Field("system certificate store"),
                index: 0,
                reason: format!(
                    "no usable CA certificate found ({} errors)",
                    found.errors.len()
                ),
            });
        }
        Self::with_roots(roots)
    }

    /// Trusts `roots`.
    pub fn with_roots(roots: RootCertStore) -> Result<Self, ConfigError> {
        let provider = crate::crypto::default_provider()?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ConfigError::TlsConfig)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            timeout: std::time::Duration::from_secs(10),
        })
    }

    /// The same connector presenting, as its TLS client certificate, what `resolver` resolves
    /// at each handshake.
    pub(crate) fn with_client_certificate(
        mut self,
        resolver: Arc<dyn rustls::client::ResolvesClientCert>,
    ) -> Self {
        let mut config = (*self.config).clone();
        config.client_auth_cert_resolver = resolver;
        self.config = Arc::new(config);
        self
    }

    /// Connects with `config` (its own server authentication), for the SPIFFE bundle
    /// endpoint's `https_spiffe` profile.
    pub(crate) fn with_config(config: Arc<ClientConfig>) -> Self {
        Self {
            config,
            timeout: std::time::Duration::from_secs(10),
        }
    }

    /// Connects to an `https` URI.
    pub async fn connect(&self, uri: Uri) -> Result<WebPkiConnection, ConnectionError> {
        let invalid = |problem: &str| ConnectionError::InvalidUri {
            uri: uri.to_string(),
            problem: problem.to_owned(),
        };
        if uri.scheme_str() != Some("https") {
            return Err(invalid("only https URIs are accepted"));
        }
        let host = uri.host().ok_or_else(|| invalid("the URI has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let name = ServerName::try_from(host.clone()).map_err(|e| invalid(&e.to_string()))?;
        let connect = async {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|error| ConnectionError::Connect {
                    address: format!("{host}:{port}"),
                    error,
                })?;
            tcp.set_nodelay(true).map_err(ConnectionError::Handshake)?;
            tokio_rustls::TlsConnector::from(self.config.clone())
                .connect(name, tcp)
                .await
                .map_err(ConnectionError::Handshake)
        };
        let stream = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout)??;
        Ok(WebPkiConnection {
            inner: TokioIo::new(stream),
        })
    }
}

impl tower_service::Service<Uri> for WebPkiConnector {
    type Response = WebPkiConnection;
    type Error = ConnectionError;
    type Future = Connecting<WebPkiConnection>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Connecting::new(async move { connector.connect(uri).await })
    }
}

/// A connection made by [`WebPkiConnector`].
#[derive(Debug)]
pub struct WebPkiConnection {
    inner: TokioIo<TlsStream<TcpStream>>,
}

impl Connection for WebPkiConnection {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

crate::transport::hyper_io::delegate_hyper_io!(WebPkiConnection);
