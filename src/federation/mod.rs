//! SPIFFE Federation: trust bundles exchanged between trust domains over bundle endpoints.
//!
//! - [`BundleEndpointClient`] fetches a remote trust domain's bundle from its endpoint
//!   (`https_web` or `https_spiffe` profile) and keeps it current, feeding its X.509
//!   authorities into [`FederatedBundles`](crate::source::FederatedBundles) and its JWT
//!   authorities into [`JwtBundles`](crate::jwt::JwtBundles).
//! - [`BundleEndpointService`] serves our own trust domain's bundle, following the credentials
//!   as they rotate: a tower service for axum or hyper, or served over HTTPS by
//!   [`BundleEndpointServer`].
//! - [`SpiffeBundle`] is the bundle format (a JWK set with `spiffe_sequence` and
//!   `spiffe_refresh_hint`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use secure_channel::federation::BundleEndpointClient;
//! use secure_channel::source::FederatedBundles;
//! use secure_channel::{CredentialSource, SecureChannel, SpiffeId, TrustBundle, TrustDomain};
//!
//! let own = CredentialSource::from_files("svid.pem", "svid.key").own_bundle("bundle.pem").start()?;
//! // The partner's bundle, obtained once out of band, authenticates its endpoint the first time.
//! let bootstrap = TrustBundle::from_pem(
//!     TrustDomain::new("partner.example")?,
//!     &std::fs::read("partner-bundle.pem")?,
//! )?;
//! let federated = FederatedBundles::new();
//! let partner = BundleEndpointClient::https_spiffe(
//!     "https://spire.partner.example:8443",
//!     SpiffeId::new("spiffe://partner.example/spire/server")?,
//!     bootstrap,
//! )
//! .x509_bundles(&federated)
//! .start()
//! .await?;
//! let channel = SecureChannel::builder(own.with_federated_bundles(&federated)?)
//!     .allow_client("spiffe://partner.example/billing")
//!     .build()?;
//! # drop((partner, channel));
//! # Ok(())
//! # }
//! ```
//!
//! # Security
//!
//! A fetched bundle replaces the last one only when it is complete and sound (at least one
//! X.509 authority, every CA certificate a CA of that trust domain, JWT authorities that
//! parse, a `spiffe_sequence` not lower than the last); anything else keeps the last good
//! bundle. Each client writes only its own trust domain's bundles, and never the workload's
//! own trust domain's.

mod bundle;
mod client;
mod error;
mod server;

pub use bundle::{DEFAULT_MAX_BUNDLE_SIZE, SpiffeBundle};
pub use client::{BundleEndpointClient, BundleEndpointClientBuilder};
pub use error::{BundleError, FederationError, FetchError};
pub use server::{
    BundleEndpointServer, BundleEndpointService, DEFAULT_IDLE_TIMEOUT, DEFAULT_REFRESH_HINT,
};
