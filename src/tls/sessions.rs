//! A client session cache that forgets everything when the credentials rotate.

use std::sync::{Arc, Mutex};

use rustls::NamedGroup;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls_pki_types::ServerName;

use crate::source::CredentialSource;

/// How many servers' sessions are remembered.
const CAPACITY: usize = 256;

/// Delegates to an in-memory cache that is replaced whenever the source's revision changes.
///
/// Resumption would otherwise keep presenting the SVID a session was made with (a resumed TLS
/// 1.3 session sends no certificate), and keep trusting a server chain verified against bundles
/// that have since changed; after a rotation the next connection does a full handshake instead.
#[derive(Debug)]
pub(crate) struct RotatingSessionStore {
    source: CredentialSource,
    current: Mutex<(u64, Arc<ClientSessionMemoryCache>)>,
}

impl RotatingSessionStore {
    pub(crate) fn new(source: CredentialSource) -> Self {
        let revision = source.revision();
        Self {
            source,
            current: Mutex::new((revision, Arc::new(ClientSessionMemoryCache::new(CAPACITY)))),
        }
    }

    fn cache(&self) -> Arc<ClientSessionMemoryCache> {
        let revision = self.source.revision();
        let mut current = match self.current.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.0 != revision {
            *current = (revision, Arc::new(ClientSessionMemoryCache::new(CAPACITY)));
        }
        current.1.clone()
    }
}

impl ClientSessionStore for RotatingSessionStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.cache().set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache().kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.cache().set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.cache().tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.cache().remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.cache().insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.cache().take_tls13_ticket(server_name)
    }
}
