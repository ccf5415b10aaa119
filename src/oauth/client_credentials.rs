//! The client credentials grant (RFC 6749 section 4.4) with RFC 8705 client authentication:
//! [`ClientCredentials`], a cached [`TokenProvider`].

use std::fmt;
use std::time::Duration;

use hyper_util::client::legacy::connect::Connect;

use super::discovery::AuthorizationServer;
use super::error::OAuthConfigError;
use super::http::{DEFAULT_MAX_RESPONSE_SIZE, DEFAULT_TIMEOUT, HttpClient, positive};
use super::token::{
    ClientAuth, Expect, Targets, TokenEndpoint, check_client_id, check_scope, resource_uri,
};
use crate::jwt::{BearerToken, CachedTokenProvider, TokenProvider, TokenProviderError};
use crate::source::CredentialSource;

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Access tokens for this workload from an authorization server's token endpoint (client
/// credentials grant), the client authenticated by the certificate of the mutual TLS
/// connection (RFC 8705), the tokens bound to that certificate.
///
/// A [`TokenProvider`]: a token is reused until shortly before it expires (see
/// [`CachedTokenProvider`]: 30 s, or a third of its lifetime, whichever is longer), and
/// concurrent callers share one request. Put it in a
/// [`ClientTokenLayer`](crate::layer::client_token::ClientTokenLayer) to attach it to outgoing
/// requests. A failed request is a boxed [`TokenRequestError`](super::TokenRequestError).
pub struct ClientCredentials<C> {
    cached: CachedTokenProvider<Fetch<C>>,
}

impl<C> fmt::Debug for ClientCredentials<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("cached", &self.cached)
            .finish()
    }
}

struct Fetch<C> {
    endpoint: TokenEndpoint<C>,
    targets: Targets,
}

impl<C> TokenProvider for Fetch<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn token(&self) -> BoxFuture<'_, Result<BearerToken, TokenProviderError>> {
        Box::pin(async move {
            self.endpoint
                .request("client_credentials", Expect::AccessToken, |form| {
                    self.targets.append(form);
                })
                .await
                .map_err(TokenProviderError::from)
        })
    }
}

impl<C> TokenProvider for ClientCredentials<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn token(&self) -> BoxFuture<'_, Result<BearerToken, TokenProviderError>> {
        self.cached.token()
    }
}

impl ClientCredentials<()> {
    /// Starts building a client of `server` registered as `client_id`, authenticating with
    /// `auth`, presenting the SVID of `source` (the channel's
    /// [`source`](crate::SecureChannel::source): the one whose certificate the connector
    /// presents).
    ///
    /// By default every issued token must be bound to that certificate (RFC 8705 section 3);
    /// [`allow_unbound_tokens`](ClientCredentialsBuilder::allow_unbound_tokens) says otherwise.
    pub fn builder(
        server: &AuthorizationServer,
        client_id: impl Into<String>,
        auth: ClientAuth,
        source: &CredentialSource,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder {
            common: Common::new(server, client_id.into(), auth, source),
        }
    }
}

/// What the client credentials and the token exchange builders share.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) server: AuthorizationServer,
    pub(crate) client_id: String,
    pub(crate) auth: ClientAuth,
    pub(crate) source: CredentialSource,
    pub(crate) require_binding: bool,
    pub(crate) targets: Targets,
    pub(crate) timeout: Duration,
    pub(crate) max_response_size: usize,
    pub(crate) refresh_before: Duration,
    pub(crate) first_error: Option<OAuthConfigError>,
}

impl Common {
    pub(crate) fn new(
        server: &AuthorizationServer,
        client_id: String,
        auth: ClientAuth,
        source: &CredentialSource,
    ) -> Self {
        Self {
            server: server.clone(),
            client_id,
            auth,
            source: source.clone(),
            require_binding: true,
            targets: Targets::default(),
            timeout: DEFAULT_TIMEOUT,
            max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
            refresh_before: Duration::from_secs(30),
            first_error: None,
        }
    }

    pub(crate) fn note(&mut self, result: Result<(), OAuthConfigError>) {
        if let Err(error) = result
            && self.first_error.is_none()
        {
            self.first_error = Some(error);
        }
    }

    pub(crate) fn scope(&mut self, scope: &str) {
        self.note(check_scope(scope));
        self.targets.scopes.push(scope.to_owned());
    }

    pub(crate) fn resource(&mut self, resource: &str) {
        match resource_uri(resource) {
            Ok(resource) => self.targets.resources.push(resource),
            Err(error) => self.note(Err(error)),
        }
    }

    /// Checks everything and builds the endpoint client for `grant_type`.
    pub(crate) fn endpoint<C>(
        mut self,
        grant_type: &str,
        connector: C,
    ) -> Result<(TokenEndpoint<C>, Targets, Duration), OAuthConfigError>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        if let Some(error) = self.first_error.take() {
            return Err(error);
        }
        check_client_id(&self.client_id)?;
        self.targets.check()?;
        positive("timeout", self.timeout)?;
        if self.max_response_size == 0 {
            return Err(OAuthConfigError::InvalidSetting {
                field: "max_response_size",
                problem: "must be above zero".into(),
            });
        }
        self.server.check_auth_method(self.auth)?;
        self.server.check_grant_type(grant_type)?;
        if self.require_binding {
            self.server.check_bound_tokens()?;
        }
        let endpoint = TokenEndpoint {
            http: HttpClient::new(connector, self.timeout, self.max_response_size),
            uri: self.server.token_endpoint().clone(),
            client_id: self.client_id,
            binding: self.require_binding.then_some(self.source),
        };
        Ok((endpoint, self.targets, self.refresh_before))
    }
}

/// Builds a [`ClientCredentials`]; see [`ClientCredentials::builder`].
#[must_use]
#[derive(Debug)]
pub struct ClientCredentialsBuilder {
    common: Common,
}

/// The builder methods both grants share.
macro_rules! common_builder_methods {
    () => {
        /// Adds a scope to request (RFC 6749 section 3.3; the scopes are sent space-separated).
        pub fn scope(mut self, scope: &str) -> Self {
            self.common.scope(scope);
            self
        }

        /// Adds an `audience` to request (RFC 8693 section 2.1; some servers honour it for
        /// client credentials too): the logical name of the service the token is for.
        pub fn audience(mut self, audience: impl Into<String>) -> Self {
            self.common.targets.audiences.push(audience.into());
            self
        }

        /// Adds a `resource` to request (RFC 8707): the absolute URI of the service the token
        /// is for.
        pub fn resource(mut self, resource: &str) -> Self {
            self.common.resource(resource);
            self
        }

        /// Accepts tokens that are not bound to this workload's certificate (no
        /// `cnf.x5t#S256`, or not a JWT). Such a token is a plain bearer token: whoever
        /// obtains it can use it from anywhere until it expires.
        pub fn allow_unbound_tokens(mut self) -> Self {
            self.common.require_binding = false;
            self
        }

        /// Bounds each request, connection included (default 10 s).
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.common.timeout = timeout;
            self
        }

        /// Bounds the size of an answer's body (default 64 KiB).
        pub fn max_response_size(mut self, bytes: usize) -> Self {
            self.common.max_response_size = bytes;
            self
        }

        /// How long before its expiry a token is replaced (default 30 s; at least a third of
        /// its lifetime is always kept as margin).
        pub fn refresh_before(mut self, margin: Duration) -> Self {
            self.common.refresh_before = margin;
            self
        }
    };
}
pub(crate) use common_builder_methods;

impl ClientCredentialsBuilder {
    common_builder_methods!();

    /// Checks the configuration (and that the server's metadata, when discovered, lists the
    /// client authentication method, the grant type, and certificate-bound tokens when they
    /// are required) and builds the provider, which requests through `connector`.
    pub fn build<C>(self, connector: C) -> Result<ClientCredentials<C>, OAuthConfigError>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let (endpoint, targets, refresh_before) =
            self.common.endpoint("client_credentials", connector)?;
        Ok(ClientCredentials {
            cached: CachedTokenProvider::new(Fetch { endpoint, targets })
                .refresh_before(refresh_before),
        })
    }
}
