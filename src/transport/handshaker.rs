//! What the transport needs of a channel to run handshakes, handed down by the channel: the TLS
//! configurations, the handshake timeout, and the gate that refuses handshakes once the
//! workload's own SVID has expired.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::identity::AllowList;
use crate::source::CredentialSource;
use crate::source::status::CredentialStatus;
use crate::tls::{SvidVerifier, TlsConfigs};
use crate::transport::error::ConnectionError;
use crate::transport::registry::{CutOffPolicy, Registry, Trigger};
use crate::transport::stream::{self, HandshakeDeadlines, PeerCheck, SecureStream};

/// The transport's handle on a channel's TLS. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Handshaker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: CredentialSource,
    tls: TlsConfigs,
    handshake_timeout: Duration,
    expiry_warning: Duration,
    /// When an expiry warning or error was last logged, to log at most once a minute.
    last_expiry_log: Mutex<Option<Instant>>,
    /// The live connections, re-checked when trust changes.
    registry: Arc<Registry>,
}

/// A client configuration and the verifier that re-validates its resumed sessions.
#[derive(Clone, Debug)]
pub(crate) struct ClientTls {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) verifier: Arc<SvidVerifier>,
}

impl Handshaker {
    /// `triggers` are the changes besides the verifiers' own (the admission policy's) after
    /// which connections are re-checked.
    pub(crate) fn new(
        source: CredentialSource,
        tls: TlsConfigs,
        handshake_timeout: Duration,
        expiry_warning: Duration,
        cut_off: CutOffPolicy,
        triggers: Vec<Trigger>,
    ) -> Self {
        let mut all = tls.clients_verifier.trust_changes();
        all.extend(triggers);
        let registry = Arc::new(Registry::new(cut_off, tls.time(), all));
        Self {
            inner: Arc::new(Inner {
                source,
                tls,
                handshake_timeout,
                expiry_warning,
                last_expiry_log: Mutex::new(None),
                registry,
            }),
        }
    }

    /// The live connections' registry.
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    pub(crate) fn source(&self) -> &CredentialSource {
        &self.inner.source
    }

    pub(crate) fn tls(&self) -> &TlsConfigs {
        &self.inner.tls
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        self.inner.handshake_timeout
    }

    /// The state of the workload's own SVID at the channel's clock.
    pub(crate) fn credential_status(&self) -> CredentialStatus {
        let snapshot = self.inner.source.snapshot();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(self.inner.tls.now().as_secs());
        CredentialStatus::of(snapshot.credentials.svid(), now, self.inner.expiry_warning)
    }

    /// Server side: the handshake on an accepted connection, within `deadlines`.
    pub(crate) async fn accept<IO>(
        &self,
        io: IO,
        deadlines: HandshakeDeadlines,
    ) -> Result<SecureStream<IO>, ConnectionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let tls = self.fresh()?;
        let check = PeerCheck {
            verifier: &tls.clients_verifier,
            registry: &self.inner.registry,
        };
        stream::accept(
            tls.server_for_connection(),
            check,
            || tls.now(),
            io,
            deadlines,
        )
        .await
    }

    /// The channel's own client configuration, expecting the servers it was built to expect.
    pub(crate) fn client(&self) -> ClientTls {
        ClientTls {
            config: self.inner.tls.client.clone(),
            verifier: self.inner.tls.servers_verifier.clone(),
        }
    }

    /// A client configuration expecting `expected` instead, sharing the session cache.
    pub(crate) fn client_expecting(&self, expected: AllowList) -> ClientTls {
        let (config, verifier) = self.inner.tls.client_for(expected);
        ClientTls { config, verifier }
    }

    /// Client side: the handshake on a connected transport.
    pub(crate) async fn connect<IO>(
        &self,
        client: &ClientTls,
        server_name: ServerName<'static>,
        io: IO,
    ) -> Result<SecureStream<IO>, ConnectionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let tls = self.fresh()?;
        let own_id = self.own_id();
        let check = PeerCheck {
            verifier: &client.verifier,
            registry: &self.inner.registry,
        };
        stream::connect(
            tls.client_for_connection(&client.config),
            check,
            || tls.now(),
            server_name,
            io,
            self.inner.handshake_timeout,
            &own_id,
        )
        .await
    }

    /// The TLS configurations, if the channel's own credentials may be used for a handshake:
    /// fails closed once the SVID has expired, and warns while it nears expiry.
    fn fresh(&self) -> Result<&TlsConfigs, ConnectionError> {
        match self.credential_status() {
            CredentialStatus::Valid { .. } => Ok(&self.inner.tls),
            CredentialStatus::ExpiringSoon { not_after } => {
                if self.should_log_expiry() {
                    tracing::warn!(
                        spiffe_id = %self.own_id(),
                        not_after = ?not_after,
                        "SVID expires soon and has not been rotated"
                    );
                }
                Ok(&self.inner.tls)
            }
            CredentialStatus::Expired { not_after } => {
                let spiffe_id = self.own_id();
                if self.should_log_expiry() {
                    tracing::error!(
                        %spiffe_id,
                        not_after = ?not_after,
                        "SVID expired: refusing new handshakes until valid credentials arrive"
                    );
                }
                Err(ConnectionError::CredentialsExpired {
                    spiffe_id,
                    not_after,
                })
            }
        }
    }

    /// The SPIFFE ID of the SVID this workload presents now.
    fn own_id(&self) -> spiffe::SpiffeId {
        self.inner
            .source
            .snapshot()
            .credentials
            .svid()
            .spiffe_id()
            .clone()
    }

    fn should_log_expiry(&self) -> bool {
        let mut last = match self.inner.last_expiry_log.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(60)) {
            return false;
        }
        *last = Some(now);
        true
    }
}
