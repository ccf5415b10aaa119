//! Session caches that forget everything when the credentials rotate.
//!
//! A resumed TLS 1.3 session sends no certificates: the server keeps trusting the client chain
//! it verified when the session was made, and the client keeps presenting (and trusting) what
//! it had then. Both sides therefore drop their sessions when their own credentials change (a
//! new SVID, or a new set of bundles), so the next connection runs a full handshake with the
//! current material. Resumed sessions within one revision are still re-validated against the
//! current clock when they are accepted.
//!
//! A session is only stored once its handshake is over (the client reads its tickets after
//! the handshake, the server issues them on the client's last flight), which may be after a
//! rotation: so each connection's view of the cache is pinned to the revision its handshake
//! started under, and a session made before a rotation is dropped instead of landing in the
//! cache of the next revision.

use std::sync::{Arc, Mutex};

use rustls::NamedGroup;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls_pki_types::ServerName;

use crate::source::CredentialSource;

/// How many servers' sessions are remembered.
const CAPACITY: usize = 256;

/// A view of an in-memory cache of `C` that is replaced whenever the source's revision changes:
/// either following the current revision, or pinned to one (one connection's view).
#[derive(Debug)]
pub(crate) struct Rotating<C> {
    shared: Arc<Shared<C>>,
    /// The revision this view stores and finds sessions for; `None` follows the current one.
    pinned: Option<u64>,
}

/// The cache every view of one channel shares, and the revision it was made for.
#[derive(Debug)]
struct Shared<C> {
    source: CredentialSource,
    make: fn() -> Arc<C>,
    current: Mutex<(u64, Arc<C>)>,
}

/// The client side's session cache.
pub(crate) type RotatingSessionStore = Rotating<ClientSessionMemoryCache>;
/// The server side's session cache.
pub(crate) type RotatingServerSessions = Rotating<ServerSessionMemoryCache>;

impl RotatingSessionStore {
    pub(crate) fn new(source: CredentialSource) -> Self {
        Rotating::with(source, || Arc::new(ClientSessionMemoryCache::new(CAPACITY)))
    }
}

impl RotatingServerSessions {
    pub(crate) fn new(source: CredentialSource) -> Self {
        Rotating::with(source, || ServerSessionMemoryCache::new(CAPACITY))
    }
}

impl<C> Clone for Rotating<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            pinned: self.pinned,
        }
    }
}

impl<C> Rotating<C> {
    fn with(source: CredentialSource, make: fn() -> Arc<C>) -> Self {
        let revision = source.revision();
        Self {
            shared: Arc::new(Shared {
                source,
                make,
                current: Mutex::new((revision, make())),
            }),
            pinned: None,
        }
    }

    /// The view of one connection whose handshake starts now: the same cache, pinned to the
    /// current revision.
    pub(crate) fn pinned(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            pinned: Some(self.shared.source.revision()),
        }
    }

    /// The cache of the current revision; none if this view is pinned to an earlier one.
    fn cache(&self) -> Option<Arc<C>> {
        let revision = self.shared.source.revision();
        let mut current = match self.shared.current.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.0 != revision {
            *current = (revision, (self.shared.make)());
        }
        match self.pinned {
            Some(pinned) if pinned != revision => None,
            _ => Some(current.1.clone()),
        }
    }
}

impl StoresServerSessions for RotatingServerSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.cache().is_some_and(|cache| cache.put(key, value))
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache()?.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.cache()?.take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

impl ClientSessionStore for RotatingSessionStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        if let Some(cache) = self.cache() {
            cache.set_kx_hint(server_name, group);
        }
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache()?.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        if let Some(cache) = self.cache() {
            cache.set_tls12_session(server_name, value);
        }
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.cache()?.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        if let Some(cache) = self.cache() {
            cache.remove_tls12_session(server_name);
        }
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        if let Some(cache) = self.cache() {
            cache.insert_tls13_ticket(server_name, value);
        }
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.cache()?.take_tls13_ticket(server_name)
    }
}
