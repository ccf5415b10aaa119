//! Revocation for incident response: certificate revocation lists (CRLs) and deny-lists.
//!
//! - [`RevocationLists`]: X.509 CRLs of the CAs that publish them, checked by rustls-webpki
//!   over the whole validated chain (leaf and intermediates) on every handshake;
//! - [`DenyList`]: peers refused by exact SPIFFE ID or by the SHA-256 of their leaf
//!   certificate, for the cases no CRL covers yet.
//!
//! Both are live values, changed from code or followed from files (content compared, applied
//! once stable, the last good value kept on a refused reload), and handed to a channel with
//! [`SecureChannelBuilder::revocation_lists`](crate::SecureChannelBuilder::revocation_lists)
//! and [`SecureChannelBuilder::deny_list`](crate::SecureChannelBuilder::deny_list). Every
//! change reaches the next handshake, resumed sessions included.
//!
//! # Security
//!
//! The order of checks on a peer's certificate: SVID shape, chain against the bundle of the
//! peer's own trust domain with the CRLs (a revoked certificate is
//! [`ChainError::Revoked`](crate::identity::ChainError::Revoked)), then the deny-lists
//! ([`PeerRejection::Denied`](crate::identity::PeerRejection::Denied)), then the allow-list.
//! See [`RevocationLists`] for how a CRL is bound to its CA and trust domain, and for the
//! policy on unknown status and expired lists.

mod crl;
mod deny;
mod error;
#[cfg(test)]
mod tests;

use std::fmt::Display;

use tokio::sync::watch;

pub use crate::identity::DenyEntry;
pub(crate) use crl::CrlSet;
pub use crl::{RevocationFilesBuilder, RevocationLists};
pub use deny::{DenyList, DenyListFileBuilder};
pub use error::RevocationError;

use crate::identity::PeerIdentity;
use crate::reload::{Publish, Writer};

/// The `tracing` target of the lines this room writes.
const TARGET: &str = "secure_channel::revocation";

/// The public accessors of a live value's notices, as every reloading source has them;
/// `$what` names the value in the docs.
macro_rules! notices_accessors {
    ($what:literal) => {
        #[doc = concat!("The revision of the current ", $what, ": 1 for the first, one more per change.")]
        pub fn revision(&self) -> u64 {
            self.live.notices().revision()
        }

        /// A receiver that sees each new revision; `changed().await` waits for a change.
        pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
            self.live.notices().subscribe()
        }

        #[doc = concat!("How many reloads from files were refused (unreadable or invalid), keeping the last good ", $what, ".")]
        pub fn failed_reloads(&self) -> u64 {
            self.live.notices().failed_reloads()
        }

        /// A receiver that sees the count of refused reloads change.
        pub fn subscribe_failed_reloads(&self) -> tokio::sync::watch::Receiver<u64> {
            self.live.notices().subscribe_failed_reloads()
        }
    };
}
use notices_accessors;

/// What a loaded value says about its size, for the log line of each revision.
trait Summary {
    fn len(&self) -> usize;
}

/// The writing side of a revocation source: logs each value applied.
struct LoggedWriter<T>(Writer<T>);

impl<T> Clone for LoggedWriter<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Summary> LoggedWriter<T> {
    fn new(writer: Writer<T>) -> Self {
        Self(writer)
    }

    /// Replaces the value with what `next` makes of the current one (`None`: no change).
    fn update(&self, next: impl FnOnce(&T) -> Option<T>) -> Option<u64> {
        let mut entries = 0;
        let revision = self.0.update(|current, _| {
            let value = next(current)?;
            entries = value.len();
            Some(value)
        })?;
        tracing::info!(target: TARGET, revision, entries, "revocation data loaded");
        Some(revision)
    }

    fn publish_value(&self, value: T) -> bool {
        self.update(|_| Some(value)).is_some()
    }
}

impl<T: Summary + Send + Sync + 'static> Publish<T> for LoggedWriter<T> {
    fn publish(&self, value: T) -> bool {
        self.publish_value(value)
    }

    fn refuse(&self, error: &dyn Display) {
        self.0.refuse(error);
    }

    fn is_alive(&self) -> bool {
        self.0.is_alive()
    }
}

/// The CRLs in force, and whether their nextUpdate is enforced.
pub(crate) type CurrentCrls = (arc_swap::Guard<std::sync::Arc<CrlSet>>, bool);

/// What a verifier checks besides chains and allow-lists: the CRLs (inside chain validation)
/// and the deny-lists (after it).
#[derive(Debug, Clone, Default)]
pub(crate) struct RevocationChecks {
    lists: Option<RevocationLists>,
    deny: Vec<DenyList>,
}

impl RevocationChecks {
    pub(crate) fn new(lists: Option<RevocationLists>, deny: Vec<DenyList>) -> Self {
        Self { lists, deny }
    }

    /// The revision of the CRLs (0 without any) and the lists of it, nextUpdate enforced or
    /// not; `None` when no lists are configured.
    pub(crate) fn crls(&self) -> (u64, Option<CurrentCrls>) {
        match &self.lists {
            Some(lists) => {
                let (revision, set) = lists.snapshot();
                (revision, Some((set, lists.enforces_next_update())))
            }
            None => (0, None),
        }
    }

    /// The deny-list entry that refuses `identity`, if any.
    pub(crate) fn denying(&self, identity: &PeerIdentity) -> Option<DenyEntry> {
        self.deny.iter().find_map(|list| list.denying(identity))
    }

    /// Subscriptions to every change that can withdraw trust here, each named.
    pub(crate) fn changes(&self) -> Vec<(&'static str, watch::Receiver<u64>)> {
        let lists = self
            .lists
            .iter()
            .map(|lists| ("revocation lists", lists.subscribe()));
        let deny = self.deny.iter().map(|list| ("deny-list", list.subscribe()));
        lists.chain(deny).collect()
    }
}
