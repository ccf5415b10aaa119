//! [`SecureChannel`] and its builder: the one entry point that wires the rooms together.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::time_provider::{DefaultTimeProvider, TimeProvider};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::identity::{AllowList, IdMatcher, PeerAdmission};
use crate::source::CredentialSource;
use crate::source::status::CredentialStatus;
use crate::tls::{SvidResolver, TlsConfigs, TlsPolicy};
use crate::transport::{
    CutOffPolicy, HandshakeDeadlines, Handshaker, SecureConnector, SecureListener,
    SecureListenerBuilder, SecureStream, Trigger, WebPkiConnector,
};
use crate::{ConfigError, ConnectionError};

/// Default bound on one TLS handshake.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A workload's secure channel: its SPIFFE identity, whom it trusts, and whom it talks to.
///
/// Built once with [`SecureChannel::builder`] and cheap to clone. Servers
/// [`accept`](Self::accept) connections from the clients allowed by
/// [`allow_client`](SecureChannelBuilder::allow_client); clients [`connect`](Self::connect) to
/// servers expected by [`expect_server`](SecureChannelBuilder::expect_server). Both sides present
/// the current SVID of the [`CredentialSource`], and verify the peer's against the current trust
/// bundles, on every handshake.
#[derive(Clone, Debug)]
pub struct SecureChannel {
    handshaker: Handshaker,
}

/// Default: warn when the SVID expires within this time and has not been rotated.
const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(10 * 60);

/// Builds a [`SecureChannel`]. Nothing is allowed until said: a channel without
/// [`allow_client`](Self::allow_client) accepts no client, and one without
/// [`expect_server`](Self::expect_server) connects to no server.
#[must_use]
pub struct SecureChannelBuilder {
    source: CredentialSource,
    allowed_clients: AllowList,
    admission: Option<Arc<dyn PeerAdmission>>,
    expected_servers: AllowList,
    revocation_lists: Option<crate::revocation::RevocationLists>,
    deny_lists: Vec<crate::revocation::DenyList>,
    policy: TlsPolicy,
    handshake_timeout: Duration,
    expiry_warning: Duration,
    time: Arc<dyn TimeProvider>,
    cut_off: CutOffPolicy,
    /// Changes after which connections are re-checked, besides the credentials'.
    triggers: Vec<Trigger>,
    first_error: Option<ConfigError>,
}

impl std::fmt::Debug for SecureChannelBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureChannelBuilder")
            .field("source", &self.source)
            .field("allowed_clients", &self.allowed_clients)
            .field("expected_servers", &self.expected_servers)
            .finish_non_exhaustive()
    }
}

impl SecureChannel {
    /// Starts building a channel whose identity and trust come from `source`.
    pub fn builder(source: impl Into<CredentialSource>) -> SecureChannelBuilder {
        SecureChannelBuilder {
            source: source.into(),
            allowed_clients: AllowList::deny_all(),
            admission: None,
            expected_servers: AllowList::deny_all(),
            revocation_lists: None,
            deny_lists: Vec::new(),
            policy: TlsPolicy::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            expiry_warning: DEFAULT_EXPIRY_WARNING,
            time: Arc::new(DefaultTimeProvider),
            cut_off: CutOffPolicy::default(),
            triggers: Vec::new(),
            first_error: None,
        }
    }

    /// Server side: runs the TLS handshake on an accepted connection.
    ///
    /// The client must present an SVID that validates against the bundle of its trust domain and
    /// whose ID is allowed; a resumed session is re-validated against the current bundles.
    pub async fn accept<IO>(&self, io: IO) -> Result<SecureStream<IO>, ConnectionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        self.accept_with_timeout(io, self.handshaker.handshake_timeout())
            .await
    }

    /// Server side, with a handshake timeout other than the channel's.
    pub async fn accept_with_timeout<IO>(
        &self,
        io: IO,
        timeout: Duration,
    ) -> Result<SecureStream<IO>, ConnectionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let deadlines = HandshakeDeadlines {
            total: timeout,
            client_hello: None,
        };
        self.handshaker.accept(io, deadlines).await
    }

    /// Client side: runs the TLS handshake on a connected transport.
    ///
    /// `server_name` is sent as SNI (when it is a DNS name) and keys the session cache; it is
    /// never used to authenticate the server, which must present an SVID whose ID is expected.
    pub async fn connect<IO>(
        &self,
        server_name: ServerName<'static>,
        io: IO,
    ) -> Result<SecureStream<IO>, ConnectionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let client = self.handshaker.client();
        self.handshaker.connect(&client, server_name, io).await
    }

    /// Client side, expecting the servers matched by `expected` instead of the channel's
    /// [`expect_server`](SecureChannelBuilder::expect_server) list for this one connection.
    ///
    /// Builds a client configuration per call (the session cache is shared); prefer
    /// [`connect`](Self::connect) on hot paths.
    pub async fn connect_expecting<IO>(
        &self,
        expected: AllowList,
        server_name: ServerName<'static>,
        io: IO,
    ) -> Result<SecureStream<IO>, ConnectionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let client = self.handshaker.client_expecting(expected);
        self.handshaker.connect(&client, server_name, io).await
    }

    /// Client side: opens a TCP connection to `addr` and runs the handshake on it.
    pub async fn connect_tcp(
        &self,
        addr: SocketAddr,
    ) -> Result<SecureStream<TcpStream>, ConnectionError> {
        let timeout = self.handshaker.handshake_timeout();
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectionError::HandshakeTimeout)?
            .map_err(|error| ConnectionError::Connect {
                address: addr.to_string(),
                error,
            })?;
        tcp.set_nodelay(true).map_err(ConnectionError::Handshake)?;
        self.connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
    }

    /// A secure listener on `tcp` with default limits; see [`SecureListener`].
    ///
    /// Must be called within a tokio runtime (the accept loop is spawned).
    pub fn listener(&self, tcp: TcpListener) -> io::Result<SecureListener> {
        self.listener_builder().bind(tcp)
    }

    /// A secure listener with options.
    pub fn listener_builder(&self) -> SecureListenerBuilder {
        SecureListenerBuilder::new(self.handshaker.clone())
    }

    /// A connector for hyper and tonic clients; see [`SecureConnector`].
    pub fn connector(&self) -> SecureConnector {
        SecureConnector::new(self.handshaker.clone())
    }

    /// `connector` (WebPKI server authentication) presenting this channel's current SVID as its
    /// TLS client certificate, read at each handshake as the channel's own handshakes do (never
    /// an expired one).
    ///
    /// For mutual TLS with servers that are not SPIFFE workloads but accept client
    /// certificates, such as an OAuth 2.0 authorization server doing RFC 8705 client
    /// authentication; see [`oauth`](crate::oauth). The server is authenticated by the host
    /// name in the URI against the connector's roots, never by SPIFFE ID: for a server that is
    /// a SPIFFE workload, use [`connector`](Self::connector) instead.
    pub fn presenting_svid(&self, connector: WebPkiConnector) -> WebPkiConnector {
        let tls = self.handshaker.tls();
        connector.with_client_certificate(Arc::new(SvidResolver::new(
            self.handshaker.source().clone(),
            tls.time(),
        )))
    }

    /// The bound on each handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshaker.handshake_timeout()
    }

    /// The state of the channel's own SVID at the channel's clock.
    ///
    /// The SVID is expiring soon when less than the warning period is left, and also less than
    /// a quarter of its lifetime: issuers renew well before that (SPIRE at half the lifetime,
    /// cert-manager at a third), so a short-lived SVID that is being rotated as it should is
    /// never reported.
    pub fn credential_status(&self) -> CredentialStatus {
        self.handshaker.credential_status()
    }

    /// How many connections made by this channel are open (both sides; each is re-checked
    /// when trust changes).
    pub fn open_connections(&self) -> usize {
        self.handshaker.registry().len()
    }

    /// The credential source this channel presents and trusts.
    pub fn source(&self) -> &CredentialSource {
        self.handshaker.source()
    }

    /// Test hook (hidden, testkit only): the chains held by the verified-chain caches of the
    /// channel's own verifiers (of its clients and of its servers), and the bytes they count.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn verified_chain_cache_usage(&self) -> (usize, usize) {
        let tls = self.handshaker.tls();
        let (clients, client_bytes) = tls.clients_verifier.cache_usage();
        let (servers, server_bytes) = tls.servers_verifier.cache_usage();
        (clients + servers, client_bytes + server_bytes)
    }

    /// Benchmark hook (hidden, testkit only): registers, as the server side's connection, a
    /// peer presenting `chain` (leaf first), without a socket; see `benches/live_trust.rs`.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn bench_register(
        &self,
        chain: &[rustls_pki_types::CertificateDer<'static>],
    ) -> Result<crate::transport::BenchConnection, crate::identity::PeerRejection> {
        let verifier = &self.handshaker.tls().clients_verifier;
        self.handshaker.registry().bench_register(verifier, chain)
    }

    /// Benchmark hook (hidden, testkit only): the identity of a client presenting `chain` (leaf
    /// first), verified by the channel's client verifier at the system clock as a handshake
    /// would, without one; see `benches/rate_limit.rs`.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn bench_peer_identity(
        &self,
        chain: &[rustls_pki_types::CertificateDer<'static>],
    ) -> Result<crate::PeerIdentity, crate::identity::PeerRejection> {
        let verifier = &self.handshaker.tls().clients_verifier;
        let admitted = verifier.identify(chain, false, rustls_pki_types::UnixTime::now())?;
        Ok(admitted.identity)
    }

    /// Benchmark hook (hidden, testkit only): re-checks every open connection now, on this
    /// thread, as a trust change does; returns how many it cut off.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn bench_sweep(&self) -> usize {
        self.handshaker.registry().bench_sweep()
    }

    /// Checks a client's certificate chain (leaf first) as this channel's handshakes do, at the
    /// channel's clock, without a connection: the X.509-SVID rules, the chain against the bundle
    /// of the trust domain in the leaf's SPIFFE ID (and no other), the revocation lists, the
    /// deny-lists, then who may connect.
    ///
    /// For diagnostics (`secure-channel svid inspect`, a health check of issued SVIDs): the
    /// refusal says which rule the chain breaks, as [`ConnectionError::PeerRejected`] would.
    pub fn verify_client_chain(
        &self,
        chain: &[rustls_pki_types::CertificateDer<'_>],
    ) -> Result<crate::PeerIdentity, crate::identity::PeerRejection> {
        let tls = self.handshaker.tls();
        let now = tls
            .time()
            .current_time()
            .unwrap_or_else(rustls_pki_types::UnixTime::now);
        match chain {
            [leaf, intermediates @ ..] => tls.clients_verifier.verify(leaf, intermediates, now),
            [] => Err(crate::identity::PeerRejection::NoCertificate),
        }
    }

    /// The rustls server configuration, for serving with other TLS stacks. Prefer
    /// [`accept`](Self::accept), which also re-validates resumed sessions and returns the
    /// detailed [`ConnectionError::PeerRejected`]: with this configuration alone a refused client fails
    /// the handshake with only the certificate error that chose its alert (`access_denied`,
    /// `unknown_ca` or `bad_certificate`), the details being logged at debug level.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.handshaker.tls().server.clone()
    }
}

impl SecureChannelBuilder {
    /// Allows clients whose SPIFFE ID `matcher` matches (an [`IdMatcher`], or its text form such
    /// as `"spiffe://example.org/web"`, `"spiffe://example.org"` or
    /// `"spiffe://example.org/billing/*"`). May be called several times.
    pub fn allow_client<M>(mut self, matcher: M) -> Self
    where
        M: TryInto<IdMatcher>,
        M::Error: Into<ConfigError>,
    {
        match matcher.try_into() {
            Ok(m) => self.allowed_clients.push(m),
            Err(e) => self.remember(e.into()),
        }
        self
    }

    /// Expects servers whose SPIFFE ID `matcher` matches; same forms as
    /// [`allow_client`](Self::allow_client). May be called several times.
    pub fn expect_server<M>(mut self, matcher: M) -> Self
    where
        M: TryInto<IdMatcher>,
        M::Error: Into<ConfigError>,
    {
        match matcher.try_into() {
            Ok(m) => self.expected_servers.push(m),
            Err(e) => self.remember(e.into()),
        }
        self
    }

    /// Also allows, at the handshake, every client that some allow rule of `policy` could ever
    /// admit (following the policy as it reloads); a client that no rule names is refused before
    /// it can send a request. The per-request decision stays with
    /// [`AuthorizeLayer`](crate::layer::authorize::AuthorizeLayer) on the same policy.
    ///
    /// When the policy changes, open connections of clients it no longer admits are cut off
    /// (see [`cut_off_grace`](Self::cut_off_grace)).
    pub fn allow_clients_by_policy(mut self, policy: &crate::authz::PolicySource) -> Self {
        self.admission = Some(Arc::new(policy.clone()));
        self.triggers.push(("policy", policy.subscribe()));
        self
    }

    /// Checks peers' chains, on both sides, against `lists` (following them as they change):
    /// a certificate of the chain on its issuer's CRL is refused with
    /// [`ChainError::Revoked`](crate::identity::ChainError::Revoked) (alert
    /// `certificate_revoked`). See [`RevocationLists`](crate::revocation::RevocationLists) for
    /// the policy (whole chain, unknown status allowed, expired lists fail closed). A second
    /// call replaces the first: put every CA's CRL in one set.
    pub fn revocation_lists(mut self, lists: &crate::revocation::RevocationLists) -> Self {
        self.revocation_lists = Some(lists.clone());
        self
    }

    /// Refuses, on both sides, the peers `list` names by SPIFFE ID or leaf certificate digest
    /// (following it as it changes), before the allow-list is consulted:
    /// [`PeerRejection::Denied`](crate::identity::PeerRejection::Denied) (alert
    /// `access_denied`). May be called several times (a list from code and one from a file):
    /// an entry of any of them denies.
    pub fn deny_list(mut self, list: &crate::revocation::DenyList) -> Self {
        self.deny_lists.push(list.clone());
        self
    }

    /// Accepts TLS 1.2 besides TLS 1.3 (ECDHE key exchange with AEAD ciphers only). Off by
    /// default: enable it only for peers that cannot speak TLS 1.3.
    pub fn allow_tls12(mut self) -> Self {
        self.policy.allow_tls12 = true;
        self
    }

    /// The key exchange groups offered and accepted (default
    /// [`KeyExchange::PreferPostQuantum`](crate::tls::KeyExchange::PreferPostQuantum): hybrid
    /// post-quantum X25519MLKEM768 first, classical groups for peers without it).
    /// [`ClassicalOnly`](crate::tls::KeyExchange::ClassicalOnly) gives up post-quantum
    /// protection; [`PostQuantumOnly`](crate::tls::KeyExchange::PostQuantumOnly) refuses peers
    /// without it.
    pub fn key_exchange(mut self, choice: crate::tls::KeyExchange) -> Self {
        self.policy.key_exchange = choice;
        self
    }

    /// Bounds each TLS handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Warn (through `tracing`, at most once a minute) when the channel's own SVID expires within
    /// `period` and has not been rotated (default 10 minutes; never more than a quarter of the
    /// SVID's lifetime, which a working rotation never lets it reach). Once expired, the channel refuses
    /// new handshakes with [`ConnectionError::CredentialsExpired`] until valid credentials arrive.
    pub fn expiry_warning(mut self, period: Duration) -> Self {
        self.expiry_warning = period;
        self
    }

    /// The time a connection whose peer is no longer trusted is given to wind down (default
    /// 10 s): when a change (bundles, admission policy, revocation lists, deny-lists) or the
    /// expiry of the peer's certificate cuts a connection off, servers stop taking requests on
    /// it at once (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close` after the response in flight),
    /// pooled client connections are no longer reused, and raw streams' [`CutOffSignal`]
    /// completes; after `grace`, every read and write of the connection fails. Zero closes at
    /// once.
    ///
    /// [`CutOffSignal`]: crate::transport::CutOffSignal
    pub fn cut_off_grace(mut self, grace: Duration) -> Self {
        self.cut_off.grace = grace;
        self
    }

    /// Cuts off connections older than `age` (default: no limit), as a trust change would:
    /// the peer must then reconnect, with a full check of its current credentials.
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.cut_off.max_age = Some(age);
        self
    }

    /// The clock certificate validity is checked against (default: the system clock).
    pub fn time_provider(mut self, time: Arc<dyn TimeProvider>) -> Self {
        self.time = time;
        self
    }

    fn remember(&mut self, error: ConfigError) {
        if self.first_error.is_none() {
            self.first_error = Some(error);
        }
    }

    /// Validates the configuration and builds the channel.
    pub fn build(self) -> Result<SecureChannel, ConfigError> {
        if let Some(error) = self.first_error {
            return Err(error);
        }
        let tls = TlsConfigs::build(
            self.source.clone(),
            self.allowed_clients,
            self.admission,
            self.expected_servers,
            self.policy,
            self.time,
            crate::revocation::RevocationChecks::new(self.revocation_lists, self.deny_lists),
        )?;
        Ok(SecureChannel {
            handshaker: Handshaker::new(
                self.source,
                tls,
                self.handshake_timeout,
                self.expiry_warning,
                self.cut_off,
                self.triggers,
            ),
        })
    }
}
