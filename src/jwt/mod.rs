//! Certificate-bound JWT validation (RFC 8705) around jsonwebtoken.
//!
//! A [`JwtValidator`] is built once from a checked configuration and validates bearer tokens
//! against the caller's connection: its [`PeerIdentity`](crate::PeerIdentity) (the SPIFFE ID
//! and the leaf certificate the caller proved in the TLS handshake). Keys come from a
//! [`KeySource`]: a static JWK set, a JWKS file (hot reloaded), a JWKS URL through a
//! [`JwksFetcher`] (cached per Cache-Control, refreshed in the background and on unknown `kid`s),
//! or SPIFFE [`JwtBundles`] by trust domain for JWT-SVIDs. The HTTP side is
//! [`JwtLayer`](crate::layer::jwt::JwtLayer).
//!
//! ```
//! use secure_channel::jwt::{JwtValidator, KeySource};
//!
//! let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256",
//!     "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
//!     "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
//! let validator = JwtValidator::access_tokens("https://api.example.org")
//!     .issuer("https://issuer.example.org")
//!     .key_source(KeySource::from_jwks(jwks)?)
//!     .require_type("at+jwt")
//!     .require_certificate_binding()
//!     .build()?;
//! # let _ = validator;
//! # Ok::<(), secure_channel::jwt::JwtConfigError>(())
//! ```
//!
//! # Security
//!
//! - Only asymmetric algorithms from an explicit allow-list (default ES256, ES384, EdDSA,
//!   RS256, PS256). `none` is never accepted, and HMAC is not supported at all, so a public key
//!   can never be used as an HMAC secret (algorithm confusion).
//! - One algorithm per key: a JWK's `alg`, when present, must equal the header's `alg`, and the
//!   key type must fit the algorithm. Keys never come from the token itself.
//! - Time claims are checked against an injectable clock with a 5-second leeway by default
//!   (jsonwebtoken's 60 s is too lax for short-lived tokens); `exp` is required; tokens living
//!   longer than the maximum lifetime (24 h by default) are refused.
//! - Tokens larger than 8 KiB (default) are refused before anything is decoded; tokens with a
//!   `crit` header are refused (no critical extension is understood here).
//! - RFC 8705: `cnf.x5t#S256` must equal the SHA-256 thumbprint of the caller's certificate on
//!   this connection, whenever `cnf` is present; a policy can require it.
//! - Rejections are [`TokenError`]s whose description is safe to send: no token content, no
//!   key material.

mod bundles;
mod cache;
mod claims;
mod error;
mod jwks_file;
mod jwks_url;
mod keys;
mod provider;
mod source;
#[cfg(test)]
#[cfg(feature = "testkit")]
pub(crate) mod test_support;
#[cfg(test)]
#[cfg(feature = "testkit")]
mod tests;
mod validator;
#[cfg(feature = "workload-api")]
mod workload_api;

pub use bundles::JwtBundles;
pub use claims::VerifiedClaims;
pub use error::{JwtConfigError, TokenError, TokenErrorKind};
pub use jsonwebtoken::Algorithm;
pub use jwks_file::JwksFileBuilder;
pub use jwks_url::{FetchError, FetchedJwks, JwksFetcher, JwksUrlBuilder};
pub(crate) use keys::KeySet;
pub(crate) use provider::unverified_claims;
pub use provider::{BearerToken, CachedTokenProvider, TokenProvider, TokenProviderError};
pub use source::KeySource;
pub(crate) use validator::Attempt;
pub use validator::{
    DEFAULT_ALGORITHMS, DEFAULT_CACHE_CAPACITY, DEFAULT_LEEWAY, DEFAULT_MAX_LIFETIME,
    DEFAULT_MAX_TOKEN_SIZE, JwtValidator, JwtValidatorBuilder,
};
#[cfg(feature = "workload-api")]
pub use workload_api::{JwtSvidProvider, JwtSvidSource, JwtSvidSourceBuilder, JwtSvidSourceError};
