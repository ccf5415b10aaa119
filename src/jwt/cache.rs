//! A bounded cache of validated tokens, keyed by the token and the connection's certificate.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::jwt::VerifiedClaims;

const SHARDS: usize = 16;

/// How much of the token the slot's hash reads: its last bytes, which are signature bytes
/// (base64url, 6 bits each) in any token that has a signature.
const KEY_TOKEN_BYTES: usize = 24;
/// How much of the certificate thumbprint (SHA-256) the slot's hash reads.
const KEY_THUMBPRINT_BYTES: usize = 8;

/// Where a token presented on a connection is looked up: a keyed hash of the token's last
/// bytes and the connection's certificate thumbprint, with the two themselves.
///
/// The hash only finds the slot; an entry answers only for the very token (compared byte for
/// byte) on the very certificate, so the same token on another connection's certificate is a
/// different entry and a collision costs a validation, never a wrong answer. Hashing the end
/// of the signature (144 bits of it) and 64 bits of the thumbprint keeps the lookup cheap:
/// signatures are what makes tokens differ, and only tokens that passed validation, so carry
/// an issuer's signature, are ever stored. SipHash with a per-cache random key keeps peers
/// from aiming at one slot.
pub(crate) struct CacheKey<'a> {
    hash: u64,
    token: &'a [u8],
    thumbprint: &'a [u8; 32],
}

/// The map's keys are already keyed hashes: used as they are.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Entry {
    token: Box<[u8]>,
    thumbprint: [u8; 32],
    claims: VerifiedClaims,
    /// Unix seconds after which the token is no longer accepted (`exp` plus leeway).
    deadline: f64,
    /// The key source revision the token was verified under: a key change re-verifies.
    revision: u64,
}

impl Entry {
    fn is_for(&self, key: &CacheKey<'_>) -> bool {
        &self.thumbprint == key.thumbprint && *self.token == *key.token
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, Entry, BuildHasherDefault<PassThrough>>,
    order: VecDeque<u64>,
}

/// Validated tokens, at most `capacity` of them (oldest evicted first).
pub(crate) struct TokenCache {
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// The lookup key of `token` presented on a connection whose certificate has `thumbprint`.
    ///
    /// `token` is the bytes as presented, not yet known to be UTF-8: an entry answers only for
    /// the bytes of a token that was decoded and validated.
    pub(crate) fn key<'a>(&self, token: &'a [u8], thumbprint: &'a [u8; 32]) -> CacheKey<'a> {
        let tail = &token[token.len().saturating_sub(KEY_TOKEN_BYTES)..];
        let mut hasher = self.hasher.build_hasher();
        hasher.write(tail);
        hasher.write(&thumbprint[..KEY_THUMBPRINT_BYTES]);
        CacheKey {
            hash: hasher.finish(),
            token,
            thumbprint,
        }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // Middle bits: the map itself uses the low bits for the bucket and the top ones as tags.
        let index = (hash >> 32) as usize % SHARDS;
        // Entries are plain data: a poisoned shard is still consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The claims of a token validated before, if still within its deadline and verified
    /// under the current key revision.
    pub(crate) fn get(
        &self,
        key: &CacheKey<'_>,
        now: f64,
        revision: u64,
    ) -> Option<VerifiedClaims> {
        let mut shard = self.shard(key.hash);
        let entry = shard.map.get(&key.hash)?;
        if !entry.is_for(key) {
            return None;
        }
        if now < entry.deadline && entry.revision == revision {
            return Some(entry.claims.clone());
        }
        shard.map.remove(&key.hash);
        None
    }

    pub(crate) fn insert(
        &self,
        key: &CacheKey<'_>,
        claims: VerifiedClaims,
        deadline: f64,
        revision: u64,
    ) {
        let mut shard = self.shard(key.hash);
        while shard.map.len() >= self.per_shard {
            let Some(oldest) = shard.order.pop_front() else {
                shard.map.clear();
                break;
            };
            shard.map.remove(&oldest);
        }
        // Bound the order queue too (it can hold keys already removed as stale).
        if shard.order.len() >= 2 * self.per_shard {
            let Shard { map, order } = &mut *shard;
            order.retain(|k| map.contains_key(k));
        }
        shard.order.push_back(key.hash);
        shard.map.insert(
            key.hash,
            Entry {
                token: key.token.into(),
                thumbprint: *key.thumbprint,
                claims,
                deadline,
                revision,
            },
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }

    /// A key with a chosen hash: what a collision would look like.
    #[cfg(test)]
    fn colliding<'a>(&self, hash: u64, token: &'a [u8], thumbprint: &'a [u8; 32]) -> CacheKey<'a> {
        CacheKey {
            hash,
            token,
            thumbprint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> VerifiedClaims {
        VerifiedClaims::new(serde_json::Map::new())
    }

    #[test]
    fn honors_deadline_revision_and_capacity() {
        let cache = TokenCache::new(32);
        let key = cache.key(b"a.b.c", &[1; 32]);
        cache.insert(&key, claims(), 100.0, 1);
        assert!(cache.get(&key, 99.0, 1).is_some());
        assert!(cache.get(&cache.key(b"a.b.c", &[2; 32]), 99.0, 1).is_none());
        assert!(cache.get(&key, 99.0, 2).is_none(), "key revision changed");
        cache.insert(&key, claims(), 100.0, 1);
        assert!(cache.get(&key, 100.0, 1).is_none(), "deadline passed");
        assert_eq!(cache.len(), 0);

        let tokens: Vec<String> = (0..1000).map(|i| format!("h.p.t{i}")).collect();
        for token in &tokens {
            cache.insert(&cache.key(token.as_bytes(), &[0; 32]), claims(), 1e12, 1);
        }
        assert!(cache.len() <= 32, "bounded: {}", cache.len());
    }

    #[test]
    fn an_entry_answers_only_for_its_own_token_and_certificate() {
        let cache = TokenCache::new(32);
        let key = cache.key(b"h.p.sig", &[1; 32]);
        cache.insert(&key, claims(), 100.0, 1);
        // Same slot (a collision), other token or other certificate: no answer.
        let other_token = cache.colliding(key.hash, b"h.p2.sig", &[1; 32]);
        assert!(cache.get(&other_token, 99.0, 1).is_none());
        let other_cert = cache.colliding(key.hash, b"h.p.sig", &[2; 32]);
        assert!(cache.get(&other_cert, 99.0, 1).is_none());
        // The same signature segment with another header or payload is another token.
        assert!(
            cache
                .get(&cache.key(b"h2.p.sig", &[1; 32]), 99.0, 1)
                .is_none()
        );
        assert!(cache.get(&key, 99.0, 1).is_some());
    }

    /// The slot's hash reads only the token's end and the thumbprint's start: tokens and
    /// certificates that differ elsewhere share the slot and are told apart by the comparison.
    #[test]
    fn what_the_hash_does_not_read_still_tells_entries_apart() {
        let cache = TokenCache::new(32);
        let signature = "s".repeat(KEY_TOKEN_BYTES);
        let token = format!("h.p.{signature}");
        let thumbprint = [1; 32];
        let key = cache.key(token.as_bytes(), &thumbprint);
        cache.insert(&key, claims(), 100.0, 1);

        let other_payload = format!("h.p2.{signature}");
        let same_end = cache.key(other_payload.as_bytes(), &thumbprint);
        assert_eq!(same_end.hash, key.hash);
        assert!(cache.get(&same_end, 99.0, 1).is_none());

        let mut late_byte = thumbprint;
        late_byte[31] = 2;
        let same_start = cache.key(token.as_bytes(), &late_byte);
        assert_eq!(same_start.hash, key.hash);
        assert!(cache.get(&same_start, 99.0, 1).is_none());

        assert!(
            cache
                .get(&cache.key(token.as_bytes(), &thumbprint), 99.0, 1)
                .is_some()
        );
    }
}
