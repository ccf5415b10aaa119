//! The verified identity of the peer on a connection.

use std::any::Any;
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
/// Cloning is cheap (a reference count): the identity is shared by the connection and every
/// request on it.
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
    /// The caller's state in the tables of per-caller limits that looked it up first (by each
    /// table's [`LimitStateKey`]), kept here so that the connection's later requests go
    /// straight to it instead of through the table's map.
    limit_states: [OnceLock<(LimitStateKey, LimitState)>; LIMIT_STATES],
}

/// How many tables of per-caller limits an identity keeps its state in (the rate-limit layer's
/// and a few policy rules'); further tables look the caller up in their maps.
const LIMIT_STATES: usize = 4;

/// A caller's state in a table of per-caller limits, as an identity keeps it: the table's own
/// type, which this room does not know (`limit` is above it).
pub(crate) type LimitState = Arc<dyn Any + Send + Sync>;

/// Which table of per-caller limits a [`LimitState`] belongs to: unique in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitStateKey(u64);

impl LimitStateKey {
    /// A key no other table has.
    pub(crate) fn unique() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
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
                limit_states: Default::default(),
            }),
        }
    }

    /// The identity as one connection holds it: the same ID, leaf and expiry (and what was
    /// computed of them), with none of the state per-caller limits keep in it. The verifier
    /// gives each connection its own, so that an identity held by its cache of verified chains
    /// does not keep limit state alive after its connections are gone.
    pub(crate) fn for_connection(&self) -> Self {
        let inner = &*self.inner;
        Self {
            inner: Arc::new(Inner {
                spiffe_id: inner.spiffe_id.clone(),
                leaf: inner.leaf.clone(),
                thumbprint: inner.thumbprint.clone(),
                not_after: inner.not_after,
                id_key: inner.id_key.clone(),
                limit_states: Default::default(),
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

    /// The state the table `table` keeps for this caller, if the identity holds it.
    #[inline]
    pub(crate) fn limit_state(&self, table: LimitStateKey) -> Option<&LimitState> {
        self.inner
            .limit_states
            .iter()
            .map_while(OnceLock::get)
            .find(|(key, _)| *key == table)
            .map(|(_, state)| state)
    }

    /// Keeps `state` as the table `table`'s state for this caller, in the first free place (none
    /// left: not kept). The identity holds it as long as it lives (its connection and the
    /// requests on it: see [`for_connection`](Self::for_connection)), and the table keeps
    /// every state held elsewhere.
    pub(crate) fn keep_limit_state(
        &self,
        table: LimitStateKey,
        state: impl FnOnce() -> LimitState,
    ) {
        let places = &self.inner.limit_states;
        // The places fill in order, so the full ones are always a prefix (`limit_state` stops
        // at the first empty one): the last one full, there is no room.
        if places.last().is_none_or(|last| last.get().is_some()) {
            return;
        }
        let mut state = state();
        for place in places {
            match place.set((table, state)) {
                Ok(()) => return,
                Err((_, back)) => state = back,
            }
            if place.get().is_some_and(|(key, _)| *key == table) {
                return;
            }
        }
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
    fn limit_states_are_kept_per_table_in_the_first_free_places() {
        let peer = PeerIdentity::for_tests("spiffe://example.org/web");
        let tables: Vec<LimitStateKey> = (0..LIMIT_STATES + 1)
            .map(|_| LimitStateKey::unique())
            .collect();
        for (n, table) in tables.iter().enumerate() {
            assert!(peer.limit_state(*table).is_none());
            peer.keep_limit_state(*table, || Arc::new(n));
        }
        for (n, table) in tables.iter().enumerate().take(LIMIT_STATES) {
            let state = peer.limit_state(*table).unwrap();
            assert_eq!(state.downcast_ref::<usize>(), Some(&n));
        }
        // No place left for the last one.
        assert!(peer.limit_state(tables[LIMIT_STATES]).is_none());
        // A table keeps one state: keeping again does not replace it.
        peer.keep_limit_state(tables[1], || Arc::new(99usize));
        let state = peer.limit_state(tables[1]).unwrap();
        assert_eq!(state.downcast_ref::<usize>(), Some(&1));
        // A clone is the same identity, with the same states.
        assert!(peer.clone().limit_state(tables[0]).is_some());
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
