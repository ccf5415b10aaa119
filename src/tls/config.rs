//! TLS policy and the rustls configurations built from it.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::time_provider::TimeProvider;
use rustls::{CipherSuite, ClientConfig, NamedGroup, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::UnixTime;

use crate::ConfigError;
use crate::identity::{AllowList, PeerAdmission};
use crate::revocation::RevocationChecks;
use crate::source::CredentialSource;
use crate::tls::resolver::SvidResolver;
use crate::tls::sessions::{RotatingServerSessions, RotatingSessionStore};
use crate::tls::verifier::{ClientSvidVerifier, ServerSvidVerifier, Side, SvidVerifier};

/// ALPN protocols offered and accepted, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// TLS 1.2 suites allowed when TLS 1.2 is opted into: ECDHE key exchange with AEAD ciphers only.
const TLS12_SUITES: [CipherSuite; 6] = [
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS13_AND_TLS12: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Which key exchange groups a channel offers (as a client) and accepts (as a server).
///
/// The hybrid post-quantum group X25519MLKEM768 (X25519 combined with ML-KEM-768) protects
/// recorded traffic against a future quantum computer while staying at least as strong as
/// X25519 alone. It needs the `aws-lc-rs` provider: rustls's `ring` provider has no ML-KEM, so
/// with `ring` only the default offers the classical groups, and
/// [`PostQuantumOnly`](Self::PostQuantumOnly) refuses to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyExchange {
    /// X25519MLKEM768 first, then the classical groups (X25519, P-256, P-384) for peers without
    /// it: the order rustls's `prefer-post-quantum` feature gives (the default). A client sends
    /// key shares for X25519MLKEM768 and X25519, so a classical server costs no extra round trip.
    #[default]
    PreferPostQuantum,
    /// Classical groups only (X25519, P-256, P-384): no protection against recorded traffic
    /// being decrypted later; for peers that cannot handle the larger hybrid key shares.
    ClassicalOnly,
    /// The hybrid post-quantum group only: peers without X25519MLKEM768 cannot connect. TLS 1.3
    /// only (cannot be combined with `allow_tls12`), and needs the `aws-lc-rs` provider.
    PostQuantumOnly,
}

impl KeyExchange {
    /// The variant's name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::PreferPostQuantum => "PreferPostQuantum",
            Self::ClassicalOnly => "ClassicalOnly",
            Self::PostQuantumOnly => "PostQuantumOnly",
        }
    }
}

/// Whether `group` includes ML-KEM (a post-quantum hybrid, or ML-KEM alone).
fn is_post_quantum(group: NamedGroup) -> bool {
    matches!(
        group,
        NamedGroup::X25519MLKEM768
            | NamedGroup::secp256r1MLKEM768
            | NamedGroup::MLKEM512
            | NamedGroup::MLKEM768
            | NamedGroup::MLKEM1024
    )
}

/// Protocol versions, suites and key exchange groups.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TlsPolicy {
    /// Whether TLS 1.2 is accepted besides TLS 1.3.
    pub(crate) allow_tls12: bool,
    /// The key exchange groups.
    pub(crate) key_exchange: KeyExchange,
}

impl TlsPolicy {
    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        if self.allow_tls12 {
            TLS13_AND_TLS12
        } else {
            TLS13_ONLY
        }
    }

    fn provider(self, base: &CryptoProvider) -> Result<Arc<CryptoProvider>, ConfigError> {
        let mut provider = base.clone();
        provider.cipher_suites.retain(|suite| match suite {
            rustls::SupportedCipherSuite::Tls13(_) => true,
            rustls::SupportedCipherSuite::Tls12(_) => {
                self.allow_tls12 && TLS12_SUITES.contains(&suite.suite())
            }
        });
        let groups = &mut provider.kx_groups;
        match self.key_exchange {
            // A stable sort: the post-quantum groups first, each part in the provider's order.
            KeyExchange::PreferPostQuantum => groups.sort_by_key(|g| !is_post_quantum(g.name())),
            KeyExchange::ClassicalOnly => groups.retain(|g| !is_post_quantum(g.name())),
            KeyExchange::PostQuantumOnly => {
                if self.allow_tls12 {
                    return Err(ConfigError::KeyExchange {
                        choice: self.key_exchange.name(),
                        reason: "TLS 1.2 has no post-quantum key exchange: do not combine it with allow_tls12()",
                    });
                }
                groups.retain(|g| g.name() == NamedGroup::X25519MLKEM768);
                if groups.is_empty() {
                    return Err(ConfigError::KeyExchange {
                        choice: self.key_exchange.name(),
                        reason: "the crypto provider has no X25519MLKEM768 (ML-KEM needs the aws-lc-rs feature)",
                    });
                }
            }
        }
        Ok(Arc::new(provider))
    }
}

/// Everything a channel needs to run handshakes on both sides.
#[derive(Debug)]
pub(crate) struct TlsConfigs {
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) client: Arc<ClientConfig>,
    /// Verifies the clients of this channel's servers.
    pub(crate) clients_verifier: Arc<SvidVerifier>,
    /// Verifies the servers this channel's clients call.
    pub(crate) servers_verifier: Arc<SvidVerifier>,
    provider: Arc<CryptoProvider>,
    time: Arc<dyn TimeProvider>,
    source: CredentialSource,
    /// The revocation lists and deny-lists every verifier of the channel checks.
    revocation: RevocationChecks,
    /// The session caches `server` and every client configuration share.
    server_sessions: RotatingServerSessions,
    client_sessions: RotatingSessionStore,
}

impl TlsConfigs {
    pub(crate) fn build(
        source: CredentialSource,
        allowed_clients: AllowList,
        admission: Option<Arc<dyn PeerAdmission>>,
        expected_servers: AllowList,
        policy: TlsPolicy,
        time: Arc<dyn TimeProvider>,
        revocation: RevocationChecks,
    ) -> Result<Self, ConfigError> {
        let provider = policy.provider(crate::crypto::default_provider()?.as_ref())?;
        let algorithms = provider.signature_verification_algorithms;
        let clients_verifier = Arc::new(
            SvidVerifier::new(source.clone(), allowed_clients, Side::Clients, algorithms)
                .with_admission(admission)
                .with_revocation(revocation.clone()),
        );
        let resolver = Arc::new(SvidResolver::new(source.clone(), time.clone()));
        let mut server = ServerConfig::builder_with_details(provider.clone(), time.clone())
            .with_protocol_versions(policy.versions())
            .map_err(ConfigError::TlsConfig)?
            .with_client_cert_verifier(Arc::new(ClientSvidVerifier(clients_verifier.clone())))
            .with_cert_resolver(resolver);
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        let server_sessions = RotatingServerSessions::new(source.clone());
        server.session_storage = Arc::new(server_sessions.clone());

        let client_sessions = RotatingSessionStore::new(source.clone());
        let servers_verifier = Arc::new(
            SvidVerifier::new(source.clone(), expected_servers, Side::Servers, algorithms)
                .with_revocation(revocation.clone()),
        );
        let client = client_config(
            &provider,
            &time,
            policy,
            &source,
            &client_sessions,
            servers_verifier.clone(),
        )?;
        Ok(Self {
            server: Arc::new(server),
            client,
            clients_verifier,
            servers_verifier,
            provider,
            time,
            source,
            revocation,
            server_sessions,
            client_sessions,
        })
    }

    /// The server configuration for one connection whose handshake starts now: its sessions
    /// pinned to the credentials' current revision (see [`sessions`](crate::tls::sessions)).
    pub(crate) fn server_for_connection(&self) -> Arc<ServerConfig> {
        let mut config = (*self.server).clone();
        config.session_storage = Arc::new(self.server_sessions.pinned());
        Arc::new(config)
    }

    /// `config` (one of this channel's client configurations) for one connection whose
    /// handshake starts now: its sessions pinned to the credentials' current revision.
    pub(crate) fn client_for_connection(&self, config: &ClientConfig) -> Arc<ClientConfig> {
        let mut config = config.clone();
        config.resumption = Resumption::store(Arc::new(self.client_sessions.pinned()));
        Arc::new(config)
    }

    /// A client configuration that accepts servers matched by `expected`, sharing this
    /// channel's session cache, and the verifier to re-validate its resumed sessions with: the
    /// channel's own configuration with another verifier, so it cannot fail.
    pub(crate) fn client_for(&self, expected: AllowList) -> (Arc<ClientConfig>, Arc<SvidVerifier>) {
        let verifier = Arc::new(
            SvidVerifier::new(
                self.source.clone(),
                expected,
                Side::Servers,
                self.provider.signature_verification_algorithms,
            )
            .with_revocation(self.revocation.clone()),
        );
        let mut client = (*self.client).clone();
        client
            .dangerous()
            .set_certificate_verifier(Arc::new(ServerSvidVerifier(verifier.clone())));
        (Arc::new(client), verifier)
    }

    /// The channel's time provider.
    pub(crate) fn time(&self) -> Arc<dyn TimeProvider> {
        self.time.clone()
    }

    /// The current time, from the channel's time provider.
    pub(crate) fn now(&self) -> UnixTime {
        self.time.current_time().unwrap_or_else(UnixTime::now)
    }
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    time: &Arc<dyn TimeProvider>,
    policy: TlsPolicy,
    source: &CredentialSource,
    sessions: &RotatingSessionStore,
    verifier: Arc<SvidVerifier>,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut client = ClientConfig::builder_with_details(provider.clone(), time.clone())
        .with_protocol_versions(policy.versions())
        .map_err(ConfigError::TlsConfig)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerSvidVerifier(verifier)))
        .with_client_cert_resolver(Arc::new(SvidResolver::new(source.clone(), time.clone())));
    client.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    client.resumption = Resumption::store(Arc::new(sessions.clone()));
    Ok(Arc::new(client))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn tls12_suites(policy: TlsPolicy) -> Vec<CipherSuite> {
        let base = crate::crypto::default_provider().unwrap();
        let provider = policy.provider(&base).unwrap();
        provider
            .cipher_suites
            .iter()
            .filter(|suite| matches!(suite, rustls::SupportedCipherSuite::Tls12(_)))
            .map(|suite| suite.suite())
            .collect()
    }

    /// Without `allow_tls12` no TLS 1.2 suite is configured (so none is listed in a ClientHello,
    /// which rustls fills from the provider's suites); with it, only the ECDHE AEAD ones.
    #[test]
    fn tls12_suites_only_when_opted_in_and_only_ecdhe_aead() {
        assert_eq!(tls12_suites(TlsPolicy::default()), []);
        let suites = tls12_suites(TlsPolicy {
            allow_tls12: true,
            ..TlsPolicy::default()
        });
        assert!(!suites.is_empty());
        assert!(
            suites.iter().all(|suite| TLS12_SUITES.contains(suite)),
            "{suites:?}"
        );
    }
}
