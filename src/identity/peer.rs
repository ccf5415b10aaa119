//! The verified identity of the peer on a connection.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use spiffe::{SpiffeId, TrustDomain};

/// The SPIFFE identity a peer proved in the TLS handshake.
///
/// Only this crate constructs it, after the peer's X.509-SVID chain validated against the bundle
/// of the peer's own trust domain and the peer's ID was allowed; holding one is the proof.
///
/// Cloning is cheap (a reference count): the identity is shared by the connection, every
/// request on it, and the verifier's cache of verified chains.
#[derive(Clone)]
pub struct PeerIdentity {
    inner: Arc<Inner>,
}

struct Inner {
    spiffe_id: SpiffeId,
    leaf: CertificateDer<'static>,
    /// Computed on first use: only certificate-bound token checks need it, and most
    /// connections never present a token.
    thumbprint: OnceLock<[u8; 32]>,
    not_after: SystemTime,
    /// Computed on first use, by the first limit that looks the caller up.
    id_key: OnceLock<IdKey>,
}

/// A 128-bit keyed hash of a SPIFFE ID: two SipHash-1-3 with independent random keys of the
/// process. Per-caller state (the rate and concurrency limits) is keyed by it, computed once per
/// connection (see [`PeerIdentity::id_key`]) rather than hashing the ID's text per request.
///
/// Two IDs have the same key only if both hashes collide: about 2^-128 for any two, and no peer
/// can aim at it without the process's random keys, which never leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct IdKey(u64, u64);

impl IdKey {
    /// The key of `id`.
    pub(crate) fn of(id: &SpiffeId) -> Self {
        static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
        let (first, second) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
        Self(first.hash_one(id), second.hash_one(id))
    }
}

/// Two identities are equal when they hold the same ID and leaf certificate (the thumbprint
/// follows from the leaf, computed or not).
impl PartialEq for PeerIdentity {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || (self.inner.spiffe_id == other.inner.spiffe_id
                && self.inner.leaf == other.inner.leaf
                && self.inner.not_after == other.inner.not_after)
    }
}

impl Eq for PeerIdentity {}

impl PeerIdentity {
    pub(crate) fn new(
        spiffe_id: SpiffeId,
        leaf: CertificateDer<'static>,
        not_after: SystemTime,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                spiffe_id,
                leaf,
                thumbprint: OnceLock::new(),
                not_after,
                id_key: OnceLock::new(),
            }),
        }
    }

    /// An identity for `id` with a placeholder leaf, valid for an hour: for the tests of the
    /// layers, which look only at the ID.
    #[cfg(test)]
    #[allow(clippy::unwrap_used)]
    pub(crate) fn for_tests(id: &str) -> Self {
        Self::new(
            SpiffeId::new(id).unwrap(),
            CertificateDer::from(vec![1, 2, 3]),
            SystemTime::now() + std::time::Duration::from_secs(3600),
        )
    }

    /// The peer's SPIFFE ID, from the one URI SAN of its leaf certificate.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.inner.spiffe_id
    }

    /// The trust domain of the peer's SPIFFE ID (whose bundle its chain was verified against).
    pub fn trust_domain(&self) -> &TrustDomain {
        self.inner.spiffe_id.trust_domain()
    }

    /// The DER of the peer's leaf certificate, as presented on this connection.
    pub fn leaf_certificate(&self) -> &CertificateDer<'static> {
        &self.inner.leaf
    }

    /// The SHA-256 digest of the leaf certificate's DER (the RFC 8705 `x5t#S256` thumbprint).
    pub fn thumbprint_sha256(&self) -> &[u8; 32] {
        self.inner
            .thumbprint
            .get_or_init(|| Sha256::digest(self.inner.leaf.as_ref()).into())
    }

    /// [`thumbprint_sha256`](Self::thumbprint_sha256) as lower-case hex, the form certificate
    /// tools print (`openssl x509 -fingerprint -sha256` without the colons).
    pub fn thumbprint_sha256_hex(&self) -> String {
        use std::fmt::Write;
        self.thumbprint_sha256()
            .iter()
            .fold(String::with_capacity(64), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            })
    }

    /// [`thumbprint_sha256`](Self::thumbprint_sha256) in unpadded base64url, the form of a
    /// token's `cnf` claim `x5t#S256` (RFC 8705).
    pub fn thumbprint_sha256_base64url(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.thumbprint_sha256())
    }

    /// When the peer's leaf certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.inner.not_after
    }

    /// The [`IdKey`] of the peer's SPIFFE ID, computed once per identity (so once per
    /// connection).
    #[inline]
    pub(crate) fn id_key(&self) -> IdKey {
        *self
            .inner
            .id_key
            .get_or_init(|| IdKey::of(&self.inner.spiffe_id))
    }
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("spiffe_id", &self.inner.spiffe_id.to_string())
            .field("not_after", &self.inner.not_after)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thumbprint_in_hex_and_base64url() {
        // SHA-256 of the bytes 1, 2, 3 (the test identity's "leaf").
        let peer = PeerIdentity::for_tests("spiffe://example.org/web");
        assert_eq!(
            peer.thumbprint_sha256_hex(),
            "039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81"
        );
        assert_eq!(
            peer.thumbprint_sha256_base64url(),
            "A5BYxvLAy0ksUzsKTRTvd8wPeKvMztUofYShogEc-4E"
        );
    }

    #[test]
    fn identities_are_equal_by_id_leaf_and_expiry() {
        let id = SpiffeId::new("spiffe://example.org/web").unwrap();
        let leaf = CertificateDer::from(vec![1, 2, 3]);
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let peer = PeerIdentity::new(id.clone(), leaf.clone(), at);
        assert_eq!(peer, peer.clone());
        assert_eq!(peer, PeerIdentity::new(id.clone(), leaf.clone(), at));
        let other_id = SpiffeId::new("spiffe://example.org/api").unwrap();
        assert_ne!(peer, PeerIdentity::new(other_id, leaf.clone(), at));
        assert_ne!(
            peer,
            PeerIdentity::new(id.clone(), CertificateDer::from(vec![4]), at)
        );
        assert_ne!(
            peer,
            PeerIdentity::new(id, leaf, at + std::time::Duration::from_secs(1))
        );
    }

    #[test]
    fn debug_shows_the_id_and_not_the_certificate() {
        let debug = format!("{:?}", PeerIdentity::for_tests("spiffe://example.org/web"));
        assert!(debug.starts_with("PeerIdentity {"), "{debug}");
        assert!(debug.contains("spiffe://example.org/web"), "{debug}");
        assert!(!debug.contains("leaf"), "{debug}");
    }
}
