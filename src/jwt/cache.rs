//! A bounded cache of validated tokens, keyed by the token and the connection's certificate.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};

use crate::jwt::VerifiedClaims;

const SHARDS: usize = 16;

/// SHA-256 of the token followed by the SHA-256 thumbprint of the peer's leaf certificate: the
/// same token presented on another connection's certificate is a different entry.
pub(crate) type CacheKey = [u8; 64];

pub(crate) fn cache_key(token: &str, thumbprint: &[u8; 32]) -> CacheKey {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(&Sha256::digest(token.as_bytes()));
    key[32..].copy_from_slice(thumbprint);
    key
}

/// The key is already a cryptographic digest: its first eight bytes are a fine hash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Mixes in the first eight bytes of each write (the length prefix, then the digest).
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }
}

struct Entry {
    claims: VerifiedClaims,
    /// Unix seconds after which the token is no longer accepted (`exp` plus leeway).
    deadline: f64,
    /// The key source revision the token was verified under: a key change re-verifies.
    revision: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<CacheKey, Entry, BuildHasherDefault<DigestHasher>>,
    order: VecDeque<CacheKey>,
}

/// Validated tokens, at most `capacity` of them (oldest evicted first).
pub(crate) struct TokenCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &CacheKey) -> MutexGuard<'_, Shard> {
        let index = usize::from(key[8]) % SHARDS;
        // Entries are plain data: a poisoned shard is still consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The claims of a token validated before, if still within its deadline and verified
    /// under the current key revision.
    pub(crate) fn get(&self, key: &CacheKey, now: f64, revision: u64) -> Option<VerifiedClaims> {
        let mut shard = self.shard(key);
        let entry = shard.map.get(key)?;
        if now < entry.deadline && entry.revision == revision {
            return Some(entry.claims.clone());
        }
        shard.map.remove(key);
        None
    }

    pub(crate) fn insert(
        &self,
        key: CacheKey,
        claims: VerifiedClaims,
        deadline: f64,
        revision: u64,
    ) {
        let mut shard = self.shard(&key);
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
        shard.order.push_back(key);
        shard.map.insert(
            key,
            Entry {
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
        let key = cache_key("a.b.c", &[1; 32]);
        cache.insert(key, claims(), 100.0, 1);
        assert!(cache.get(&key, 99.0, 1).is_some());
        assert!(cache.get(&cache_key("a.b.c", &[2; 32]), 99.0, 1).is_none());
        assert!(cache.get(&key, 99.0, 2).is_none(), "key revision changed");
        cache.insert(key, claims(), 100.0, 1);
        assert!(cache.get(&key, 100.0, 1).is_none(), "deadline passed");
        assert_eq!(cache.len(), 0);

        for i in 0..1000 {
            cache.insert(cache_key(&format!("t{i}"), &[0; 32]), claims(), 1e12, 1);
        }
        assert!(cache.len() <= 32, "bounded: {}", cache.len());
    }
}
