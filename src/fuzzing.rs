//! Entry points into crate internals for the cargo-fuzz targets in `fuzz/`.
//!
//! Compiled only with `--cfg fuzzing` (which cargo-fuzz passes), never part of the API: these
//! functions hand out values that the crate otherwise only makes after verification (a
//! [`PeerIdentity`] for any certificate, [`VerifiedClaims`] for any JSON), so that the fuzz
//! targets can reach code behind those proofs.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::time_provider::DefaultTimeProvider;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{Map, Value};
use spiffe::SpiffeId;

use crate::identity::PeerRejection;
use crate::identity::{AllowList, PeerIdentity};
use crate::jwt::VerifiedClaims;
use crate::source::CredentialSource;
use crate::tls::{TlsConfigs, TlsPolicy};

/// The X.509-SVID verifiers of a channel (clients side and servers side), as a `SecureChannel`
/// built from the same source and allow-lists would hold them.
#[doc(hidden)]
#[derive(Debug)]
pub struct ChainVerifier {
    configs: TlsConfigs,
}

#[doc(hidden)]
impl ChainVerifier {
    /// Builds the verifiers of a channel trusting `source`'s bundles, accepting the clients
    /// `allowed_clients` matches and the servers `expected_servers` matches.
    pub fn new(
        source: CredentialSource,
        allowed_clients: AllowList,
        expected_servers: AllowList,
    ) -> Result<Self, crate::ConfigError> {
        let configs = TlsConfigs::build(
            source,
            allowed_clients,
            None,
            expected_servers,
            TlsPolicy::default(),
            Arc::new(DefaultTimeProvider),
            crate::revocation::RevocationChecks::default(),
        )?;
        Ok(Self { configs })
    }

    /// Verifies a client's chain (leaf first) at `now`, as the server side of a handshake does.
    pub fn verify_client_chain(
        &self,
        chain: &[Vec<u8>],
        now: UnixTime,
    ) -> Result<PeerIdentity, PeerRejection> {
        identify(&self.configs.clients_verifier, chain, false, now)
    }

    /// Verifies a server's chain (leaf first) at `now`, as the client side of a handshake does.
    pub fn verify_server_chain(
        &self,
        chain: &[Vec<u8>],
        now: UnixTime,
    ) -> Result<PeerIdentity, PeerRejection> {
        identify(&self.configs.servers_verifier, chain, false, now)
    }

    /// Re-validates the stored chain of a resumed session on the server side.
    pub fn identify_resumed_client(
        &self,
        chain: &[Vec<u8>],
        now: UnixTime,
    ) -> Result<PeerIdentity, PeerRejection> {
        identify(&self.configs.clients_verifier, chain, true, now)
    }
}

fn identify(
    verifier: &crate::tls::SvidVerifier,
    chain: &[Vec<u8>],
    resumed: bool,
    now: UnixTime,
) -> Result<PeerIdentity, PeerRejection> {
    let chain: Vec<CertificateDer<'static>> = chain
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect();
    verifier
        .identify(&chain, resumed, now)
        .map(|admitted| admitted.identity)
}

/// The SVID leaf inspection alone: the SPIFFE ID and not-after of an acceptable leaf.
#[doc(hidden)]
pub fn inspect_leaf(der: &[u8]) -> Result<(SpiffeId, SystemTime), crate::identity::SvidError> {
    crate::identity::inspect_leaf(der).map(|leaf| (leaf.spiffe_id, leaf.not_after))
}

/// The validity window of a chain, as the verified-chain cache computes it.
#[doc(hidden)]
pub fn chain_validity(chain: &[Vec<u8>]) -> Option<(i64, i64)> {
    crate::identity::chain_validity(chain.iter().map(Vec::as_slice))
}

/// A peer identity for any certificate: a stand-in for a verified connection.
#[doc(hidden)]
pub fn peer_identity(
    spiffe_id: SpiffeId,
    leaf: CertificateDer<'static>,
    not_after: SystemTime,
) -> PeerIdentity {
    PeerIdentity::new(spiffe_id, leaf, not_after)
}

/// Claims as if they had been validated.
#[doc(hidden)]
pub fn verified_claims(claims: Map<String, Value>) -> VerifiedClaims {
    VerifiedClaims::new(claims)
}

/// The canonical URI form of a normalized path, as the authorization layer rewrites it.
#[doc(hidden)]
pub fn encode_normalized(path: &str) -> String {
    crate::authz::encode_normalized(path)
}
