//! Certificate-bound JWT validation (RFC 8705) around jsonwebtoken.

mod claims;

pub use claims::VerifiedClaims;
