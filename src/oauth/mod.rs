//! Certificate-bound access tokens from an OAuth 2.0 authorization server: the client
//! credentials grant and token exchange (RFC 8693), the client authenticated by its SVID on
//! the mutual TLS connection (RFC 8705), the server found from its metadata (RFC 8414).
//!
//! - [`AuthorizationServer`]: the token endpoint (the `mtls_endpoint_aliases` one when the
//!   metadata names it) and the JWK set of one issuer, discovered from its URL; the validator
//!   side takes its keys from the same place with
//!   [`jwks_fetcher`](AuthorizationServer::jwks_fetcher).
//! - [`ClientCredentials`]: this workload's own tokens, a cached
//!   [`TokenProvider`](crate::jwt::TokenProvider) for
//!   [`ClientTokenLayer`](crate::layer::client_token::ClientTokenLayer).
//! - [`TokenExchange`]: a gateway exchanges the end user's token ([`SubjectToken`], taken from
//!   a request the JWT layer validated) for one meant for a downstream audience.
//!
//! The connector decides how the authorization server is authenticated: by SPIFFE ID (the
//! channel's [`connector`](crate::SecureChannel::connector) with
//! [`expect_server_at`](crate::SecureConnector::expect_server_at)), or by host name against
//! WebPKI roots ([`SecureChannel::presenting_svid`](crate::SecureChannel::presenting_svid) over a
//! [`WebPkiConnector`](crate::transport::WebPkiConnector)). Both present the channel's current
//! SVID as the TLS client certificate.
//!
//! ```no_run
//! # async fn run(channel: secure_channel::SecureChannel) -> Result<(), Box<dyn std::error::Error>> {
//! use secure_channel::layer::client_token::ClientTokenLayer;
//! use secure_channel::oauth::{AuthorizationServer, ClientAuth, ClientCredentials};
//! use secure_channel::transport::WebPkiConnector;
//!
//! // An authorization server with a WebPKI certificate; ours is presented for client auth.
//! let connector = channel.presenting_svid(WebPkiConnector::with_system_roots()?);
//! let server = AuthorizationServer::discover("https://idp.example.org/realms/prod", connector.clone()).await?;
//! let tokens = ClientCredentials::builder(&server, "orders", ClientAuth::TlsClientAuth, channel.source())
//!     .scope("payments:write")
//!     .build(connector)?;
//! // Outgoing requests through the channel's connector carry a token bound to our SVID.
//! let layer = ClientTokenLayer::provider(tokens);
//! # drop(layer);
//! # Ok(())
//! # }
//! ```
//!
//! # Security
//!
//! - Endpoints are `https` URIs only (configured or named by the metadata); the metadata's
//!   `issuer` must be the one asked for (RFC 8414 section 3.3).
//! - The client authenticates by certificate only; no secret is configured or sent.
//! - By default an issued token must be bound (`cnf.x5t#S256`, RFC 8705 section 3) to the
//!   certificate this workload presented; an unbound token is refused
//!   ([`TokenRequestErrorKind::NotBound`]) unless `allow_unbound_tokens` says otherwise. A
//!   discovered server must advertise `tls_client_certificate_bound_access_tokens`.
//! - Every request is bounded in time (10 s) and answer size (64 KiB); errors carry no token
//!   and the server's texts only cut to 256 printable characters.
//! - A subject token is taken only from a request whose token the JWT layer validated.

mod client_credentials;
mod discovery;
mod error;
mod http;
mod token;
mod token_exchange;

pub use client_credentials::{ClientCredentials, ClientCredentialsBuilder};
pub use discovery::AuthorizationServer;
pub use error::{
    ErrorCode, ErrorResponse, OAuthConfigError, TokenRequestError, TokenRequestErrorKind,
};
pub use http::{DEFAULT_MAX_RESPONSE_SIZE, DEFAULT_TIMEOUT};
pub use token::ClientAuth;
pub use token_exchange::{
    ACCESS_TOKEN_TYPE, DEFAULT_EXCHANGE_CACHE_CAPACITY, ExchangedToken, JWT_TOKEN_TYPE,
    SubjectToken, SubjectTokenError, TOKEN_EXCHANGE_GRANT, TokenExchange, TokenExchangeBuilder,
};
