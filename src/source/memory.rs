//! Credentials handed over in code.

use crate::source::{CredentialSource, Credentials, Publisher};

/// A source holding credentials given in code; [`MemorySource::update`] rotates them.
pub struct MemorySource {
    source: CredentialSource,
    publisher: Publisher,
}

impl MemorySource {
    /// A source whose first snapshot is `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        let (source, publisher) = CredentialSource::new("memory", credentials);
        Self { source, publisher }
    }

    /// Replaces the credentials; new handshakes use them, established connections keep theirs.
    pub fn update(&self, credentials: Credentials) {
        self.publisher.publish(credentials);
    }

    /// The handle to build channels from.
    pub fn source(&self) -> CredentialSource {
        self.source.clone()
    }
}

impl From<&MemorySource> for CredentialSource {
    fn from(memory: &MemorySource) -> Self {
        memory.source()
    }
}

impl From<&CredentialSource> for CredentialSource {
    /// A handle on the same source, so `SecureChannel::builder(&source)` reads as it does for a
    /// [`MemorySource`].
    fn from(source: &CredentialSource) -> Self {
        source.clone()
    }
}

impl std::fmt::Debug for MemorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MemorySource").field(&self.source).finish()
    }
}
