//! Admission at the handshake beyond a fixed allow-list.

use std::fmt::Debug;

use spiffe::SpiffeId;

use crate::identity::AllowList;

/// Decides, at the TLS handshake, whether a peer could be admitted at all.
///
/// A channel admits a client when its [`AllowList`] matches or an admission says yes. The
/// authorization policy implements it (`authz::PolicySource`): a peer that no rule could ever
/// allow is then refused in the handshake, before it can send a request.
pub trait PeerAdmission: Debug + Send + Sync + 'static {
    /// Whether `id` could be admitted.
    fn admits(&self, id: &SpiffeId) -> bool;

    /// What is admitted, for error messages (an upper bound; `None` when any authenticated peer
    /// could be).
    fn admitted(&self) -> Option<AllowList>;
}
