//! SPIFFE X.509-SVID verifiers for rustls, built on rustls-webpki.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use spiffe::TrustDomain;

use crate::identity::{
    AllowList, LeafSvid, PeerAdmission, PeerIdentity, inspect_leaf, inspect_signing_cert,
};
use crate::identity::{ChainError, PeerRejection};
use crate::revocation::RevocationChecks;
use crate::source::{CredentialSource, Snapshot, TrustBundle, anchor_digest};

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
    revocation: RevocationChecks,
    verified: VerifiedChains,
}

/// A peer admitted by a handshake, with what its connection's re-checks need.
#[derive(Debug, Clone)]
pub(crate) struct Admitted {
    pub(crate) identity: PeerIdentity,
    /// The intermediates of the validated path, the leaf's issuer first.
    pub(crate) path: Arc<[CertificateDer<'static>]>,
    /// The last second (Unix time) in which every certificate of the path is valid.
    pub(crate) valid_until: i64,
    /// What the chain was validated against.
    pub(crate) validated_under: TrustMark,
}

/// What a chain's validation depended on besides the chain and the clock: the trust anchor its
/// path ended at (by [`anchor_digest`]) and the revocation lists (by revision). While its trust
/// domain's bundle still holds that anchor and the lists are the same, the chain still
/// validates, until the end of its validity: adding or removing other CAs changes nothing for
/// it, so a CA rotation re-validates no chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrustMark {
    anchor: [u8; 32],
    revocation_lists: u64,
}

/// What chains of one trust domain are validated against now.
#[derive(Debug)]
pub(crate) struct CurrentTrust {
    bundle: TrustBundle,
    revocation_lists: u64,
}

impl CurrentTrust {
    /// Whether a chain validated under `mark` still validates now (until its validity ends).
    pub(crate) fn holds(&self, mark: &TrustMark) -> bool {
        mark.revocation_lists == self.revocation_lists && self.bundle.holds_anchor(&mark.anchor)
    }
}

/// The most intermediate certificates a peer may present (the leaf not counted). rustls-webpki
/// builds paths of at most six intermediates, and SPIFFE chains carry one or two; anything longer
/// is refused before path building.
pub(crate) const MAX_INTERMEDIATES: usize = 6;

/// How many verified chains are remembered before the cache starts over.
const VERIFIED_CHAINS_CAPACITY: usize = 4096;

/// How many bytes (certificates plus [`ENTRY_OVERHEAD`] per entry) the cache holds before it
/// starts over.
const VERIFIED_CHAINS_MAX_BYTES: usize = 4 << 20;

/// What an entry costs besides its certificates' bytes (the map slot, the identity's fields,
/// about 300 bytes with its places for the limits' states), rounded up.
const ENTRY_OVERHEAD: usize = 384;

/// Chains of admitted peers that passed verification, found by a keyed hash of the leaf and
/// compared byte for byte.
///
/// Chain validation is a pure function of the chain bytes, the bundles, the revocation lists
/// and the clock; an entry holds the span in which every certificate of its path is valid (the
/// clock) and belongs to the revision the cache is at: the credential revision (the bundles)
/// and the revocation lists' revision together. A lookup hits only at exactly that revision,
/// and a newer one empties the cache, so entries of superseded credentials or lists are dropped
/// rather than left to age out, and a newly revoked certificate is never served from it. The
/// lists' nextUpdate bounds an entry's span too when it is enforced. Deny-lists and who may
/// connect are decided after the lookup, on every handshake, so a changed deny-list, allow-list
/// or policy applies at once. It spares resumed sessions, and the identity lookup after a full handshake, a second
/// chain validation.
///
/// Only peers that were admitted are cached, and only the path rustls-webpki used (leaf and the
/// intermediates up to the anchor), not whatever else the peer presented: a lookup hits when
/// the leaf is the same and every certificate of the cached path is presented again, which is
/// enough for the same validation to succeed. The cache is bounded by entries and by bytes.
///
/// The hash only finds the slot (SipHash under a random key of this cache, so a peer cannot aim
/// at another's slot); an entry is used only if its leaf equals the presented one, so a
/// collision costs a validation, never an identity.
#[derive(Debug, Default)]
struct VerifiedChains {
    hasher: RandomState,
    entries: Mutex<Entries>,
}

/// The revision a chain was verified under: the credentials' (bundles) and the revocation
/// lists' (0 without any).
type Revision = (u64, u64);

/// The cache's content: entries of one revision.
#[derive(Debug, Default)]
struct Entries {
    revision: Revision,
    bytes: usize,
    map: HashMap<u64, VerifiedChain>,
}

impl Entries {
    fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

/// A chain that validated: its identity, the intermediates of the path webpki used, and the
/// span in which all of them are valid.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedChain {
    valid_from: i64,
    valid_until: i64,
    /// The intermediates of the validated path, the leaf's issuer first (the leaf is the
    /// identity's own certificate); never a certificate the path did not use. Shared with the
    /// connections admitted by this chain, for their re-checks.
    path: Arc<[CertificateDer<'static>]>,
    /// [`anchor_digest`] of the trust anchor the path ended at.
    anchor: [u8; 32],
    identity: PeerIdentity,
}

impl VerifiedChain {
    /// The authenticated identity.
    pub(crate) fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// Whether `end_entity` is this chain's leaf and every certificate of its path is among
    /// `intermediates`.
    fn is_presented_by(&self, end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> bool {
        self.identity.leaf_certificate().as_ref() == end_entity
            && self.path.iter().all(|used| {
                intermediates
                    .iter()
                    .any(|presented| presented.as_ref() == used.as_ref())
            })
    }

    /// What the entry counts against [`VERIFIED_CHAINS_MAX_BYTES`].
    fn size(&self) -> usize {
        ENTRY_OVERHEAD
            + self.identity.leaf_certificate().as_ref().len()
            + self.path.iter().map(|c| c.as_ref().len()).sum::<usize>()
    }
}

impl VerifiedChains {
    fn key(&self, end_entity: &CertificateDer<'_>) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(end_entity.as_ref());
        hasher.finish()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(
        &self,
        key: u64,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        revision: Revision,
        now: UnixTime,
    ) -> Option<VerifiedChain> {
        let entries = self.lock();
        if entries.revision != revision {
            return None;
        }
        let entry = entries.map.get(&key)?;
        let now = i64::try_from(now.as_secs()).ok()?;
        (entry.valid_from <= now
            && now <= entry.valid_until
            && entry.is_presented_by(end_entity.as_ref(), intermediates))
        .then(|| entry.clone())
    }

    /// Remembers `entry`, verified under `revision`: a newer revision (neither part older)
    /// empties the cache first; an older one (a handshake that started before a rotation or a
    /// new list) is not kept.
    fn insert(&self, key: u64, revision: Revision, entry: VerifiedChain) {
        let mut entries = self.lock();
        if revision != entries.revision {
            if revision.0 < entries.revision.0 || revision.1 < entries.revision.1 {
                return;
            }
            entries.clear();
            entries.revision = revision;
        }
        let size = entry.size();
        if entries.map.len() >= VERIFIED_CHAINS_CAPACITY
            || entries.bytes + size > VERIFIED_CHAINS_MAX_BYTES
        {
            entries.clear();
        }
        if let Some(replaced) = entries.map.insert(key, entry) {
            entries.bytes -= replaced.size();
        }
        entries.bytes += size;
    }

    /// How many entries, and how many bytes they count.
    #[cfg(any(test, feature = "testkit"))]
    fn usage(&self) -> (usize, usize) {
        let entries = self.lock();
        (entries.map.len(), entries.bytes)
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
            revocation: RevocationChecks::default(),
            verified: VerifiedChains::default(),
        }
    }

    /// Also checks the revocation lists and deny-lists of `revocation`.
    pub(crate) fn with_revocation(mut self, revocation: RevocationChecks) -> Self {
        self.revocation = revocation;
        self
    }

    /// How many chains the verified-chain cache holds, and the bytes they count.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn cache_usage(&self) -> (usize, usize) {
        self.verified.usage()
    }

    /// Also admits the peers `admission` admits.
    pub(crate) fn with_admission(mut self, admission: Option<Arc<dyn PeerAdmission>>) -> Self {
        self.admission = admission;
        self
    }

    /// Whether the (authenticated) `id` may connect: not denied by a deny-list, then the
    /// allow-list, or the admission. A refusal lists what was expected only when `explain`:
    /// the handshake's error tells the peer's operator; a re-check of thousands of open
    /// connections must not build the list for each.
    fn admit(&self, identity: &PeerIdentity, explain: bool) -> Result<(), PeerRejection> {
        if let Some(entry) = self.revocation.denying(identity) {
            return Err(PeerRejection::Denied {
                presented: identity.spiffe_id().clone(),
                entry,
            });
        }
        let id = identity.spiffe_id();
        if self.allowed.allows(id) || self.admission.as_ref().is_some_and(|a| a.admits(id)) {
            return Ok(());
        }
        if !explain {
            return Err(PeerRejection::NotAllowed {
                presented: id.clone(),
                expected: AllowList::deny_all(),
            });
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
    /// domain named in the leaf (never another) and the revocation lists, and only an
    /// authenticated ID is matched against the deny-lists, then the allow-list. Only an
    /// admitted peer's chain is cached; the deny-lists and allow-list are consulted after the
    /// cache, on every call.
    pub(crate) fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<PeerIdentity, PeerRejection> {
        self.verify_admitted(end_entity, intermediates, now, true)
            .map(|admitted| admitted.identity)
    }

    /// [`verify`](Self::verify) for the re-check of an open connection: what the chain was
    /// validated against and the last second that holds. A refusal for the allow-list does not
    /// list what was expected (see [`PeerRejection::NotAllowed`]).
    pub(crate) fn reverify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(TrustMark, i64), PeerRejection> {
        self.verify_admitted(end_entity, intermediates, now, false)
            .map(|admitted| (admitted.validated_under, admitted.valid_until))
    }

    /// [`verify`](Self::verify), with what the connection's later re-checks need.
    fn verify_admitted(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        explain: bool,
    ) -> Result<Admitted, PeerRejection> {
        let snapshot = self.source.snapshot();
        let (crl_revision, crls) = self.revocation.crls();
        let revision = (snapshot.revision, crl_revision);
        let key = self.verified.key(end_entity);
        let verified = match self
            .verified
            .get(key, end_entity, intermediates, revision, now)
        {
            Some(verified) => {
                self.admit(&verified.identity, explain)?;
                verified
            }
            None => {
                let crls = crls
                    .as_ref()
                    .map(|(set, enforce)| (set.lists(), set.next_update(), *enforce));
                let verified =
                    self.validate(&snapshot, crls.as_ref(), end_entity, intermediates, now)?;
                self.admit(&verified.identity, explain)?;
                self.verified.insert(key, revision, verified.clone());
                verified
            }
        };
        let validated_under = TrustMark {
            anchor: verified.anchor,
            revocation_lists: crl_revision,
        };
        Ok(Admitted {
            // The connection's own: the cached one stays free of per-connection state.
            identity: verified.identity.for_connection(),
            path: verified.path,
            valid_until: verified.valid_until,
            validated_under,
        })
    }

    /// What a chain of `trust_domain` would be validated against now; `None` without a bundle
    /// for it.
    pub(crate) fn current_trust(&self, trust_domain: &TrustDomain) -> Option<CurrentTrust> {
        let (revocation_lists, _) = self.revocation.crls();
        let bundle = self
            .source
            .snapshot()
            .credentials
            .bundles()
            .get(trust_domain)?
            .clone();
        Some(CurrentTrust {
            bundle,
            revocation_lists,
        })
    }

    /// Whether a peer whose chain still validates may still connect: what is decided after
    /// chain validation (deny-lists, allow-list, admission), without validating again. Like
    /// [`reverify`](Self::reverify), a refusal does not list what was expected.
    pub(crate) fn readmit(&self, identity: &PeerIdentity) -> Result<(), PeerRejection> {
        self.admit(identity, false)
    }

    /// The changes after which the peers this verifier admitted must be re-checked: the
    /// credentials (bundles), and the revocation lists and deny-lists it consults.
    pub(crate) fn trust_changes(&self) -> Vec<(&'static str, tokio::sync::watch::Receiver<u64>)> {
        let mut changes = vec![("credentials", self.source.subscribe())];
        changes.extend(self.revocation.changes());
        changes
    }

    /// Validates a chain against `snapshot`'s bundles and the revocation lists `crls` (with
    /// their earliest nextUpdate and whether it is enforced), without the cache or the
    /// deny- and allow-lists: the authenticated identity, the path rustls-webpki used and the
    /// span in which every certificate of that path is valid (and the lists current).
    fn validate(
        &self,
        snapshot: &Snapshot,
        crls: Option<&Crls<'_>>,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<VerifiedChain, PeerRejection> {
        let leaf = inspect_leaf(end_entity.as_ref()).map_err(PeerRejection::NotSvid)?;
        let Some(bundle) = snapshot
            .credentials
            .bundles()
            .get(leaf.spiffe_id.trust_domain())
        else {
            return Err(PeerRejection::UnknownTrustDomain {
                presented: leaf.spiffe_id,
            });
        };
        validate_chain(
            bundle,
            &self.algorithms,
            self.side,
            crls,
            leaf,
            end_entity,
            intermediates,
            now,
        )
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
    ) -> Result<Admitted, PeerRejection> {
        let result = match chain {
            [leaf, intermediates @ ..] => self.verify_admitted(leaf, intermediates, now, true),
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

/// Validates `leaf`'s chain against `bundle` (the bundle of the trust domain in its SPIFFE ID)
/// and the revocation lists `crls`: the SVID rules on the path, not who may connect.
#[expect(
    clippy::too_many_arguments,
    reason = "one validation's inputs, passed through"
)]
pub(crate) fn validate_chain(
    bundle: &TrustBundle,
    algorithms: &WebPkiSupportedAlgorithms,
    side: Side,
    crls: Option<&Crls<'_>>,
    leaf: LeafSvid,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<VerifiedChain, PeerRejection> {
    let presented = leaf.spiffe_id;
    if intermediates.len() > MAX_INTERMEDIATES {
        return Err(PeerRejection::InvalidChain {
            presented,
            reason: ChainError::TooManyIntermediates {
                presented: intermediates.len(),
                limit: MAX_INTERMEDIATES,
            },
        });
    }
    let usage = match side {
        Side::Clients => webpki::KeyUsage::client_auth(),
        Side::Servers => webpki::KeyUsage::server_auth(),
    };
    let revocation = crls.and_then(|(lists, _, enforce)| {
        // Unknown status is allowed: lists are opt-in per CA (SVIDs are short-lived).
        let expiration = if *enforce {
            webpki::ExpirationPolicy::Enforce
        } else {
            webpki::ExpirationPolicy::Ignore
        };
        webpki::RevocationOptionsBuilder::new(lists)
            .ok()
            .map(|options| {
                options
                    .with_depth(webpki::RevocationCheckDepth::Chain)
                    .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                    .with_expiration_policy(expiration)
                    .build()
            })
    });
    let chain_result = webpki::EndEntityCert::try_from(end_entity)
        .map_err(ChainError::from)
        .and_then(|cert| {
            let path = cert
                .verify_for_usage(
                    algorithms.all,
                    bundle.anchors(),
                    intermediates,
                    now,
                    usage,
                    revocation,
                    None,
                )
                .map_err(ChainError::from)?;
            let anchor = anchor_digest(path.anchor());
            signing_path(&path, leaf.validity).map(|signing| (signing, anchor))
        });
    let (((valid_from, mut valid_until), path), anchor) = match chain_result {
        Ok(checked) => checked,
        Err(reason) => return Err(PeerRejection::InvalidChain { presented, reason }),
    };
    // An enforced nextUpdate ends the cached verdict too (webpki refuses at nextUpdate).
    if let Some((_, Some(next_update), true)) = crls
        && let Ok(since_epoch) = next_update.duration_since(std::time::UNIX_EPOCH)
    {
        let next_update = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
        valid_until = valid_until.min(next_update.saturating_sub(1));
    }
    Ok(VerifiedChain {
        valid_from,
        valid_until,
        path,
        anchor,
        identity: PeerIdentity::new(presented, end_entity.clone().into_owned(), leaf.not_after),
    })
}

/// The revocation lists of one verification, their earliest nextUpdate, and whether it is
/// enforced.
pub(crate) type Crls<'a> = (
    Vec<&'a webpki::CertRevocationList<'static>>,
    Option<std::time::SystemTime>,
    bool,
);

/// The span (Unix seconds) in which a validated path is valid, and its intermediates.
type SigningPath = ((i64, i64), Arc<[CertificateDer<'static>]>);

/// Checks that every intermediate of a path rustls-webpki validated may sign certificates
/// (keyUsage keyCertSign: webpki does not check it), and returns the span in which the whole
/// path, leaf included, is valid, with the intermediates, the leaf's issuer first.
fn signing_path(
    path: &webpki::VerifiedPath<'_>,
    leaf_validity: (i64, i64),
) -> Result<SigningPath, ChainError> {
    let mut window = leaf_validity;
    let mut certs = Vec::new();
    for (index, cert) in path.intermediate_certificates().enumerate() {
        let depth = index + 1;
        let der = cert.der();
        let signing = inspect_signing_cert(der.as_ref()).map_err(|error| {
            ChainError::Other(format!("intermediate CA at depth {depth}: {error}"))
        })?;
        if !signing.key_cert_sign {
            return Err(ChainError::MissingKeyCertSign { depth });
        }
        window = (
            window.0.max(signing.validity.0),
            window.1.min(signing.validity.1),
        );
        certs.push(der.into_owned());
    }
    Ok((window, certs.into()))
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
    pub fn new(source: CredentialSource, allowed: AllowList) -> Result<Self, crate::ConfigError> {
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
        let verified = self.0.validate(&snapshot, None, leaf, intermediates, now)?;
        self.0.admit(&verified.identity, true)?;
        Ok(verified.identity)
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

    fn entry(leaf: &CertificateDer<'static>, path: &[CertificateDer<'static>]) -> VerifiedChain {
        let id = SpiffeId::new("spiffe://example.org/web").unwrap();
        VerifiedChain {
            valid_from: 100,
            valid_until: 200,
            path: path.into(),
            anchor: [0; 32],
            identity: PeerIdentity::new(id, leaf.clone(), UNIX_EPOCH + Duration::from_secs(200)),
        }
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    #[test]
    fn a_cached_chain_is_used_only_for_the_same_leaf_path_revision_and_window() {
        let cache = VerifiedChains::default();
        let (leaf, other_leaf, intermediate) = (cert(b"leaf"), cert(b"other"), cert(b"ca"));
        let key = cache.key(&leaf);
        cache.insert(key, (7, 0), entry(&leaf, &[]));

        assert!(cache.get(key, &leaf, &[], (7, 0), at(150)).is_some());
        // Same slot, other leaf (what a hash collision would present): not this identity.
        assert!(cache.get(key, &other_leaf, &[], (7, 0), at(150)).is_none());
        // Bundles changed since, or the clock left the chain's window.
        assert!(cache.get(key, &leaf, &[], (8, 0), at(150)).is_none());
        assert!(cache.get(key, &leaf, &[], (7, 0), at(99)).is_none());
        assert!(cache.get(key, &leaf, &[], (7, 0), at(201)).is_none());

        let (junk, other_ca) = (cert(b"junk"), cert(b"other ca"));
        cache.insert(
            key,
            (7, 0),
            entry(&leaf, std::slice::from_ref(&intermediate)),
        );
        // The path webpki used must be presented again; anything else presented is irrelevant.
        assert!(
            cache
                .get(
                    key,
                    &leaf,
                    &[junk.clone(), intermediate.clone()],
                    (7, 0),
                    at(150)
                )
                .is_some()
        );
        assert!(
            cache
                .get(key, &leaf, &[other_ca, junk], (7, 0), at(150))
                .is_none()
        );
        assert!(cache.get(key, &leaf, &[], (7, 0), at(150)).is_none());
    }

    #[test]
    fn a_newer_revision_drops_the_entries_of_the_older_ones() {
        let cache = VerifiedChains::default();
        let (a, b) = (cert(b"a"), cert(b"b"));
        cache.insert(cache.key(&a), (7, 0), entry(&a, &[]));
        assert_eq!(cache.usage().0, 1);
        cache.insert(cache.key(&b), (8, 0), entry(&b, &[]));
        assert_eq!(cache.usage().0, 1);
        assert!(cache.get(cache.key(&b), &b, &[], (8, 0), at(150)).is_some());
        // A handshake verified under the superseded revision is not kept.
        cache.insert(cache.key(&a), (7, 0), entry(&a, &[]));
        assert_eq!(cache.usage().0, 1);
        assert!(cache.get(cache.key(&a), &a, &[], (7, 0), at(150)).is_none());
    }

    /// The revocation lists' revision is part of the cache's: a chain verified under older
    /// lists is never served, and a newer list revision empties the cache.
    #[test]
    fn a_cached_chain_is_used_only_under_the_lists_it_was_verified_with() {
        let cache = VerifiedChains::default();
        let (a, b) = (cert(b"a"), cert(b"b"));
        cache.insert(cache.key(&a), (7, 1), entry(&a, &[]));
        assert!(cache.get(cache.key(&a), &a, &[], (7, 1), at(150)).is_some());
        assert!(cache.get(cache.key(&a), &a, &[], (7, 2), at(150)).is_none());
        cache.insert(cache.key(&b), (7, 2), entry(&b, &[]));
        assert_eq!(cache.usage().0, 1);
        // Verified under the older lists: not kept.
        cache.insert(cache.key(&a), (7, 1), entry(&a, &[]));
        assert!(cache.get(cache.key(&a), &a, &[], (7, 1), at(150)).is_none());
        // Newer credentials but older lists (a handshake that read them across two changes):
        // not kept either.
        cache.insert(cache.key(&a), (8, 1), entry(&a, &[]));
        assert!(cache.get(cache.key(&a), &a, &[], (8, 1), at(150)).is_none());
        assert!(cache.get(cache.key(&b), &b, &[], (7, 2), at(150)).is_some());
    }

    #[test]
    fn the_cache_is_bounded_by_entries() {
        let cache = VerifiedChains::default();
        for i in 0..VERIFIED_CHAINS_CAPACITY + 10 {
            let leaf = cert(&i.to_be_bytes());
            cache.insert(cache.key(&leaf), (1, 0), entry(&leaf, &[]));
        }
        assert!(cache.usage().0 <= VERIFIED_CHAINS_CAPACITY);
    }

    #[test]
    fn the_cache_is_bounded_by_bytes() {
        let cache = VerifiedChains::default();
        let big = cert(&vec![7u8; 60 * 1024]);
        let path = [big.clone(), big.clone(), big];
        for i in 0u32..100 {
            let leaf = cert(&i.to_be_bytes());
            cache.insert(cache.key(&leaf), (1, 0), entry(&leaf, &path));
            let (_, bytes) = cache.usage();
            assert!(bytes <= VERIFIED_CHAINS_MAX_BYTES, "{bytes} bytes cached");
        }
        // The byte count is what the entries hold (replacing an entry does not inflate it).
        let leaf = cert(b"again");
        cache.insert(cache.key(&leaf), (1, 0), entry(&leaf, &[]));
        cache.insert(cache.key(&leaf), (1, 0), entry(&leaf, &[]));
        let entries = cache.lock();
        assert_eq!(
            entries.bytes,
            entries.map.values().map(VerifiedChain::size).sum::<usize>()
        );
    }

    /// Entries of different leaves are kept side by side, each in its own slot, and an entry
    /// counts its leaf and path bytes plus the fixed overhead.
    #[test]
    fn entries_of_different_leaves_are_kept_side_by_side_and_counted_exactly() {
        let cache = VerifiedChains::default();
        let (a, b, ca) = (cert(b"leaf a"), cert(b"leaf b"), cert(b"intermediate"));
        cache.insert(cache.key(&a), (7, 0), entry(&a, std::slice::from_ref(&ca)));
        cache.insert(cache.key(&b), (7, 0), entry(&b, &[]));
        assert!(
            cache
                .get(
                    cache.key(&a),
                    &a,
                    std::slice::from_ref(&ca),
                    (7, 0),
                    at(150)
                )
                .is_some()
        );
        assert!(cache.get(cache.key(&b), &b, &[], (7, 0), at(150)).is_some());
        assert_eq!(cache.usage(), (2, 2 * ENTRY_OVERHEAD + 6 + 12 + 6));
    }

    /// Entries adding up to exactly the byte bound are all kept; the next one starts over.
    #[test]
    fn the_byte_bound_is_exact() {
        let cache = VerifiedChains::default();
        let quarter = VERIFIED_CHAINS_MAX_BYTES / 4 - ENTRY_OVERHEAD;
        for i in 0u8..4 {
            let mut bytes = vec![0u8; quarter];
            bytes[0] = i;
            let leaf = cert(&bytes);
            cache.insert(cache.key(&leaf), (1, 0), entry(&leaf, &[]));
        }
        assert_eq!(cache.usage(), (4, VERIFIED_CHAINS_MAX_BYTES));
        let one_more = cert(b"one more");
        cache.insert(cache.key(&one_more), (1, 0), entry(&one_more, &[]));
        assert_eq!(cache.usage(), (1, ENTRY_OVERHEAD + 8));
    }

    /// The verifier with real certificates: the rustls entry points and `identify`.
    #[cfg(feature = "testkit")]
    mod with_certificates {
        use std::time::SystemTime;

        use super::*;
        use crate::source::MemorySource;
        use crate::testkit::DevCa;

        const ALLOWED: &str = "spiffe://example.org/web";

        fn verifier(source: &MemorySource, side: Side) -> SvidVerifier {
            let provider = crate::crypto::default_provider().unwrap();
            SvidVerifier::new(
                source.source(),
                AllowList::from_iter([ALLOWED.parse().unwrap()]),
                side,
                provider.signature_verification_algorithms,
            )
        }

        fn unix(time: SystemTime) -> UnixTime {
            UnixTime::since_unix_epoch(time.duration_since(SystemTime::UNIX_EPOCH).unwrap())
        }

        /// The certificate error a rustls entry point returned: it chooses the alert the peer
        /// gets (the rejection itself is kept for the handshake's task, see `tls::capture`).
        fn rejection(error: rustls::Error) -> rustls::CertificateError {
            match error {
                rustls::Error::InvalidCertificate(error) => error,
                other => panic!("not a verifier rejection: {other:?}"),
            }
        }

        #[test]
        fn the_rustls_entry_points_refuse_what_verify_refuses() {
            let ca = DevCa::new("example.org").unwrap();
            let source = MemorySource::new(ca.credentials("spiffe://example.org/api").unwrap());
            let now = unix(SystemTime::now());
            let allowed = ca.svid(ALLOWED).issue().unwrap();
            let unlisted = ca.svid("spiffe://example.org/other").issue().unwrap();
            let untrusted = DevCa::new("example.org")
                .unwrap()
                .svid(ALLOWED)
                .issue()
                .unwrap();

            let clients = ClientSvidVerifier(Arc::new(verifier(&source, Side::Clients)));
            assert!(clients.offer_client_auth());
            assert!(clients.client_auth_mandatory());
            assert!(clients.verify_client_cert(allowed.leaf(), &[], now).is_ok());
            // Not allowed: access_denied; not trusted: unknown_ca.
            let error = clients
                .verify_client_cert(unlisted.leaf(), &[], now)
                .unwrap_err();
            assert_eq!(
                rejection(error),
                rustls::CertificateError::ApplicationVerificationFailure
            );
            let error = clients
                .verify_client_cert(untrusted.leaf(), &[], now)
                .unwrap_err();
            assert_eq!(rejection(error), rustls::CertificateError::UnknownIssuer);

            let servers = ServerSvidVerifier(Arc::new(verifier(&source, Side::Servers)));
            let name = ServerName::try_from("localhost").unwrap();
            assert!(
                servers
                    .verify_server_cert(allowed.leaf(), &[], &name, &[], now)
                    .is_ok()
            );
            let error = servers
                .verify_server_cert(unlisted.leaf(), &[], &name, &[], now)
                .unwrap_err();
            assert_eq!(
                rejection(error),
                rustls::CertificateError::ApplicationVerificationFailure
            );
            let error = servers
                .verify_server_cert(untrusted.leaf(), &[], &name, &[], now)
                .unwrap_err();
            assert_eq!(rejection(error), rustls::CertificateError::UnknownIssuer);
        }

        /// Exactly [`MAX_INTERMEDIATES`] presented intermediates are examined (those the path
        /// does not need are ignored by webpki); one more is refused before path building.
        /// The sweeper's subscriptions: the lists and each deny-list, named, each seeing its
        /// changes.
        #[test]
        fn trust_changes_name_the_revocation_lists_and_each_deny_list() {
            use crate::revocation::{DenyList, RevocationChecks, RevocationLists};

            let ca = DevCa::new("example.org").unwrap();
            let source = MemorySource::new(ca.credentials("spiffe://example.org/api").unwrap());
            let names = |v: &SvidVerifier| -> Vec<&'static str> {
                v.trust_changes().iter().map(|(name, _)| *name).collect()
            };
            assert_eq!(names(&verifier(&source, Side::Clients)), ["credentials"]);
            let lists = RevocationLists::new([ca.crl(&[]).der().unwrap()]).unwrap();
            let (first, second) = (DenyList::new(), DenyList::new());
            let verifier = verifier(&source, Side::Servers).with_revocation(RevocationChecks::new(
                Some(lists.clone()),
                vec![first.clone(), second.clone()],
            ));
            let changes = verifier.trust_changes();
            let names: Vec<_> = changes.iter().map(|(name, _)| *name).collect();
            assert_eq!(
                names,
                ["credentials", "revocation lists", "deny-list", "deny-list"]
            );
            second.deny_id(ALLOWED.parse().unwrap());
            assert!(!changes[2].1.has_changed().unwrap());
            assert!(changes[3].1.has_changed().unwrap());
            lists.replace([ca.crl(&[]).der().unwrap()]).unwrap();
            assert!(changes[1].1.has_changed().unwrap());
        }

        #[test]
        fn the_intermediate_limit_is_exact() {
            let ca = DevCa::new("example.org").unwrap();
            let source = MemorySource::new(ca.credentials("spiffe://example.org/api").unwrap());
            let verifier = verifier(&source, Side::Clients);
            let svid = ca.svid(ALLOWED).issue().unwrap();
            // Certificates the path does not use: other SVIDs of the same CA.
            let unused: Vec<_> = (0..=MAX_INTERMEDIATES)
                .map(|i| {
                    let id = format!("spiffe://example.org/unused/{i}");
                    ca.svid(&id).issue().unwrap().leaf().clone()
                })
                .collect();
            let now = unix(SystemTime::now());
            // Refused first: an admitted chain is cached, and the cache is asked first.
            match verifier.verify(svid.leaf(), &unused, now) {
                Err(PeerRejection::InvalidChain {
                    reason: ChainError::TooManyIntermediates { presented, limit },
                    ..
                }) => assert_eq!(
                    (presented, limit),
                    (MAX_INTERMEDIATES + 1, MAX_INTERMEDIATES)
                ),
                other => panic!("expected TooManyIntermediates, got {other:?}"),
            }
            let identity = verifier
                .verify(svid.leaf(), &unused[..MAX_INTERMEDIATES], now)
                .unwrap();
            assert_eq!(identity.spiffe_id().to_string(), ALLOWED);
        }

        #[test]
        fn each_verification_gives_an_identity_of_its_own_even_from_the_cache() {
            let ca = DevCa::new("example.org").unwrap();
            let source = MemorySource::new(ca.credentials("spiffe://example.org/api").unwrap());
            let verifier = verifier(&source, Side::Clients);
            let svid = ca.svid(ALLOWED).issue().unwrap();
            let now = unix(SystemTime::now());
            let first = verifier.verify(svid.leaf(), &[], now).unwrap();
            let table = crate::identity::LimitStateKey::unique();
            first.keep_limit_state(table, || std::sync::Arc::new(()));
            // The second is the cache's verdict, equal to the first, but what a limit kept in
            // the first connection's identity is not in it (the cache would otherwise keep
            // that state alive after the connection).
            let second = verifier.verify(svid.leaf(), &[], now).unwrap();
            assert_eq!(first, second);
            assert!(first.limit_state(table).is_some());
            assert!(second.limit_state(table).is_none());
        }

        #[test]
        fn identify_marks_refusals_of_resumed_sessions_and_only_those() {
            let ca = DevCa::new("example.org").unwrap();
            let source = MemorySource::new(ca.credentials("spiffe://example.org/api").unwrap());
            let verifier = verifier(&source, Side::Clients);
            let chain = ca.svid(ALLOWED).issue().unwrap().chain().to_vec();
            let now = unix(SystemTime::now());
            let later = unix(SystemTime::now() + std::time::Duration::from_secs(2 * 3600));

            // Still valid: the resumed session keeps its identity.
            let identity = verifier.identify(&chain, true, now).unwrap();
            assert_eq!(identity.identity.spiffe_id().to_string(), ALLOWED);

            // The leaf expired: refused, marked as a resumed session only when it is one; the
            // error carries the time of the check.
            let checked_at =
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(later.as_secs());
            let expired = |rejection: &PeerRejection| {
                matches!(
                    rejection,
                    PeerRejection::InvalidChain {
                        reason: ChainError::Expired { now, not_after },
                        ..
                    } if *now == checked_at && *not_after < checked_at
                )
            };
            match verifier.identify(&chain, true, later) {
                Err(PeerRejection::ResumedSessionInvalid(inner)) => assert!(expired(&inner)),
                other => panic!("expected ResumedSessionInvalid, got {other:?}"),
            }
            assert!(expired(
                &verifier.identify(&chain, false, later).unwrap_err()
            ));
            match verifier.identify(&[], true, now) {
                Err(PeerRejection::ResumedSessionInvalid(inner)) => {
                    assert!(matches!(*inner, PeerRejection::NoCertificate));
                }
                other => panic!("expected ResumedSessionInvalid, got {other:?}"),
            }
            assert!(matches!(
                verifier.identify(&[], false, now),
                Err(PeerRejection::NoCertificate)
            ));
        }
    }
}
