//! rustls configurations for SPIFFE mutual TLS.
//!
//! - verifiers that authenticate peers by X.509-SVID (chain validation by rustls-webpki against
//!   the bundle of the trust domain named in the peer's own SPIFFE ID, then the SVID rules, then
//!   the allow-list), never by host name;
//! - certificate resolvers that present the current SVID of a [`CredentialSource`], so a rotation
//!   reaches the next handshake;
//! - the TLS policy (TLS 1.3 only unless TLS 1.2 is opted into; hybrid post-quantum key exchange
//!   X25519MLKEM768 preferred, see [`KeyExchange`]; ALPN `h2` and `http/1.1`);
//! - re-validation of resumed sessions against the current bundles.
//!
//! # Security
//!
//! Limits inherited from rustls-webpki: chains whose CAs carry URI name constraints are refused
//! (webpki does not evaluate URI name constraints, so it fails closed); CRLs are checked by
//! webpki over the whole chain when [revocation lists](crate::revocation::RevocationLists) are
//! configured (OCSP is not checked), and [deny-lists](crate::revocation::DenyList) after it;
//! signatures follow webpki's algorithm set
//! (no SHA-1, RSA keys of 2048 bits or more). What webpki does not check on intermediates, the
//! verifier does: every CA on the validated path must assert keyUsage keyCertSign.
//!
//! [`CredentialSource`]: crate::source::CredentialSource

mod config;
mod endpoint;
mod rejection;
mod resolver;
mod sessions;
mod verifier;

pub use config::KeyExchange;
pub(crate) use config::{TlsConfigs, TlsPolicy};
pub(crate) use endpoint::{EndpointVerifier, svid_server_config, web_server_config};
pub(crate) use rejection::{capture, refusal_advice, refuses_certificate};
pub(crate) use resolver::SvidResolver;
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub use verifier::BenchVerifier;
#[cfg(test)]
pub(crate) use verifier::Side;
pub(crate) use verifier::{Admitted, CurrentTrust, SvidVerifier, TrustMark};
