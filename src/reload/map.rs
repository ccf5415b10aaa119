//! A live map: values by key, each set or removed on its own, the whole map published as one
//! snapshot (bundles by trust domain).

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::sync::Arc;

use arc_swap::Guard;

use crate::reload::{Live, Notices, Writer};

/// A [`Live`] map with its writer: readers load the whole map in one atomic load, writers set
/// or remove one key at a time. Cheap to share behind an `Arc`.
pub(crate) struct LiveMap<K, V> {
    live: Live<HashMap<K, V>>,
    writer: Writer<HashMap<K, V>>,
}

impl<K: Eq + Hash + Clone, V: Clone> LiveMap<K, V> {
    /// An empty map at revision 1; `kind` and `what` name it in log lines.
    pub(crate) fn new(kind: &'static str, what: &'static str) -> Self {
        let (live, writer) = Live::new(kind, what, HashMap::new());
        Self { live, writer }
    }

    /// Sets the value of `key`, unless the value held is `same` as it; returns whether the
    /// map changed.
    pub(crate) fn set(&self, key: K, value: V, same: impl FnOnce(&V, &V) -> bool) -> bool {
        self.writer
            .update(|current, _| {
                if current.get(&key).is_some_and(|held| same(held, &value)) {
                    return None;
                }
                let mut next = current.clone();
                next.insert(key, value);
                Some(next)
            })
            .is_some()
    }

    /// Removes `key`; returns whether it was there.
    pub(crate) fn remove(&self, key: &K) -> bool {
        self.writer
            .update(|current, _| {
                let mut next = current.clone();
                next.remove(key).is_some().then_some(next)
            })
            .is_some()
    }

    /// Records a value refused (logged and counted; the map stays as it is).
    pub(crate) fn refuse(&self, error: &dyn Display) {
        self.writer.refuse(error);
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.live.load().get(key).cloned()
    }

    /// The keys, in no particular order.
    pub(crate) fn keys(&self) -> Vec<K> {
        self.live.load().keys().cloned().collect()
    }

    /// The whole map.
    pub(crate) fn current(&self) -> Arc<HashMap<K, V>> {
        self.live.current()
    }

    /// The whole map, without touching its reference count (for per-request reads).
    pub(crate) fn load(&self) -> Guard<Arc<HashMap<K, V>>> {
        self.live.load()
    }

    /// The revision and refused counts, and their notifications.
    pub(crate) fn notices(&self) -> &Notices {
        self.live.notices()
    }
}
