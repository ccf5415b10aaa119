//! Zero-trust service-to-service communication for Rust services, in-process.
//!
//! A service builds one [`SecureChannel`] and gets mutual TLS in which both sides prove a SPIFFE
//! identity with an X.509-SVID, peers authenticated by SPIFFE ID (never by host name or IP),
//! and the peer's [`PeerIdentity`] on every connection.
//!
//! ```
//! # #[cfg(feature = "testkit")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use secure_channel::testkit::DevCa;
//! use secure_channel::{MemorySource, SecureChannel};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // A development CA stands in for SPIRE here; in production use
//! // `CredentialSource::from_workload_api()` or `CredentialSource::from_files(..)`.
//! let ca = DevCa::new("example.org")?;
//! let server_creds = MemorySource::new(ca.credentials("spiffe://example.org/api")?);
//! let client_creds = MemorySource::new(ca.credentials("spiffe://example.org/web")?);
//!
//! let server = SecureChannel::builder(&server_creds)
//!     .allow_client("spiffe://example.org/web")
//!     .build()?;
//! let client = SecureChannel::builder(&client_creds)
//!     .expect_server("spiffe://example.org/api")
//!     .build()?;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let serve = tokio::spawn(async move {
//!     let (tcp, _) = listener.accept().await?;
//!     let mut stream = server.accept(tcp).await?;
//!     let caller = stream.peer_identity().spiffe_id().to_string();
//!     stream.write_all(caller.as_bytes()).await?;
//!     stream.shutdown().await?;
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! });
//!
//! let mut stream = client.connect_tcp(addr).await?;
//! assert_eq!(stream.peer_identity().spiffe_id().to_string(), "spiffe://example.org/api");
//! let mut answer = String::new();
//! stream.read_to_string(&mut answer).await?;
//! assert_eq!(answer, "spiffe://example.org/web");
//! serve.await?.map_err(|e| e.to_string())?;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "testkit"))]
//! # fn main() {}
//! ```
//!
//! # Serving and calling
//!
//! [`SecureChannel::listener`] accepts connections with handshakes off the accept loop;
//! serve it with axum (feature `axum`: `integration::axum::serve`, which also puts per-identity
//! rate limits, the JWT and the authorization layers in front in the right order), tonic
//! (feature `tonic`: [`integration::tonic`]) or plain hyper ([`integration::hyper::serve`]);
//! every request then
//! carries the caller's [`PeerIdentity`]. [`SecureChannel::connector`] is the outbound side for
//! hyper-util's client and tonic channels, checking the server's SPIFFE ID.
//!
//! # Credential sources
//!
//! - [`MemorySource`]: values handed over in code;
//! - [`CredentialSource::from_files`]: PEM files that rotate on disk (Kubernetes secrets,
//!   cert-manager, Vault agent), polled and reloaded; a broken reload keeps the last good files;
//! - [`CredentialSource::from_workload_api`] (feature `workload-api`, on by default): the SPIFFE
//!   Workload API of a SPIRE agent, following SVID and bundle rotation; `WorkloadApi::builder()`
//!   connects this X.509 source and the JWT-SVID source together, from one endpoint.
//!
//! - federated trust domains' bundles fetched from their SPIFFE bundle endpoints
//!   ([`federation::BundleEndpointClient`], feeding [`source::FederatedBundles`]), added to any
//!   of the above with [`CredentialSource::with_federated_bundles`]; our own bundle is served to
//!   partners by [`federation::BundleEndpointService`].
//!
//! Rotation never needs a restart: each handshake reads the current snapshot, and established
//! connections keep the material they were made with.
//!
//! # Features
//!
//! - `aws-lc-rs` (default): aws-lc-rs as the rustls crypto provider;
//! - `ring`: ring as the provider (aws-lc-rs wins when both are on; with neither, the
//!   process-wide default provider must be installed);
//! - `workload-api` (default): the SPIFFE Workload API source;
//! - `axum`: axum 0.8 serving and the `PeerIdentity` extractor;
//! - `tonic`: tonic 0.14 serving (`SecureListener::into_incoming`) and `RequestPeerExt`;
//! - `testkit`: a development CA and a Workload API server, for tests without SPIRE.
//!
//! # Security model
//!
//! - A peer is authenticated by the one URI SAN of its leaf, a canonical SPIFFE ID, and by a
//!   chain that validates (rustls-webpki) against the bundle of the trust domain in that ID, and
//!   only that one: a CA of trust domain B cannot vouch for an ID of trust domain A.
//! - The leaf must be an SVID: not a CA, key usage with digitalSignature and without keyCertSign
//!   or cRLSign, extended key usage (where present) with serverAuth and clientAuth.
//! - Default deny: a channel accepts only the client IDs it allows and connects only to the
//!   server IDs it expects; with none configured, nobody.
//! - TLS 1.3 only unless [`allow_tls12`](SecureChannelBuilder::allow_tls12) is called.
//! - Resumed sessions are re-validated against the current bundles and clock, so removing a CA
//!   from a bundle also ends resumption for the SVIDs it issued.
//! - Revocation, for incident response, is opt-in: CRLs ([`revocation::RevocationLists`],
//!   checked over the whole chain, an expired list failing closed) and deny-lists by SPIFFE ID
//!   or leaf digest ([`revocation::DenyList`]), both followed as they change and applied to the
//!   next handshake, resumed sessions included. Without them nothing is revoked (SVIDs are
//!   short-lived); OCSP is not checked.
//! - Inherited limits: rustls-webpki refuses chains carrying URI name constraints.

pub mod authz;
mod channel;
mod crypto;
mod error;
pub mod federation;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod integration;
pub mod jwt;
pub mod layer;
mod limit;
pub mod oauth;
mod reload;
pub mod revocation;
pub mod source;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tls;
pub mod transport;
#[cfg(feature = "workload-api")]
mod workload_api;

pub use channel::{SecureChannel, SecureChannelBuilder};
pub use error::{ConfigError, Location, ReadError, WorkloadApiProblem};
pub use identity::{AllowList, IdMatcher, PeerIdentity};
pub use source::status::CredentialStatus;
pub use source::{CredentialSource, Credentials, MemorySource, Svid, TrustBundle, TrustBundles};
pub use spiffe::{SpiffeId, TrustDomain};
pub use transport::error::{ConnectionError, ConnectionErrorKind};
pub use transport::{SecureConnector, SecureListener, SecureStream};
#[cfg(feature = "workload-api")]
pub use workload_api::{WorkloadApi, WorkloadApiBuilder, WorkloadApiError};

/// The README's code samples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
