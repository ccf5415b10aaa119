//! Fetching a token issuer's JWK set over HTTPS, for [`KeySource::jwks_url`].
//!
//! ```no_run
//! # async fn run(channel: secure_channel::SecureChannel) -> Result<(), Box<dyn std::error::Error>> {
//! use secure_channel::integration::jwks::HttpsJwksFetcher;
//! use secure_channel::jwt::KeySource;
//! use secure_channel::transport::WebPkiConnector;
//!
//! // An issuer on the public web, authenticated by host name against the system roots:
//! let fetcher = HttpsJwksFetcher::new(
//!     "https://issuer.example.com/.well-known/jwks.json".parse()?,
//!     WebPkiConnector::with_system_roots()?,
//! );
//! let keys = KeySource::jwks_url(fetcher).start().await?;
//!
//! // An issuer that is itself a SPIFFE workload, authenticated by its SPIFFE ID:
//! let connector = channel.connector().expect_server_at("issuer.internal:8443", "spiffe://example.org/issuer")?;
//! let fetcher = HttpsJwksFetcher::new("https://issuer.internal:8443/jwks".parse()?, connector);
//! # drop((keys, fetcher));
//! # Ok(())
//! # }
//! ```
//!
//! [`KeySource::jwks_url`]: crate::jwt::KeySource::jwks_url

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connect;
use hyper_util::rt::TokioExecutor;

use crate::jwt::{FetchError, FetchedJwks, JwksFetcher};

/// The largest JWK set document accepted.
const MAX_DOCUMENT: usize = 1024 * 1024;

/// GETs a JWK set document over HTTPS with hyper, through any connector (a
/// [`WebPkiConnector`](crate::transport::WebPkiConnector) or a
/// [`SecureConnector`](crate::transport::SecureConnector)).
///
/// A non-200 answer, a body over 1 MiB or a request over the timeout (10 s) is a failed fetch,
/// which the key source logs and retries while keeping its last good keys.
pub struct HttpsJwksFetcher<C> {
    client: Client<C, Empty<Bytes>>,
    uri: Uri,
    timeout: Duration,
}

impl<C> fmt::Debug for HttpsJwksFetcher<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsJwksFetcher")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl<C> HttpsJwksFetcher<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// Fetches `uri` through `connector`.
    pub fn new(uri: Uri, connector: C) -> Self {
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self {
            client,
            uri,
            timeout: Duration::from_secs(10),
        }
    }

    /// Bounds each fetch (default 10 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn get(&self) -> Result<FetchedJwks, FetchError> {
        let request = Request::get(self.uri.clone())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .body(Empty::new())?;
        let response = self.client.request(request).await?;
        if response.status() != StatusCode::OK {
            return Err(format!("{} answered {}", self.uri, response.status()).into());
        }
        let cache_control = response
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_DOCUMENT)
            .collect()
            .await?
            .to_bytes();
        let fetched = FetchedJwks::new(body);
        Ok(match cache_control {
            Some(value) => fetched.with_cache_control(value),
            None => fetched,
        })
    }
}

impl<C> JwksFetcher for HttpsJwksFetcher<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    fn fetch(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<FetchedJwks, FetchError>> + Send + '_>,
    > {
        Box::pin(async move {
            tokio::time::timeout(self.timeout, self.get())
                .await
                .map_err(|_| FetchError::from(format!("fetching {} timed out", self.uri)))?
        })
    }
}
