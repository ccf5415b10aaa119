//! Compiled matchers: rules indexed by route path, then by caller, so that a decision looks at
//! the few rules that can match instead of all of them.
//!
//! The index has two path maps: exact paths, and prefixes (`/api/*` is stored as `/api`, `/*`
//! as the empty string). A request path `/a/b/c` is looked up once in the exact map and once
//! per proper ancestor (`/a/b`, `/a`, root) in the prefix map, with borrowed slices: no
//! allocation. Each path bucket is split by caller: exact SPIFFE IDs, trust domains (with
//! whole-segment prefixes checked per entry), and rules for any authenticated peer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use http::Method;
use spiffe::{SpiffeId, TrustDomain};

use crate::authz::model::{CompiledRule, Effect, MethodSet, Principal, method_bit};
use crate::authz::path::PathPattern;
use crate::identity::IdMatcher;
use crate::jwt::VerifiedClaims;

/// A fast, unkeyed hash for the index's maps (the multiply-rotate step of rustc's `FxHasher`,
/// eight bytes at a time). The maps are built from the policy and only looked up with request
/// data, never filled with it, so a keyed hash (against flooding) buys nothing: a request can
/// only choose which of the policy's own probe sequences it walks. FNV-1a (before) took a
/// multiply per byte of the ~50 bytes a decision hashes (a path prefix, the caller's ID and
/// trust domain), this one a multiply per eight.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fx(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Fx {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for Fx {
    #[inline]
    fn finish(&self) -> u64 {
        // hashbrown takes the bucket from the low bits and the tag from the top seven; the
        // multiply leaves its best bits high, so bring some of them down.
        self.0.rotate_left(26)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
}

type Map<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

#[derive(Debug, Clone)]
struct Entry {
    rule: u32,
    methods: MethodSet,
}

#[derive(Debug, Clone)]
struct TdEntry {
    /// `None`: the whole trust domain; `Some`: whole segments below a path.
    below: Option<IdMatcher>,
    entry: Entry,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    by_id: Map<SpiffeId, Vec<Entry>>,
    by_td: Map<TrustDomain, Vec<TdEntry>>,
    any: Vec<Entry>,
}

/// The first matching rule (lowest index) of each kind.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Matches {
    pub(crate) allow: Option<u32>,
    pub(crate) deny: Option<u32>,
    pub(crate) shadow_allow: Option<u32>,
    pub(crate) shadow_deny: Option<u32>,
}

fn keep_first(slot: &mut Option<u32>, rule: u32) {
    if slot.is_none_or(|current| rule < current) {
        *slot = Some(rule);
    }
}

/// The per-request inputs, computed once.
struct Probe<'a> {
    caller: &'a SpiffeId,
    method: &'a Method,
    method_bit: Option<u16>,
    claims: Option<&'a VerifiedClaims>,
    rules: &'a [CompiledRule],
}

impl Probe<'_> {
    #[inline]
    fn consider(&self, entry: &Entry, matches: &mut Matches) {
        if !entry.methods.contains(self.method, self.method_bit) {
            return;
        }
        let Some(rule) = usize::try_from(entry.rule)
            .ok()
            .and_then(|i| self.rules.get(i))
        else {
            return;
        };
        if !rule.conditions.satisfied_by(self.claims) {
            return;
        }
        let slot = match (rule.effect, rule.shadow) {
            (Effect::Allow, false) => &mut matches.allow,
            (Effect::Deny, false) => &mut matches.deny,
            (Effect::Allow, true) => &mut matches.shadow_allow,
            (Effect::Deny, true) => &mut matches.shadow_deny,
        };
        keep_first(slot, entry.rule);
    }
}

impl Bucket {
    fn insert(&mut self, principal: &Principal, entry: Entry) {
        let matcher = match principal {
            Principal::AnyAuthenticated => {
                self.any.push(entry);
                return;
            }
            Principal::Id(matcher) => matcher,
        };
        let td = matcher.trust_domain_of_matches().clone();
        let text = matcher.to_string();
        if text == td.id_string() {
            self.by_td
                .entry(td)
                .or_default()
                .push(TdEntry { below: None, entry });
            return;
        }
        if !text.ends_with("/*")
            && let Ok(id) = SpiffeId::new(&text)
        {
            self.by_id.entry(id).or_default().push(entry);
            return;
        }
        // A prefix (or anything unexpected): checked with the matcher itself, always correct.
        self.by_td.entry(td).or_default().push(TdEntry {
            below: Some(matcher.clone()),
            entry,
        });
    }

    #[inline]
    fn scan(&self, probe: &Probe<'_>, matches: &mut Matches) {
        if let Some(entries) = self.by_id.get(probe.caller) {
            for entry in entries {
                probe.consider(entry, matches);
            }
        }
        if let Some(entries) = self.by_td.get(probe.caller.trust_domain()) {
            for td_entry in entries {
                if td_entry
                    .below
                    .as_ref()
                    .is_none_or(|m| m.matches(probe.caller))
                {
                    probe.consider(&td_entry.entry, matches);
                }
            }
        }
        for entry in &self.any {
            probe.consider(entry, matches);
        }
    }
}

/// The rules of a policy, indexed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    exact: Map<Box<str>, Bucket>,
    prefix: Map<Box<str>, Bucket>,
    /// The lengths of the `exact` keys: a request path of another length cannot be a key, so
    /// it is not looked up.
    exact_lengths: Lengths,
    /// The lengths of the `prefix` keys, for the same reason.
    prefix_lengths: Lengths,
}

impl Index {
    pub(crate) fn build(rules: &[CompiledRule]) -> Self {
        let mut index = Self::default();
        for (i, rule) in rules.iter().enumerate() {
            let Ok(rule_index) = u32::try_from(i) else {
                // More than 4 billion rules cannot be built in memory anyway.
                break;
            };
            for route in &rule.routes {
                let bucket = match &route.path {
                    PathPattern::Exact(path) => index.exact.entry(path.clone()).or_default(),
                    PathPattern::Prefix(prefix) => index.prefix.entry(prefix.clone()).or_default(),
                };
                for principal in &rule.principals {
                    bucket.insert(
                        principal,
                        Entry {
                            rule: rule_index,
                            methods: route.methods.clone(),
                        },
                    );
                }
            }
        }
        index.exact_lengths = Lengths::of_keys(&index.exact);
        index.prefix_lengths = Lengths::of_keys(&index.prefix);
        index
    }

    /// Finds the first matching rule of each kind for a normalized path.
    pub(crate) fn find(
        &self,
        rules: &[CompiledRule],
        caller: &SpiffeId,
        method: &Method,
        path: &str,
        claims: Option<&VerifiedClaims>,
    ) -> Matches {
        let probe = Probe {
            caller,
            method,
            method_bit: method_bit(method),
            claims,
            rules,
        };
        let mut matches = Matches::default();
        if self.exact_lengths.contains(path.len())
            && let Some(bucket) = self.exact.get(path)
        {
            bucket.scan(&probe, &mut matches);
        }
        if !self.prefix.is_empty() {
            // Every prefix ending before a `/`, longest first (the root prefix is "").
            let slashes = path.bytes().enumerate().rev().filter(|&(_, b)| b == b'/');
            for (slash, _) in slashes {
                if !self.prefix_lengths.contains(slash) {
                    continue;
                }
                if let Some(bucket) = path.get(..slash).and_then(|p| self.prefix.get(p)) {
                    bucket.scan(&probe, &mut matches);
                }
            }
        }
        matches
    }
}

/// A set of key lengths: a bit per length below 64 (one test per lookup, for the lengths
/// routes have), a sorted list for the longer ones.
#[derive(Debug, Clone, Default)]
struct Lengths {
    short: u64,
    long: Vec<usize>,
}

impl Lengths {
    fn of_keys(map: &Map<Box<str>, Bucket>) -> Self {
        let mut lengths = Self::default();
        for key in map.keys() {
            match key.len() {
                n @ 0..64 => lengths.short |= 1 << n,
                n => lengths.long.push(n),
            }
        }
        lengths.long.sort_unstable();
        lengths.long.dedup();
        lengths
    }

    #[inline]
    fn contains(&self, length: usize) -> bool {
        match length {
            n @ 0..64 => self.short & (1 << n) != 0,
            n => self.long.binary_search(&n).is_ok(),
        }
    }
}
