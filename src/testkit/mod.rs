//! Test support for services built on this crate (feature `testkit`): a development CA that
//! mints X.509-SVIDs, and a SPIFFE Workload API server speaking the real protocol, so that
//! services can be tested end to end without SPIRE.
//!
//! Not for production: keys are generated in memory and nothing is persisted.

mod ca;
mod tokens;
pub mod whoami;
pub mod workload_api;

pub use ca::{
    CrlBuilder, DevCa, ExtendedKeyUsage, IssuedSvid, KeyAlgorithm, SvidBuilder, TestkitError,
};
pub use tokens::{TokenBuilder, TokenIssuer, TokenIssuerError, x5t_s256};
pub use workload_api::{WorkloadApiServer, X509SvidResponse};
