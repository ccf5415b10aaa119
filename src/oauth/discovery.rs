//! The authorization server: its endpoints from its metadata (RFC 8414, with RFC 8705's
//! `mtls_endpoint_aliases`), or given by hand.

use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::Connect;
use serde::Deserialize;

use super::error::{OAuthConfigError, TokenRequestError};
use super::http::{DEFAULT_MAX_RESPONSE_SIZE, DEFAULT_TIMEOUT, HttpClient, https_uri};
use super::token::ClientAuth;
use crate::Location;
use crate::integration::jwks::HttpsJwksFetcher;

/// An OAuth 2.0 authorization server as its clients use it: the token endpoint (for mutual
/// TLS: the `mtls_endpoint_aliases` one when the metadata names it), the JWK set of its tokens,
/// and what its metadata says it supports.
///
/// From one issuer URL with [`discover`](Self::discover), or from a token endpoint with
/// [`with_token_endpoint`](Self::with_token_endpoint).
#[derive(Debug, Clone)]
pub struct AuthorizationServer {
    issuer: Option<String>,
    token_endpoint: Uri,
    jwks_uri: Option<Uri>,
    auth_methods: Option<Vec<String>>,
    grant_types: Option<Vec<String>>,
    bound_tokens: Option<bool>,
}

#[derive(Deserialize)]
struct Metadata {
    issuer: Option<String>,
    token_endpoint: Option<String>,
    jwks_uri: Option<String>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    grant_types_supported: Option<Vec<String>>,
    tls_client_certificate_bound_access_tokens: Option<bool>,
    mtls_endpoint_aliases: Option<Aliases>,
}

#[derive(Deserialize)]
struct Aliases {
    token_endpoint: Option<String>,
}

/// The metadata URLs of `issuer`, in the order tried: RFC 8414 section 3.1 (the well-known
/// suffix inserted between the host and the path), then OpenID Connect Discovery (appended).
fn metadata_urls(issuer: &Uri) -> Vec<String> {
    let authority = issuer.authority().map(|a| a.as_str()).unwrap_or("");
    let path = issuer.path().trim_end_matches('/');
    vec![
        format!("https://{authority}/.well-known/oauth-authorization-server{path}"),
        format!("https://{authority}{path}/.well-known/openid-configuration"),
    ]
}

impl AuthorizationServer {
    /// A server known only by its token endpoint (an absolute `https` URI): nothing is
    /// checked against metadata, and there is no JWK set URI.
    pub fn with_token_endpoint(token_endpoint: &str) -> Result<Self, OAuthConfigError> {
        Ok(Self {
            issuer: None,
            token_endpoint: https_uri(token_endpoint, Location::Field("token_endpoint"))?,
            jwks_uri: None,
            auth_methods: None,
            grant_types: None,
            bound_tokens: None,
        })
    }

    /// Fetches the metadata of `issuer` (an `https` URL without query or fragment) through
    /// `connector`, within 10 s: at the RFC 8414 location, else at the OpenID Connect one. The
    /// metadata's `issuer` must be `issuer` exactly (RFC 8414 section 3.3), and its endpoints
    /// `https` URIs.
    ///
    /// `connector` decides how the server is authenticated: a
    /// [`SecureConnector`](crate::SecureConnector) expecting its SPIFFE ID, or a
    /// [`WebPkiConnector`](crate::transport::WebPkiConnector) (presenting the workload's SVID
    /// with [`SecureChannel::presenting_svid`](crate::SecureChannel::presenting_svid)).
    pub async fn discover<C>(issuer: &str, connector: C) -> Result<Self, OAuthConfigError>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        Self::discover_within(issuer, connector, DEFAULT_TIMEOUT).await
    }

    /// [`discover`](Self::discover) with another bound on each fetch.
    pub async fn discover_within<C>(
        issuer: &str,
        connector: C,
        timeout: Duration,
    ) -> Result<Self, OAuthConfigError>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        super::http::positive("timeout", timeout)?;
        let issuer_uri = https_uri(issuer, Location::Field("issuer"))?;
        if issuer_uri.query().is_some() {
            return Err(OAuthConfigError::InvalidEndpoint {
                location: Location::Field("issuer"),
                uri: issuer.to_owned(),
                problem: "an issuer has no query (RFC 8414 section 2)".into(),
            });
        }
        let http = HttpClient::new(connector, timeout, DEFAULT_MAX_RESPONSE_SIZE);
        let mut last: Option<TokenRequestError> = None;
        for url in metadata_urls(&issuer_uri) {
            let uri = https_uri(&url, Location::Field("issuer"))?;
            match http.get_json(&uri).await {
                Ok(answer) => return Self::from_metadata(issuer, &url, &answer.body),
                Err(error) => {
                    tracing::debug!(%url, %error, "no authorization server metadata here");
                    last = Some(error);
                }
            }
        }
        match last {
            Some(error) => Err(OAuthConfigError::Discovery(Box::new(error))),
            None => Err(OAuthConfigError::InvalidMetadata {
                url: issuer.to_owned(),
                problem: "no metadata location".into(),
            }),
        }
    }

    fn from_metadata(issuer: &str, url: &str, body: &[u8]) -> Result<Self, OAuthConfigError> {
        let invalid = |problem: String| OAuthConfigError::InvalidMetadata {
            url: url.to_owned(),
            problem,
        };
        let metadata: Metadata = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("not the JSON object RFC 8414 describes: {e}")))?;
        let presented = metadata.issuer.ok_or_else(|| invalid("no issuer".into()))?;
        if presented != issuer {
            return Err(OAuthConfigError::IssuerMismatch {
                url: url.to_owned(),
                expected: issuer.to_owned(),
                presented: presented.chars().take(256).collect(),
            });
        }
        let alias = metadata
            .mtls_endpoint_aliases
            .and_then(|a| a.token_endpoint);
        let token_endpoint = match alias {
            Some(alias) => https_uri(
                &alias,
                Location::Field("metadata mtls_endpoint_aliases.token_endpoint"),
            )?,
            None => https_uri(
                &metadata
                    .token_endpoint
                    .ok_or_else(|| invalid("no token_endpoint".into()))?,
                Location::Field("metadata token_endpoint"),
            )?,
        };
        let jwks_uri = metadata
            .jwks_uri
            .map(|uri| https_uri(&uri, Location::Field("metadata jwks_uri")))
            .transpose()?;
        Ok(Self {
            issuer: Some(presented),
            token_endpoint,
            jwks_uri,
            auth_methods: metadata.token_endpoint_auth_methods_supported,
            grant_types: metadata.grant_types_supported,
            bound_tokens: metadata.tls_client_certificate_bound_access_tokens,
        })
    }

    /// The issuer, when discovered.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The token endpoint requests go to (for a discovered server: the
    /// `mtls_endpoint_aliases` one when there is one, RFC 8705 section 5).
    pub fn token_endpoint(&self) -> &Uri {
        &self.token_endpoint
    }

    /// The JWK set URI of the server's tokens, when discovered.
    pub fn jwks_uri(&self) -> Option<&Uri> {
        self.jwks_uri.as_ref()
    }

    /// A fetcher of the server's JWK set through `connector`, for
    /// [`KeySource::jwks_url`](crate::jwt::KeySource::jwks_url): the validator side takes its
    /// keys from the same place. Fails when the metadata named no `jwks_uri`.
    pub fn jwks_fetcher<C>(&self, connector: C) -> Result<HttpsJwksFetcher<C>, OAuthConfigError>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let uri = self
            .jwks_uri
            .clone()
            .ok_or_else(|| OAuthConfigError::InvalidSetting {
                field: "jwks_uri",
                problem: "the authorization server's metadata names no jwks_uri".into(),
            })?;
        Ok(HttpsJwksFetcher::new(uri, connector))
    }

    /// Fails when the metadata lists the client authentication methods without `auth`'s.
    pub(crate) fn check_auth_method(&self, auth: ClientAuth) -> Result<(), OAuthConfigError> {
        check_listed(
            "token_endpoint_auth_methods_supported",
            self.auth_methods.as_deref(),
            auth.method(),
        )
    }

    /// Fails when the metadata lists the grant types without `grant_type`.
    pub(crate) fn check_grant_type(&self, grant_type: &str) -> Result<(), OAuthConfigError> {
        check_listed(
            "grant_types_supported",
            self.grant_types.as_deref(),
            grant_type,
        )
    }

    /// Fails when the metadata was discovered and does not say that the server issues
    /// certificate-bound access tokens (RFC 8705 section 3.3: absent means it does not).
    pub(crate) fn check_bound_tokens(&self) -> Result<(), OAuthConfigError> {
        if self.issuer.is_some() && self.bound_tokens != Some(true) {
            return Err(OAuthConfigError::Unsupported {
                field: "tls_client_certificate_bound_access_tokens",
                needed: "certificate-bound access tokens".into(),
                supported: vec![format!("{:?}", self.bound_tokens)],
            });
        }
        Ok(())
    }
}

fn check_listed(
    field: &'static str,
    listed: Option<&[String]>,
    needed: &str,
) -> Result<(), OAuthConfigError> {
    match listed {
        Some(list) if !list.iter().any(|m| m == needed) => Err(OAuthConfigError::Unsupported {
            field,
            needed: needed.to_owned(),
            supported: list.to_vec(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ISSUER: &str = "https://as.example.org/realms/sc";

    fn parse(body: serde_json::Value) -> Result<AuthorizationServer, OAuthConfigError> {
        AuthorizationServer::from_metadata(ISSUER, "https://x", body.to_string().as_bytes())
    }

    #[test]
    fn metadata_locations() {
        let urls = metadata_urls(&Uri::from_static("https://as.example.org:8443/realms/sc/"));
        assert_eq!(
            urls,
            [
                "https://as.example.org:8443/.well-known/oauth-authorization-server/realms/sc",
                "https://as.example.org:8443/realms/sc/.well-known/openid-configuration",
            ]
        );
        let urls = metadata_urls(&Uri::from_static("https://as.example.org"));
        assert_eq!(
            urls[0],
            "https://as.example.org/.well-known/oauth-authorization-server"
        );
    }

    #[test]
    fn the_mtls_alias_is_preferred() {
        let server = parse(serde_json::json!({
            "issuer": ISSUER,
            "token_endpoint": "https://as.example.org/token",
            "mtls_endpoint_aliases": {"token_endpoint": "https://mtls.as.example.org/token"},
            "jwks_uri": "https://as.example.org/certs",
        }))
        .unwrap();
        assert_eq!(
            server.token_endpoint(),
            &Uri::from_static("https://mtls.as.example.org/token")
        );
        assert_eq!(server.issuer(), Some(ISSUER));
        assert!(server.jwks_uri().is_some());
    }

    #[test]
    fn refused_metadata() {
        let mismatch = parse(serde_json::json!({
            "issuer": "https://evil.example.org/realms/sc",
            "token_endpoint": "https://as.example.org/token",
        }));
        assert!(matches!(
            mismatch,
            Err(OAuthConfigError::IssuerMismatch { .. })
        ));
        for body in [
            serde_json::json!({"token_endpoint": "https://as.example.org/token"}),
            serde_json::json!({"issuer": ISSUER}),
            serde_json::json!([1, 2]),
        ] {
            assert!(
                matches!(parse(body), Err(OAuthConfigError::InvalidMetadata { .. })),
                "invalid metadata accepted"
            );
        }
        for body in [
            serde_json::json!({"issuer": ISSUER, "token_endpoint": "http://as.example.org/token"}),
            serde_json::json!({"issuer": ISSUER, "token_endpoint": "https://as.example.org/token",
                "mtls_endpoint_aliases": {"token_endpoint": "http://as.example.org/token"}}),
            serde_json::json!({"issuer": ISSUER, "token_endpoint": "https://as.example.org/token",
                "jwks_uri": "http://as.example.org/certs"}),
        ] {
            assert!(
                matches!(parse(body), Err(OAuthConfigError::InvalidEndpoint { .. })),
                "plain http accepted"
            );
        }
    }

    #[test]
    fn what_the_server_supports() {
        let server = parse(serde_json::json!({
            "issuer": ISSUER,
            "token_endpoint": "https://as.example.org/token",
            "token_endpoint_auth_methods_supported": ["tls_client_auth"],
            "grant_types_supported": ["client_credentials"],
        }))
        .unwrap();
        assert!(server.check_auth_method(ClientAuth::TlsClientAuth).is_ok());
        assert!(
            server
                .check_auth_method(ClientAuth::SelfSignedTlsClientAuth)
                .is_err()
        );
        assert!(server.check_grant_type("client_credentials").is_ok());
        assert!(
            server
                .check_grant_type("urn:ietf:params:oauth:grant-type:token-exchange")
                .is_err()
        );
        assert!(server.check_bound_tokens().is_err());
        let given = AuthorizationServer::with_token_endpoint("https://as.example.org/t").unwrap();
        assert!(
            given
                .check_auth_method(ClientAuth::SelfSignedTlsClientAuth)
                .is_ok()
        );
        assert!(given.check_bound_tokens().is_ok());
        assert!(AuthorizationServer::with_token_endpoint("http://as.example.org/t").is_err());
    }
}
