//! SPIFFE X.509-SVID verifiers for rustls, built on rustls-webpki.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::identity::{AllowList, PeerAdmission, PeerIdentity, chain_validity, inspect_leaf};
use crate::source::{CredentialSource, Snapshot};
use crate::tls::{ChainError, PeerRejection};

/// Which side of the connection is being verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// A server verifying its clients (EKU clientAuth, if present, required).
    Clients,
    /// A client verifying its server (EKU serverAuth, if present, required).
    Servers,
}

/// Verifies a peer's X.509-SVID against the current bundles and an allow-list.
#[derive(Debug)]
pub(crate) struct SvidVerifier {
    source: CredentialSource,
    allowed: AllowList,
    admission: Option<Arc<dyn PeerAdmission>>,
    side: Side,
    algorithms: WebPkiSupportedAlgorithms,
    verified: VerifiedChains,
}

/// How many verified chains are remembered before the cache starts over.
const VERIFIED_CHAINS_CAPACITY: usize = 4096;

/// Chains that passed verification, found by a keyed hash of the presented certificates and
/// compared byte for byte.
///
/// Chain validation is a pure function of the chain bytes, the bundles and the clock; an entry
/// holds the credential revision it was verified under (the bundles) and the span in which
/// every certificate of the chain is valid (the clock), and is used only while both still hold.
/// Who may connect is decided after the lookup, on every handshake, so a changed allow-list or
/// policy applies at once. It spares resumed sessions, and the identity lookup after a full
/// handshake, a second chain validation.
///
/// The hash only finds the slot (SipHash under a random key of this cache, so a peer cannot aim
/// at another's slot); an entry is used only if its chain equals the presented one, so a
/// collision costs a validation, never an identity.
#[derive(Debug, Default)]
struct VerifiedChains {
    hasher: RandomState,
    entries: Mutex<HashMap<u64, VerifiedChain>>,
}

#[derive(Debug, Clone)]
struct VerifiedChain {
    revision: u64,
    valid_from: i64,
    valid_until: i64,
    /// The leaf is the identity's own certificate; these are the rest of the chain.
    intermediates: Box<[CertificateDer<'static>]>,
    identity: PeerIdentity,
}

impl VerifiedChain {
    fn is_chain(&self, end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> bool {
        self.identity.leaf_certificate().as_ref() == end_entity
            && self.intermediates.len() == intermediates.len()
            && self
                .intermediates
                .iter()
                .zip(intermediates)
                .all(|(stored, presented)| stored.as_ref() == presented.as_ref())
    }
}

impl VerifiedChains {
    fn key(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        for cert in std::iter::once(end_entity).chain(intermediates) {
            hasher.write(cert.as_ref());
        }
        hasher.finish()
    }

    fn get(
        &self,
        key: u64,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        revision: u64,
        now: UnixTime,
    ) -> Option<PeerIdentity> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = entries.get(&key)?;
        let now = i64::try_from(now.as_secs()).ok()?;
        (entry.revision == revision
            && entry.valid_from <= now
            && now <= entry.valid_until
            && entry.is_chain(end_entity.as_ref(), intermediates))
        .then(|| entry.identity.clone())
    }

    fn insert(&self, key: u64, entry: VerifiedChain) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= VERIFIED_CHAINS_CAPACITY {
            entries.clear();
        }
        entries.insert(key, entry);
    }
}

impl SvidVerifier {
    pub(crate) fn new(
        source: CredentialSource,
        allowed: AllowList,
        side: Side,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self {
            source,
            allowed,
            admission: None,
            side,
            algorithms,
            verified: VerifiedChains::default(),
        }
    }

    /// Also admits the peers `admission` admits.
    pub(crate) fn with_admission(mut self, admission: Option<Arc<dyn PeerAdmission>>) -> Self {
        self.admission = admission;
        self
    }

    /// Whether the (authenticated) `id` may connect: the allow-list, or the admission.
    fn admit(&self, identity: PeerIdentity) -> Result<PeerIdentity, PeerRejection> {
        let id = identity.spiffe_id();
        if self.allowed.allows(id) || self.admission.as_ref().is_some_and(|a| a.admits(id)) {
            return Ok(identity);
        }
        let mut expected = self.allowed.clone();
        if let Some(admitted) = self.admission.as_ref().and_then(|a| a.admitted()) {
            for matcher in admitted.matchers() {
                expected.push(matcher.clone());
            }
        }
        Err(PeerRejection::NotAllowed {
            presented: id.clone(),
            expected,
        })
    }

    /// Verifies a presented chain, leaf first, at `now`.
    ///
    /// Order matters: the SVID shape is checked, then the chain against the bundle of the trust
    /// domain named in the leaf (never another), and only an authenticated ID is matched against
    /// the allow-list.
    pub(crate) fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<PeerIdentity, PeerRejection> {
        let snapshot = self.source.snapshot();
        let key = self.verified.key(end_entity, intermediates);
        if let Some(identity) =
            self.verified
                .get(key, end_entity, intermediates, snapshot.revision, now)
        {
            return self.admit(identity);
        }
        let (identity, validity) = self.validate(&snapshot, end_entity, intermediates, now)?;
        if let Some((valid_from, valid_until)) = validity {
            self.verified.insert(
                key,
                VerifiedChain {
                    revision: snapshot.revision,
                    valid_from,
                    valid_until,
                    intermediates: intermediates
                        .iter()
                        .map(|cert| cert.clone().into_owned())
                        .collect(),
                    identity: identity.clone(),
                },
            );
        }
        self.admit(identity)
    }

    /// Validates a chain against `snapshot`'s bundles, without the cache or the allow-list:
    /// the authenticated identity, and the span in which every certificate is valid.
    fn validate(
        &self,
        snapshot: &Snapshot,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(PeerIdentity, Option<(i64, i64)>), PeerRejection> {
        let leaf = inspect_leaf(end_entity.as_ref()).map_err(PeerRejection::NotSvid)?;
        let presented = leaf.spiffe_id;
        let Some(bundle) = snapshot.credentials.bundles().get(presented.trust_domain()) else {
            return Err(PeerRejection::UnknownTrustDomain { presented });
        };
        let usage = match self.side {
            Side::Clients => webpki::KeyUsage::client_auth(),
            Side::Servers => webpki::KeyUsage::server_auth(),
        };
        let chain_result = webpki::EndEntityCert::try_from(end_entity)
            .map_err(ChainError::from)
            .and_then(|cert| {
                cert.verify_for_usage(
                    self.algorithms.all,
                    bundle.anchors(),
                    intermediates,
                    now,
                    usage,
                    None,
                    None,
                )
                .map(|_| ())
                .map_err(ChainError::from)
            });
        if let Err(reason) = chain_result {
            return Err(PeerRejection::InvalidChain { presented, reason });
        }
        let identity =
            PeerIdentity::new(presented, end_entity.clone().into_owned(), leaf.not_after);
        // The leaf's window is known from its inspection; only the intermediates (if any) are
        // parsed for theirs.
        let validity = chain_validity(intermediates.iter().map(|c| c.as_ref())).map(
            |(valid_from, valid_until)| {
                (
                    valid_from.max(leaf.validity.0),
                    valid_until.min(leaf.validity.1),
                )
            },
        );
        Ok((identity, validity))
    }

    /// The identity of a finished handshake's peer, from the chain rustls holds for it.
    ///
    /// After a full handshake this finds the verifier's own result (the chain was verified
    /// moments ago). A resumed session skipped the verifier, so its stored chain is verified
    /// again here against the current bundles and clock, and refused as
    /// [`PeerRejection::ResumedSessionInvalid`] when it no longer holds.
    pub(crate) fn identify(
        &self,
        chain: &[CertificateDer<'static>],
        resumed: bool,
        now: UnixTime,
    ) -> Result<PeerIdentity, PeerRejection> {
        let result = match chain {
            [leaf, intermediates @ ..] => self.verify(leaf, intermediates, now),
            [] => Err(PeerRejection::NoCertificate),
        };
        match result {
            Err(rejection) if resumed => {
                Err(PeerRejection::ResumedSessionInvalid(Box::new(rejection)))
            }
            other => other,
        }
    }

    fn log_rejection(&self, rejection: &PeerRejection) {
        tracing::debug!(side = ?self.side, %rejection, "peer certificate refused");
    }

    fn verify_for_rustls(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        match self.verify(end_entity, intermediates, now) {
            Ok(_) => Ok(()),
            Err(rejection) => {
                self.log_rejection(&rejection);
                Err(rejection.into_rustls())
            }
        }
    }

    fn tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

/// The server side's view: verifies client SVIDs. Client certificates are mandatory.
#[derive(Debug)]
pub(crate) struct ClientSvidVerifier(pub(crate) Arc<SvidVerifier>);

impl ClientCertVerifier for ClientSvidVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.verify_for_rustls(end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms.supported_schemes()
    }
}

/// The client side's view: verifies the server's SVID. The server name is deliberately ignored:
/// servers are authenticated by SPIFFE ID, whatever address or name was dialled.
#[derive(Debug)]
pub(crate) struct ServerSvidVerifier(pub(crate) Arc<SvidVerifier>);

impl ServerCertVerifier for ServerSvidVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.verify_for_rustls(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algorithms.supported_schemes()
    }
}

/// Benchmark hook: a channel's client-side SVID verifier, run without a handshake.
///
/// Not part of the API (hidden, testkit only): it lets `benches/svid.rs` compare the chain
/// verification a server runs per full handshake with rustls-webpki's `verify_for_usage` alone.
#[cfg(feature = "testkit")]
#[doc(hidden)]
#[derive(Debug)]
pub struct BenchVerifier(SvidVerifier);

#[cfg(feature = "testkit")]
#[doc(hidden)]
impl BenchVerifier {
    /// The verifier a server trusting `source`'s bundles and admitting `allowed` holds.
    pub fn new(source: CredentialSource, allowed: AllowList) -> Result<Self, crate::Error> {
        let provider = crate::crypto::default_provider()?;
        Ok(Self(SvidVerifier::new(
            source,
            allowed,
            Side::Clients,
            provider.signature_verification_algorithms,
        )))
    }

    /// Verifies `chain` (leaf first) as a handshake does, verified-chain cache included.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<PeerIdentity, PeerRejection> {
        match chain {
            [leaf, intermediates @ ..] => self.0.verify(leaf, intermediates, now),
            [] => Err(PeerRejection::NoCertificate),
        }
    }

    /// Verifies `chain` without the cache: SVID rules, chain validation, allow-list.
    pub fn verify_uncached(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<PeerIdentity, PeerRejection> {
        let [leaf, intermediates @ ..] = chain else {
            return Err(PeerRejection::NoCertificate);
        };
        let snapshot = self.0.source.snapshot();
        let (identity, _) = self.0.validate(&snapshot, leaf, intermediates, now)?;
        self.0.admit(identity)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Duration, UNIX_EPOCH};

    use spiffe::SpiffeId;

    use super::*;

    fn cert(bytes: &[u8]) -> CertificateDer<'static> {
        CertificateDer::from(bytes.to_vec())
    }

    fn entry(
        leaf: &CertificateDer<'static>,
        intermediates: &[CertificateDer<'static>],
    ) -> VerifiedChain {
        let id = SpiffeId::new("spiffe://example.org/web").unwrap();
        VerifiedChain {
            revision: 7,
            valid_from: 100,
            valid_until: 200,
            intermediates: intermediates.into(),
            identity: PeerIdentity::new(id, leaf.clone(), UNIX_EPOCH + Duration::from_secs(200)),
        }
    }

    #[test]
    fn a_cached_chain_is_used_only_for_the_same_chain_revision_and_window() {
        let cache = VerifiedChains::default();
        let (leaf, other_leaf, intermediate) = (cert(b"leaf"), cert(b"other"), cert(b"ca"));
        let at = |secs| UnixTime::since_unix_epoch(Duration::from_secs(secs));
        let key = cache.key(&leaf, &[]);
        cache.insert(key, entry(&leaf, &[]));

        assert!(cache.get(key, &leaf, &[], 7, at(150)).is_some());
        // Same slot, other chain (what a hash collision would present): not this identity.
        assert!(cache.get(key, &other_leaf, &[], 7, at(150)).is_none());
        assert!(
            cache
                .get(key, &leaf, std::slice::from_ref(&intermediate), 7, at(150))
                .is_none()
        );
        // Bundles changed since, or the clock left the chain's window.
        assert!(cache.get(key, &leaf, &[], 8, at(150)).is_none());
        assert!(cache.get(key, &leaf, &[], 7, at(99)).is_none());
        assert!(cache.get(key, &leaf, &[], 7, at(201)).is_none());

        let key = cache.key(&leaf, std::slice::from_ref(&intermediate));
        cache.insert(key, entry(&leaf, std::slice::from_ref(&intermediate)));
        assert!(cache.get(key, &leaf, &[intermediate], 7, at(150)).is_some());
        assert!(
            cache
                .get(key, &leaf, &[cert(b"other ca")], 7, at(150))
                .is_none()
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = VerifiedChains::default();
        for i in 0..VERIFIED_CHAINS_CAPACITY + 10 {
            let leaf = cert(&i.to_be_bytes());
            cache.insert(cache.key(&leaf, &[]), entry(&leaf, &[]));
        }
        assert!(cache.entries.lock().unwrap().len() <= VERIFIED_CHAINS_CAPACITY);
    }
}
