//! Selection of the crypto providers: rustls's, and jsonwebtoken's to match.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

use crate::ConfigError;

/// The provider this crate uses: aws-lc-rs when its feature is on, else ring, else the
/// process-wide default a user installed. Deterministic whatever the feature combination.
pub(crate) fn default_provider() -> Result<Arc<CryptoProvider>, ConfigError> {
    #[cfg(feature = "aws-lc-rs")]
    {
        Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
    }
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    {
        Ok(Arc::new(rustls::crypto::ring::default_provider()))
    }
    #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
    {
        CryptoProvider::get_default()
            .cloned()
            .ok_or(ConfigError::NoCryptoProvider)
    }
}

/// The jsonwebtoken provider matching [`default_provider`]: aws-lc-rs when its feature is on,
/// else RustCrypto (the `ring` feature's choice for jsonwebtoken), else none (the caller must be
/// given one).
pub(crate) fn default_jwt_provider() -> Option<&'static jsonwebtoken::crypto::CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    {
        Some(&jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER)
    }
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    {
        Some(&jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER)
    }
    #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
    {
        None
    }
}
