//! OAuth 2.0 Token Exchange (RFC 8693): a gateway exchanges the end user's token for one meant
//! for a downstream audience. [`TokenExchange`], [`SubjectToken`], [`ExchangedToken`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::{Request, header};
use hyper_util::client::legacy::connect::Connect;
use sha2::{Digest, Sha256};

use super::client_credentials::{Common, common_builder_methods};
use super::discovery::AuthorizationServer;
use super::error::{OAuthConfigError, TokenRequestError};
use super::token::{ClientAuth, Expect, Targets, TokenEndpoint};
use crate::jwt::{BearerToken, TokenProvider, TokenProviderError, VerifiedClaims};
use crate::source::CredentialSource;

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The grant type of RFC 8693.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of an OAuth 2.0 access token (RFC 8693 section 3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The token type of a JWT (RFC 8693 section 3).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The default bound on the exchanged tokens kept (one per subject token).
pub const DEFAULT_EXCHANGE_CACHE_CAPACITY: usize = 1024;

/// The token to exchange: the end user's, as the gateway received it. Its `Debug` never shows
/// it.
#[derive(Clone)]
pub struct SubjectToken {
    token: String,
    token_type: &'static str,
}

impl fmt::Debug for SubjectToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectToken")
            .field("token", &"<redacted>")
            .field("token_type", &self.token_type)
            .finish()
    }
}

/// Why no [`SubjectToken`] could be taken from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectTokenError {
    /// The request carries no [`VerifiedClaims`]: the JWT layer did not validate its token
    /// (it is not in front of this code), so the token is not passed on.
    #[error(
        "the request's token was not validated (no VerifiedClaims: put the JWT layer in front)"
    )]
    NotVerified,
    /// The request has no `Authorization: Bearer` header.
    #[error("the request has no bearer token")]
    NoBearerToken,
}

impl SubjectToken {
    /// An access token to exchange (`subject_token_type` access_token).
    pub fn access_token(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            token_type: ACCESS_TOKEN_TYPE,
        }
    }

    /// The bearer token of an incoming request that the JWT layer
    /// ([`JwtLayer`](crate::layer::jwt::JwtLayer)) validated: the request must carry its
    /// [`VerifiedClaims`], so an unvalidated token is never passed on.
    pub fn from_verified_request<B>(request: &Request<B>) -> Result<Self, SubjectTokenError> {
        if request.extensions().get::<VerifiedClaims>().is_none() {
            return Err(SubjectTokenError::NotVerified);
        }
        let value = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(SubjectTokenError::NoBearerToken)?;
        let (scheme, token) = value
            .trim()
            .split_once(' ')
            .ok_or(SubjectTokenError::NoBearerToken)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(SubjectTokenError::NoBearerToken);
        }
        Ok(Self::access_token(token))
    }

    fn key(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(self.token_type.as_bytes());
        hash.update([0]);
        hash.update(self.token.as_bytes());
        hash.finalize().into()
    }
}

/// Exchanges end users' tokens for tokens meant for one downstream audience (RFC 8693), the
/// gateway authenticated by its certificate (RFC 8705). Cheap to clone.
///
/// Exchanged tokens are kept per subject token (at most
/// [`cache_capacity`](TokenExchangeBuilder::cache_capacity), until shortly before they expire),
/// so a user's requests in a row cost one exchange, and so do a user's requests at once: those
/// arriving while an exchange of the same subject token is under way wait for its outcome. By
/// default the exchanged token must be bound to this workload's certificate, as for
/// [`ClientCredentials`](super::ClientCredentials).
pub struct TokenExchange<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for TokenExchange<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C> fmt::Debug for TokenExchange<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenExchange")
            .field("endpoint", &self.inner.endpoint)
            .field("targets", &self.inner.targets)
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

struct Inner<C> {
    endpoint: TokenEndpoint<C>,
    targets: Targets,
    requested_token_type: Option<&'static str>,
    refresh_before: Duration,
    capacity: usize,
    cache: Mutex<HashMap<[u8; 32], (BearerToken, SystemTime)>>,
    /// The exchanges under way, by subject token: a request for a subject whose exchange is
    /// under way waits for its outcome instead of asking the server again (a burst of one
    /// user's requests at a cold cache makes one exchange, not one each).
    in_flight: Mutex<HashMap<[u8; 32], Arc<Flight>>>,
}

/// One exchange under way: whoever holds the lock asks the server and leaves the outcome for
/// those who waited (`None` while nobody has finished: a leader whose request was cancelled
/// leaves it to the next).
type Flight = tokio::sync::Mutex<Option<Result<BearerToken, TokenRequestError>>>;

/// A place in the flight of one subject token; the last one out removes the flight, so that
/// a later request looks at the cache again, and a failure is never kept.
struct Boarding<'a> {
    flights: &'a Mutex<HashMap<[u8; 32], Arc<Flight>>>,
    key: [u8; 32],
    flight: Arc<Flight>,
}

impl<'a> Boarding<'a> {
    fn join(flights: &'a Mutex<HashMap<[u8; 32], Arc<Flight>>>, key: [u8; 32]) -> Self {
        let flight = Arc::clone(
            lock(flights)
                .entry(key)
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None))),
        );
        Self {
            flights,
            key,
            flight,
        }
    }
}

impl Drop for Boarding<'_> {
    fn drop(&mut self) {
        let mut flights = lock(self.flights);
        // Counted under the map's lock, where others join: the map's reference and this one.
        if Arc::strong_count(&self.flight) == 2
            && flights
                .get(&self.key)
                .is_some_and(|flight| Arc::ptr_eq(flight, &self.flight))
        {
            flights.remove(&self.key);
        }
    }
}

/// A poisoned lock only means a panic elsewhere while holding it; the map stays usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TokenExchange<()> {
    /// Starts building a token exchange at `server` as the client `client_id`, authenticating
    /// with `auth` and presenting the SVID of `source`; see
    /// [`ClientCredentials::builder`](super::ClientCredentials::builder).
    pub fn builder(
        server: &AuthorizationServer,
        client_id: impl Into<String>,
        auth: ClientAuth,
        source: &CredentialSource,
    ) -> TokenExchangeBuilder {
        TokenExchangeBuilder {
            common: Common::new(server, client_id.into(), auth, source),
            requested_token_type: None,
            capacity: DEFAULT_EXCHANGE_CACHE_CAPACITY,
        }
    }
}

/// Builds a [`TokenExchange`]; see [`TokenExchange::builder`].
#[must_use]
#[derive(Debug)]
pub struct TokenExchangeBuilder {
    common: Common,
    requested_token_type: Option<&'static str>,
    capacity: usize,
}

impl TokenExchangeBuilder {
    common_builder_methods!();

    /// Asks for an access token explicitly (`requested_token_type`; by default the parameter
    /// is left out and the server issues an access token).
    pub fn request_access_token(mut self) -> Self {
        self.requested_token_type = Some(ACCESS_TOKEN_TYPE);
        self
    }

    /// How many exchanged tokens are kept (default 1024; 0 keeps none).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Checks the configuration (as
    /// [`ClientCredentialsBuilder::build`](super::ClientCredentialsBuilder::build) does, for the
    /// token exchange grant) and builds the exchange, which requests through `connector`.
    pub fn build<C>(self, connector: C) -> Result<TokenExchange<C>, OAuthConfigError>
    where
        C: Connect + Clone + Send + Sync + 'static,
    {
        let (endpoint, targets, refresh_before) =
            self.common.endpoint(TOKEN_EXCHANGE_GRANT, connector)?;
        Ok(TokenExchange {
            inner: Arc::new(Inner {
                endpoint,
                targets,
                requested_token_type: self.requested_token_type,
                refresh_before,
                capacity: self.capacity,
                cache: Mutex::new(HashMap::new()),
                in_flight: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl<C> TokenExchange<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// A token for the downstream audience standing for `subject`'s user: the kept one, or a
    /// new exchange. Concurrent calls for one subject token share one exchange and its
    /// outcome, a failure included (it is not kept: the next call asks again).
    pub async fn exchange(&self, subject: &SubjectToken) -> Result<BearerToken, TokenRequestError> {
        let key = subject.key();
        if let Some(token) = self.kept(&key, SystemTime::now()) {
            return Ok(token);
        }
        // Dropped after the flight's lock (declared before it).
        let boarding = Boarding::join(&self.inner.in_flight, key);
        let mut outcome = boarding.flight.lock().await;
        if let Some(shared) = outcome.as_ref() {
            return shared.clone();
        }
        // A flight that ended between the look above and joining kept its token.
        let now = SystemTime::now();
        if let Some(token) = self.kept(&key, now) {
            return Ok(token);
        }
        let inner = &self.inner;
        let result = inner
            .endpoint
            .request(TOKEN_EXCHANGE_GRANT, Expect::Exchanged, |form| {
                form.append_pair("subject_token", &subject.token);
                form.append_pair("subject_token_type", subject.token_type);
                if let Some(requested) = inner.requested_token_type {
                    form.append_pair("requested_token_type", requested);
                }
                inner.targets.append(form);
            })
            .await;
        if let Ok(token) = &result {
            self.keep(key, token, now);
        }
        *outcome = Some(result.clone());
        result
    }

    /// The kept token for `key`, if it is not due for a refresh at `now`.
    fn kept(&self, key: &[u8; 32], now: SystemTime) -> Option<BearerToken> {
        self.cache()
            .get(key)
            .filter(|(_, refresh_at)| now < *refresh_at)
            .map(|(token, _)| token.clone())
    }

    /// A [`TokenProvider`] of exchanged tokens for `subject` (for a
    /// [`ClientTokenLayer`](crate::layer::client_token::ClientTokenLayer) on the client that
    /// makes this user's downstream calls).
    pub fn provider(&self, subject: SubjectToken) -> ExchangedToken<C> {
        ExchangedToken {
            exchange: self.clone(),
            subject,
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (BearerToken, SystemTime)>> {
        lock(&self.inner.cache)
    }

    fn keep(&self, key: [u8; 32], token: &BearerToken, now: SystemTime) {
        let Some(expires) = token.expires_at() else {
            return;
        };
        let remaining = expires.duration_since(now).unwrap_or_default();
        let margin = self.inner.refresh_before.max(remaining / 3);
        let Some(refresh_at) = expires.checked_sub(margin).filter(|at| *at > now) else {
            return;
        };
        let mut cache = self.cache();
        if cache.len() >= self.inner.capacity {
            cache.retain(|_, (_, at)| *at > now);
        }
        if cache.len() < self.inner.capacity {
            cache.insert(key, (token.clone(), refresh_at));
        }
    }
}

/// Exchanged tokens for one subject token: a [`TokenProvider`]; see
/// [`TokenExchange::provider`].
pub struct ExchangedToken<C> {
    exchange: TokenExchange<C>,
    subject: SubjectToken,
}

impl<C> fmt::Debug for ExchangedToken<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangedToken")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl<C> TokenProvider for ExchangedToken<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn token(&self) -> BoxFuture<'_, Result<BearerToken, TokenProviderError>> {
        Box::pin(async move {
            self.exchange
                .exchange(&self.subject)
                .await
                .map_err(TokenProviderError::from)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flight_is_shared_and_removed_by_the_last_one_out() {
        let flights = Mutex::new(HashMap::new());
        let first = Boarding::join(&flights, [1; 32]);
        let second = Boarding::join(&flights, [1; 32]);
        let other = Boarding::join(&flights, [2; 32]);
        assert!(Arc::ptr_eq(&first.flight, &second.flight));
        assert!(!Arc::ptr_eq(&first.flight, &other.flight));
        drop(first);
        // The second still waits on it: a new caller joins the same flight.
        assert!(lock(&flights).contains_key(&[1; 32]));
        let third = Boarding::join(&flights, [1; 32]);
        assert!(Arc::ptr_eq(&second.flight, &third.flight));
        drop((second, third));
        assert!(!lock(&flights).contains_key(&[1; 32]));
        assert!(lock(&flights).contains_key(&[2; 32]));
        drop(other);
        assert!(lock(&flights).is_empty());
    }

    #[test]
    fn a_flight_that_was_replaced_is_not_removed_for_its_successor() {
        let flights = Mutex::new(HashMap::new());
        let old = Boarding::join(&flights, [1; 32]);
        // Another flight under the same key (as if the old one had been removed meanwhile).
        let successor = Arc::new(tokio::sync::Mutex::new(None));
        lock(&flights).insert([1; 32], Arc::clone(&successor));
        let held = Arc::clone(&old.flight);
        drop(old);
        let kept = lock(&flights).get(&[1; 32]).cloned();
        assert!(kept.is_some_and(|kept| Arc::ptr_eq(&kept, &successor)));
        drop(held);
    }
}
