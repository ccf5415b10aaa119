//! The bundle endpoint client: fetches a remote trust domain's bundle and keeps it current.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spiffe::{SpiffeId, TrustDomain};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::federation::bundle::{DEFAULT_MAX_BUNDLE_SIZE, SpiffeBundle};
use crate::federation::error::{BundleError, FederationError, FetchError};
use crate::jwt::JwtBundles;
use crate::reload::{Live, Writer};
use crate::source::{FederatedBundles, TrustBundle};
use crate::tls::EndpointVerifier;
use crate::transport::WebPkiConnector;

/// The first retry after a failed fetch; doubled up to the lower refresh bound.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// How the endpoint server is authenticated.
#[derive(Clone)]
enum Profile {
    /// `https_web`: a WebPKI certificate for the URL's host, through this connector's roots.
    Web(WebPkiConnector),
    /// `https_spiffe`: an X.509-SVID of this ID, validated against the trust domain's latest
    /// bundle (the bootstrap bundle, then each one fetched).
    Spiffe(SpiffeId),
}

/// Builds a [`BundleEndpointClient`].
#[must_use]
pub struct BundleEndpointClientBuilder {
    trust_domain: TrustDomain,
    url: String,
    profile: Profile,
    bootstrap: Option<TrustBundle>,
    x509: Option<FederatedBundles>,
    jwt: Option<JwtBundles>,
    settings: Settings,
}

impl std::fmt::Debug for BundleEndpointClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleEndpointClientBuilder")
            .field("trust_domain", &self.trust_domain.as_str())
            .field("url", &self.url)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    min_refresh: Duration,
    max_refresh: Duration,
    default_refresh: Duration,
    fetch_timeout: Duration,
    max_size: usize,
}

/// Fetches the SPIFFE bundle of a remote trust domain from its bundle endpoint (SPIFFE
/// Federation) and keeps it current: its X.509 authorities go to [`FederatedBundles`] (which
/// [`CredentialSource::with_federated_bundles`](crate::CredentialSource::with_federated_bundles)
/// adds to a channel's credentials), its JWT authorities to [`JwtBundles`].
///
/// - Refreshed by the bundle's `spiffe_refresh_hint`, bounded by
///   [`refresh_bounds`](BundleEndpointClientBuilder::refresh_bounds) (default 30 s to 1 h; 5
///   minutes without a hint).
/// - A failed fetch (no connection, the endpoint not authenticated, a status other than 200,
///   no answer within the fetch timeout, a body over the size limit, a document that is not
///   a bundle of this trust domain, a `spiffe_sequence` lower than the last one applied)
///   keeps the last good bundle, is logged and counted (`failed_fetches`, and the metric
///   `secure_channel_federation_fetches_total`), and is retried after 1 s, doubling up to the
///   lower refresh bound.
/// - Each client writes only its own trust domain's bundles: one partner's trouble touches no
///   other partner's bundle, and never the workload's own credentials.
///
/// The refresh runs in a tokio task until every handle of the client is dropped; the bundles
/// last applied then stay where they were put.
///
/// # Security
///
/// With `https_spiffe`, the endpoint must present an X.509-SVID of exactly the configured
/// SPIFFE ID, validated against the remote trust domain's current bundle: the bootstrap bundle
/// at first, then each bundle fetched (so a CA rotation announced in the bundle carries over).
/// A bundle must hold at least one X.509 authority (an empty one would lock the client out),
/// and a CA certificate naming another trust domain in its SPIFFE ID is refused.
#[derive(Clone)]
pub struct BundleEndpointClient {
    shared: Arc<Shared>,
}

struct Shared {
    trust_domain: TrustDomain,
    uri: Uri,
    url: String,
    profile: Profile,
    settings: Settings,
    x509: Option<FederatedBundles>,
    jwt: Option<JwtBundles>,
    live: Live<Arc<SpiffeBundle>>,
    writer: Writer<Arc<SpiffeBundle>>,
    /// Held for the duration of a fetch: one at a time.
    fetching: tokio::sync::Mutex<()>,
    schedule: Mutex<Schedule>,
}

#[derive(Debug, Clone, Copy)]
struct Schedule {
    next: Instant,
    retry: Duration,
}

impl BundleEndpointClient {
    /// A client of the `https_spiffe` endpoint at `url`, which must present an X.509-SVID of
    /// `endpoint_id`; `bootstrap` is the remote trust domain's bundle obtained out of band (the
    /// trust domain is the bootstrap bundle's, and `endpoint_id` must be in it).
    pub fn https_spiffe(
        url: impl Into<String>,
        endpoint_id: SpiffeId,
        bootstrap: TrustBundle,
    ) -> BundleEndpointClientBuilder {
        BundleEndpointClientBuilder {
            trust_domain: bootstrap.trust_domain().clone(),
            url: url.into(),
            profile: Profile::Spiffe(endpoint_id),
            bootstrap: Some(bootstrap),
            x509: None,
            jwt: None,
            settings: Settings::default(),
        }
    }

    /// A client of the `https_web` endpoint at `url` serving `trust_domain`'s bundle, whose
    /// server is authenticated by a WebPKI certificate for the URL's host through `connector`
    /// (system roots, or given CA certificates).
    pub fn https_web(
        url: impl Into<String>,
        trust_domain: TrustDomain,
        connector: WebPkiConnector,
    ) -> BundleEndpointClientBuilder {
        BundleEndpointClientBuilder {
            trust_domain,
            url: url.into(),
            profile: Profile::Web(connector),
            bootstrap: None,
            x509: None,
            jwt: None,
            settings: Settings::default(),
        }
    }

    /// The remote trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.shared.trust_domain
    }

    /// The bundle last applied.
    pub fn current(&self) -> SpiffeBundle {
        SpiffeBundle::clone(&self.shared.live.load())
    }

    /// 1 for the first bundle applied, one more for each new one.
    pub fn revision(&self) -> u64 {
        self.shared.live.notices().revision()
    }

    /// A receiver that sees each new revision.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.live.notices().subscribe()
    }

    /// How many fetches failed (the last good bundle kept).
    pub fn failed_fetches(&self) -> u64 {
        self.shared.live.notices().failed_reloads()
    }

    /// A receiver that sees the count of failed fetches change.
    pub fn subscribe_failed_fetches(&self) -> watch::Receiver<u64> {
        self.shared.live.notices().subscribe_failed_reloads()
    }

    /// Fetches now (after any fetch under way); `Ok(true)` when a new bundle was applied,
    /// `Ok(false)` when the endpoint served the same authorities again. A failure is also
    /// counted and logged, as in the background refresh.
    pub async fn refresh_now(&self) -> Result<bool, FetchError> {
        self.shared.refresh().await
    }
}

impl std::fmt::Debug for BundleEndpointClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleEndpointClient")
            .field("trust_domain", &self.shared.trust_domain.as_str())
            .field("url", &self.shared.url)
            .field("bundle", &*self.shared.live.load())
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min_refresh: Duration::from_secs(30),
            max_refresh: Duration::from_secs(3600),
            default_refresh: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(10),
            max_size: DEFAULT_MAX_BUNDLE_SIZE,
        }
    }
}

impl BundleEndpointClientBuilder {
    /// Where the X.509 authorities go.
    pub fn x509_bundles(mut self, bundles: &FederatedBundles) -> Self {
        self.x509 = Some(bundles.clone());
        self
    }

    /// Where the JWT authorities go (a bundle without any removes the trust domain's).
    pub fn jwt_bundles(mut self, bundles: &JwtBundles) -> Self {
        self.jwt = Some(bundles.clone());
        self
    }

    /// Bounds for the time between fetches the bundle's refresh hint asks for (default 30 s
    /// to 1 h).
    pub fn refresh_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.settings.min_refresh = min;
        self.settings.max_refresh = max;
        self
    }

    /// The time between fetches when the bundle gives no refresh hint (default 5 minutes;
    /// within the bounds).
    pub fn default_refresh(mut self, interval: Duration) -> Self {
        self.settings.default_refresh = interval;
        self
    }

    /// How long one fetch may take, connection to last byte (default 10 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.settings.fetch_timeout = timeout;
        self
    }

    /// The largest bundle document accepted (default 256 KiB).
    pub fn max_bundle_size(mut self, bytes: usize) -> Self {
        self.settings.max_size = bytes;
        self
    }

    /// Fetches the bundle once (a failure is an error), applies it, and starts the refresh
    /// on the current tokio runtime.
    pub async fn start(self) -> Result<BundleEndpointClient, FederationError> {
        let settings = self.settings;
        if settings.min_refresh.is_zero() || settings.min_refresh > settings.max_refresh {
            return Err(FederationError::InvalidSetting {
                field: "refresh_bounds",
                problem: "the lower bound must be above zero and not above the upper bound".into(),
            });
        }
        if settings.fetch_timeout.is_zero() || settings.max_size == 0 {
            return Err(FederationError::InvalidSetting {
                field: if settings.max_size == 0 {
                    "max_bundle_size"
                } else {
                    "fetch_timeout"
                },
                problem: "must be above zero".into(),
            });
        }
        let invalid_url = |problem: &str| FederationError::InvalidUrl {
            url: self.url.clone(),
            problem: problem.to_owned(),
        };
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid_url(&e.to_string()))?;
        if uri.scheme_str() != Some("https") {
            return Err(invalid_url("the bundle endpoint must be an https URL"));
        }
        if uri.host().is_none() {
            return Err(invalid_url("the URL has no host"));
        }
        if let Profile::Spiffe(endpoint_id) = &self.profile
            && endpoint_id.trust_domain() != &self.trust_domain
        {
            return Err(FederationError::EndpointOutsideTrustDomain {
                endpoint_id: endpoint_id.clone(),
                trust_domain: self.trust_domain.clone(),
            });
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|e| FederationError::NoRuntime {
                reason: e.to_string(),
            })?;
        let endpoint = Endpoint {
            trust_domain: &self.trust_domain,
            uri: &uri,
            url: &self.url,
            profile: &self.profile,
            settings: &settings,
        };
        let first = match endpoint.fetch(self.bootstrap.as_ref()).await {
            Ok(bundle) => bundle,
            Err(error) => {
                crate::telemetry::federation_fetch(
                    &self.trust_domain,
                    "refused",
                    error.metric_reason(),
                );
                return Err(FederationError::FirstFetch {
                    trust_domain: self.trust_domain.clone(),
                    error: Box::new(error),
                });
            }
        };
        let (live, writer) = Live::new("bundle-endpoint", "bundle", Arc::new(first.clone()));
        let shared = Arc::new(Shared {
            trust_domain: self.trust_domain,
            uri,
            url: self.url,
            profile: self.profile,
            settings,
            x509: self.x509,
            jwt: self.jwt,
            live,
            writer,
            fetching: tokio::sync::Mutex::new(()),
            schedule: Mutex::new(Schedule {
                next: Instant::now(),
                retry: FIRST_RETRY,
            }),
        });
        shared.feed(&first);
        shared.scheduled_after_success(&first);
        crate::telemetry::federation_fetch(&shared.trust_domain, "applied", "none");
        tracing::info!(
            trust_domain = %shared.trust_domain,
            url = %shared.url,
            sequence = ?first.sequence(),
            x509_authorities = first.x509_authorities().certificates().len(),
            jwt_authorities = first.jwt_authority_count(),
            "federated bundle fetched"
        );
        runtime.spawn(refresh_in_background(Arc::downgrade(&shared)));
        Ok(BundleEndpointClient { shared })
    }
}

/// What one fetch needs.
struct Endpoint<'a> {
    trust_domain: &'a TrustDomain,
    uri: &'a Uri,
    url: &'a str,
    profile: &'a Profile,
    settings: &'a Settings,
}

impl Endpoint<'_> {
    /// Fetches and parses the bundle; `trust` authenticates an `https_spiffe` endpoint.
    async fn fetch(&self, trust: Option<&TrustBundle>) -> Result<SpiffeBundle, FetchError> {
        let connect_error = |reason: String| FetchError::Connect {
            url: self.url.to_owned(),
            reason,
        };
        let (connector, verifier) = match (self.profile, trust) {
            (Profile::Web(connector), _) => (connector.clone(), None),
            (Profile::Spiffe(endpoint_id), Some(trust)) => {
                let (verifier, config) =
                    EndpointVerifier::client_config(trust.clone(), endpoint_id.clone())
                        .map_err(|e| connect_error(e.to_string()))?;
                (WebPkiConnector::with_config(config), Some(verifier))
            }
            (Profile::Spiffe(_), None) => {
                return Err(connect_error(
                    "no bundle to authenticate the endpoint".into(),
                ));
            }
        };
        // A client per fetch: nothing pooled outlives the trust it was made under.
        let client: Client<WebPkiConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        let limit = self.settings.max_size;
        let too_large = |size: usize| FetchError::Bundle {
            url: self.url.to_owned(),
            error: BundleError::TooLarge { size, limit },
        };
        let work = async {
            let request = Request::get(self.uri.clone())
                .header(header::ACCEPT, "application/json")
                .body(Empty::new())
                .map_err(|e| connect_error(e.to_string()))?;
            let response = client.request(request).await.map_err(|error| {
                match verifier.as_ref().and_then(|v| v.rejection()) {
                    Some(rejection) => FetchError::EndpointRefused {
                        url: self.url.to_owned(),
                        rejection,
                    },
                    None => connect_error(error_chain(&error)),
                }
            })?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status {
                    url: self.url.to_owned(),
                    status: response.status().as_u16(),
                });
            }
            let declared = response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if let Some(size) = declared
                && size > limit
            {
                return Err(too_large(size));
            }
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|error| {
                    if error.downcast_ref::<LengthLimitError>().is_some() {
                        too_large(limit.saturating_add(1))
                    } else {
                        connect_error(format!("reading the answer: {error}"))
                    }
                })?
                .to_bytes();
            SpiffeBundle::parse(self.trust_domain, &body, limit).map_err(|error| {
                FetchError::Bundle {
                    url: self.url.to_owned(),
                    error,
                }
            })
        };
        tokio::time::timeout(self.settings.fetch_timeout, work)
            .await
            .map_err(|_| FetchError::Timeout {
                url: self.url.to_owned(),
                timeout: self.settings.fetch_timeout,
            })?
    }
}

/// An error and its sources, in one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Shared {
    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            trust_domain: &self.trust_domain,
            uri: &self.uri,
            url: &self.url,
            profile: &self.profile,
            settings: &self.settings,
        }
    }

    /// The next fetch after a bundle was applied or confirmed: its refresh hint, bounded.
    fn scheduled_after_success(&self, bundle: &SpiffeBundle) {
        let interval = bundle
            .refresh_hint()
            .unwrap_or(self.settings.default_refresh)
            .clamp(self.settings.min_refresh, self.settings.max_refresh);
        let mut schedule = self.schedule();
        schedule.next = Instant::now() + interval;
        schedule.retry = FIRST_RETRY;
    }

    /// The next fetch after a failure: the retry interval, doubled for the time after.
    fn scheduled_after_failure(&self) {
        let mut schedule = self.schedule();
        schedule.next = Instant::now() + schedule.retry;
        schedule.retry = (schedule.retry * 2).min(self.settings.min_refresh.max(FIRST_RETRY));
    }

    /// Hands a bundle's authorities to the sinks.
    fn feed(&self, bundle: &SpiffeBundle) {
        if let Some(x509) = &self.x509 {
            x509.set(bundle.x509_authorities().clone());
        }
        if let Some(jwt) = &self.jwt {
            match bundle.jwt_authorities_jwks() {
                Some(jwks) => {
                    // Parsed when the bundle was: cannot fail here, but is never ignored.
                    if let Err(error) = jwt.set(self.trust_domain.clone(), jwks) {
                        tracing::warn!(trust_domain = %self.trust_domain, %error, "JWT authorities of a federated bundle refused");
                    }
                }
                None => {
                    jwt.remove(&self.trust_domain);
                }
            }
        }
    }

    async fn refresh(&self) -> Result<bool, FetchError> {
        let _one_at_a_time = self.fetching.lock().await;
        let current = self.live.current();
        let result = match self
            .endpoint()
            .fetch(Some(current.x509_authorities()))
            .await
        {
            Ok(bundle) => self.check_sequence(&current, &bundle).map(|()| bundle),
            Err(error) => Err(error),
        };
        match result {
            Ok(bundle) => {
                self.scheduled_after_success(&bundle);
                if bundle.same_authorities(&current) && bundle.sequence() == current.sequence() {
                    crate::telemetry::federation_fetch(&self.trust_domain, "unchanged", "none");
                    return Ok(false);
                }
                self.feed(&bundle);
                tracing::info!(
                    trust_domain = %self.trust_domain,
                    url = %self.url,
                    sequence = ?bundle.sequence(),
                    x509_authorities = bundle.x509_authorities().certificates().len(),
                    jwt_authorities = bundle.jwt_authority_count(),
                    "federated bundle updated"
                );
                self.writer.publish(Arc::new(bundle));
                crate::telemetry::federation_fetch(&self.trust_domain, "applied", "none");
                Ok(true)
            }
            Err(error) => {
                self.scheduled_after_failure();
                crate::telemetry::federation_fetch(
                    &self.trust_domain,
                    "refused",
                    error.metric_reason(),
                );
                self.writer.refuse(&error);
                Err(error)
            }
        }
    }

    /// `spiffe_sequence` never goes backwards: lower than the last applied, or absent after
    /// one was given, is refused.
    fn check_sequence(
        &self,
        current: &SpiffeBundle,
        next: &SpiffeBundle,
    ) -> Result<(), FetchError> {
        match (current.sequence(), next.sequence()) {
            (Some(last), presented) if presented.is_none_or(|p| p < last) => {
                Err(FetchError::SequenceBackwards {
                    url: self.url.clone(),
                    last,
                    presented,
                })
            }
            _ => Ok(()),
        }
    }
}

/// Fetches when the schedule says, until every handle of the client is gone.
async fn refresh_in_background(shared: Weak<Shared>) {
    loop {
        let next = match shared.upgrade() {
            Some(shared) => shared.schedule().next,
            None => return,
        };
        tokio::time::sleep_until(next).await;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if strong.schedule().next > Instant::now() {
            // Fetched on demand meanwhile.
            continue;
        }
        // The outcome is logged, counted and scheduled by `refresh`.
        let _ = strong.refresh().await;
    }
}
