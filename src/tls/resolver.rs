//! Certificate resolvers that present the current SVID of a credential source.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::source::CredentialSource;

/// Presents the SVID of the source's current snapshot, read at each handshake.
#[derive(Debug)]
pub(crate) struct SvidResolver {
    source: CredentialSource,
}

impl SvidResolver {
    pub(crate) fn new(source: CredentialSource) -> Self {
        Self { source }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.source
            .snapshot()
            .credentials
            .svid()
            .certified_key()
            .clone()
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
