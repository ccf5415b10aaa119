//! Certificate resolvers that present the current SVID of a credential source.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::time_provider::TimeProvider;
use rustls_pki_types::UnixTime;

use crate::source::CredentialSource;

/// Presents the SVID of the source's current snapshot, read at each handshake.
///
/// An expired SVID is never presented (fail closed): the handshake then fails for lack of a
/// certificate. The channel refuses such handshakes before they start, with a clear error; this
/// is the second line.
#[derive(Debug)]
pub(crate) struct SvidResolver {
    source: CredentialSource,
    time: Arc<dyn TimeProvider>,
}

impl SvidResolver {
    pub(crate) fn new(source: CredentialSource, time: Arc<dyn TimeProvider>) -> Self {
        Self { source, time }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.source.snapshot();
        let svid = snapshot.credentials.svid();
        let now = self.time.current_time().unwrap_or_else(UnixTime::now);
        let not_after = svid
            .not_after()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        if now.as_secs() >= not_after.as_secs() {
            return None;
        }
        Some(svid.certified_key().clone())
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
