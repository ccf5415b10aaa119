//! Who is on the other end: SPIFFE identities, ID matchers and X.509-SVID inspection.
//!
//! Pure types: nothing here does I/O, and nothing depends on tokio or rustls.

mod admission;
mod deny;
mod matcher;
mod peer;
mod rejection;
mod svid;

pub use admission::PeerAdmission;
pub use deny::DenyEntry;
pub use matcher::{AllowList, IdMatcher, IdMatcherError};
pub use peer::PeerIdentity;
pub(crate) use peer::{IdKey, LimitState, LimitStateKey};
pub use rejection::{ChainError, PeerRejection};
pub(crate) use svid::{LeafSvid, chain_validity, inspect_leaf, inspect_signing_cert};
pub use svid::{MAX_SPIFFE_ID_LENGTH, SvidError, check_svid_leaf};
