//! JWT-SVIDs and JWT bundles from the SPIFFE Workload API (a SPIRE agent), through
//! `spiffe::JwtSource` (feature `workload-api`).
//!
//! A [`JwtSvidSource`] follows the agent's `FetchJWTBundles` stream into a [`JwtBundles`]
//! handle, so a validator built on [`KeySource::jwt_bundles`] always checks JWT-SVIDs against
//! the live bundles; and it fetches this workload's own JWT-SVIDs per audience for outgoing
//! requests through a [`JwtSvidProvider`].
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use secure_channel::jwt::{CachedTokenProvider, JwtSvidSource, JwtValidator};
//! use secure_channel::layer::client_token::ClientTokenLayer;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // SPIFFE_ENDPOINT_SOCKET unless `.endpoint(..)` names the agent's socket.
//! let jwt = JwtSvidSource::builder()
//!     .initial_timeout(Duration::from_secs(10))
//!     .connect()
//!     .await?;
//!
//! // Server side: JWT-SVIDs for this service, checked with the live bundles.
//! let validator = JwtValidator::jwt_svids("spiffe://example.org/api")
//!     .key_source(jwt.key_source())
//!     .build()?;
//!
//! // Client side: a JWT-SVID for the target's audience, cached and refreshed before expiry.
//! let tokens = ClientTokenLayer::provider(CachedTokenProvider::new(
//!     jwt.token_provider("spiffe://example.org/api"),
//! ));
//! # let _ = (validator, tokens);
//! # Ok(())
//! # }
//! ```
//!
//! # Security
//!
//! - Each trust domain's bundle is replaced only by a bundle that parses and holds a usable
//!   key; otherwise the last good bundle stays (counted in
//!   [`KeySource::failed_reloads`]). A trust domain the agent stops sending is removed, and
//!   when the agent withdraws the workload's permission (`PERMISSION_DENIED`) every bundle is
//!   removed: JWT-SVIDs are then refused (fail closed) until the agent sends bundles again.
//! - Connection losses keep the last bundles; `spiffe::JwtSource` reconnects with backoff.
//! - Before a fetched JWT-SVID is sent anywhere, the provider checks that it is for the
//!   requested audience (and SPIFFE ID, when one was requested) and not expired, so a
//!   misbehaving agent cannot make this workload hand a token meant for one service to another.
//! - Tokens never appear in errors or `Debug` output.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spiffe::{JwtBundle, JwtBundleSet, JwtSource, JwtSvid, SpiffeId, TrustDomain};
use tokio::sync::oneshot;

use crate::jwt::{BearerToken, TokenProvider, TokenProviderError};
use crate::jwt::{JwtBundles, KeySource};

/// How long [`JwtSvidSourceBuilder::connect`] waits for the first JWT bundles by default.
const DEFAULT_INITIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `FetchJWTSVID` call may take by default.
const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the background task waits for `JwtSource` to shut down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors of a [`JwtSvidSource`] and its [`JwtSvidProvider`]s. None carries a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSvidSourceError {
    /// The Workload API could not be used: a malformed endpoint, or a failed connection or
    /// first synchronization.
    #[error("Workload API at {endpoint}: {reason}")]
    WorkloadApi {
        /// The endpoint (or `SPIFFE_ENDPOINT_SOCKET=...`).
        endpoint: String,
        /// What failed.
        reason: String,
    },
    /// No JWT bundles arrived within the initial timeout.
    #[error("Workload API at {endpoint}: no JWT bundles received within {timeout:?}")]
    InitialTimeout {
        /// The endpoint (or `SPIFFE_ENDPOINT_SOCKET=...`).
        endpoint: String,
        /// The initial timeout.
        timeout: Duration,
    },
    /// The first JWT bundles held no bundle with a usable key.
    #[error("Workload API at {endpoint}: no usable JWT bundle: {reason}")]
    NoUsableBundle {
        /// The endpoint (or `SPIFFE_ENDPOINT_SOCKET=...`).
        endpoint: String,
        /// Why each trust domain's bundle was refused.
        reason: String,
    },
    /// `FetchJWTSVID` did not answer within the fetch timeout.
    #[error("no JWT-SVID for audience {audience:?} within {timeout:?}")]
    FetchTimeout {
        /// The requested audience.
        audience: String,
        /// The fetch timeout.
        timeout: Duration,
    },
    /// `FetchJWTSVID` failed (the agent refused, or the connection failed).
    #[error("fetching a JWT-SVID for audience {audience:?} failed: {reason}")]
    Fetch {
        /// The requested audience.
        audience: String,
        /// What failed.
        reason: String,
    },
    /// The agent answered a JWT-SVID that is not the one asked for, or is not usable.
    #[error("the Workload API answered an unusable JWT-SVID for audience {audience:?}: {problem}")]
    UnexpectedSvid {
        /// The requested audience.
        audience: String,
        /// What is wrong with it (never its content).
        problem: String,
    },
}

/// Builds a [`JwtSvidSource`]; see [`JwtSvidSource::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct JwtSvidSourceBuilder {
    endpoint: Option<String>,
    initial_timeout: Duration,
    fetch_timeout: Duration,
}

impl JwtSvidSourceBuilder {
    /// The Workload API endpoint, such as `unix:/run/spire/agent.sock` (default: the
    /// `SPIFFE_ENDPOINT_SOCKET` environment variable).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// How long [`connect`](Self::connect) waits for the first JWT bundles (default 30 s).
    pub fn initial_timeout(mut self, timeout: Duration) -> Self {
        self.initial_timeout = timeout;
        self
    }

    /// How long one JWT-SVID fetch may take before it fails (default 10 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Connects, waits for the first JWT bundles, and follows their updates in a tokio task
    /// until the source and every provider made from it are dropped.
    ///
    /// # Errors
    ///
    /// Fails if the endpoint is malformed, no bundles arrive within the initial timeout, or
    /// none of the first bundles holds a usable key.
    pub async fn connect(self) -> Result<JwtSvidSource, JwtSvidSourceError> {
        let endpoint = crate::error::workload_api_endpoint(self.endpoint.as_deref());
        let mut builder = JwtSource::builder().initial_sync_timeout(self.initial_timeout);
        if let Some(explicit) = &self.endpoint {
            builder = builder.endpoint(explicit);
        }
        // `initial_sync_timeout` bounds the synchronization; the outer timeout also bounds
        // anything before it.
        let source = match tokio::time::timeout(self.initial_timeout, builder.build()).await {
            Err(_) | Ok(Err(spiffe::JwtSourceError::InitialSyncTimeout)) => {
                return Err(JwtSvidSourceError::InitialTimeout {
                    endpoint,
                    timeout: self.initial_timeout,
                });
            }
            Ok(Err(error)) => {
                return Err(JwtSvidSourceError::WorkloadApi {
                    endpoint,
                    reason: error.to_string(),
                });
            }
            Ok(Ok(source)) => source,
        };

        let bundles = JwtBundles::new();
        let mut follower = Follower::new(bundles.clone());
        // Subscribe before reading the first state, so no update falls in between.
        let updates = source.updated();
        let first = source.state().bundle_set();
        let refused = follower.sync(first.as_deref().ok());
        if follower.applied.is_empty() {
            shutdown(&source).await;
            let reason = match first {
                Err(error) => error.to_string(),
                Ok(_) if refused.is_empty() => "no trust domain was sent".to_owned(),
                Ok(_) => refused.join("; "),
            };
            return Err(JwtSvidSourceError::NoUsableBundle { endpoint, reason });
        }

        let (stop, stopped) = oneshot::channel();
        tokio::spawn(follow(source.clone(), follower, updates, stopped));
        Ok(JwtSvidSource {
            shared: Arc::new(Shared {
                source,
                bundles,
                endpoint,
                fetch_timeout: self.fetch_timeout,
                _stop: stop,
            }),
        })
    }
}

/// JWT bundles followed from the SPIFFE Workload API, and this workload's JWT-SVIDs fetched
/// from it; cheap to clone.
///
/// The bundles ([`bundles`](Self::bundles), [`key_source`](Self::key_source)) follow the
/// agent until this source, its clones and every [`JwtSvidProvider`] made from it are
/// dropped; after that they keep their last content.
#[derive(Clone)]
pub struct JwtSvidSource {
    shared: Arc<Shared>,
}

struct Shared {
    source: JwtSource,
    bundles: JwtBundles,
    endpoint: String,
    fetch_timeout: Duration,
    /// Dropping it stops the follower task.
    _stop: oneshot::Sender<()>,
}

impl JwtSvidSource {
    /// A builder: the endpoint is `SPIFFE_ENDPOINT_SOCKET` unless
    /// [`endpoint`](JwtSvidSourceBuilder::endpoint) names one.
    pub fn builder() -> JwtSvidSourceBuilder {
        JwtSvidSourceBuilder {
            endpoint: None,
            initial_timeout: DEFAULT_INITIAL_TIMEOUT,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
        }
    }

    /// The live JWT bundles, by trust domain.
    pub fn bundles(&self) -> &JwtBundles {
        &self.shared.bundles
    }

    /// A key source over the live JWT bundles, for
    /// [`JwtValidator::jwt_svids`](crate::jwt::JwtValidator::jwt_svids).
    pub fn key_source(&self) -> KeySource {
        KeySource::jwt_bundles(&self.shared.bundles)
    }

    /// A [`TokenProvider`] of this workload's JWT-SVIDs for `audience` (one fetch per call:
    /// wrap it in [`CachedTokenProvider`](crate::jwt::CachedTokenProvider)).
    pub fn token_provider(&self, audience: impl Into<String>) -> JwtSvidProvider {
        JwtSvidProvider {
            shared: Arc::clone(&self.shared),
            audience: audience.into(),
            spiffe_id: None,
        }
    }
}

impl fmt::Debug for JwtSvidSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvidSource")
            .field("endpoint", &self.shared.endpoint)
            .field("bundles", &self.shared.bundles)
            .field("fetch_timeout", &self.shared.fetch_timeout)
            .finish()
    }
}

/// Fetches this workload's JWT-SVID for one audience from the Workload API, per call; see
/// [`JwtSvidSource::token_provider`].
///
/// Its tokens carry their expiry (the SVID's `exp`), so
/// [`CachedTokenProvider`](crate::jwt::CachedTokenProvider) reuses one until shortly before
/// it expires.
#[derive(Clone)]
pub struct JwtSvidProvider {
    shared: Arc<Shared>,
    audience: String,
    spiffe_id: Option<SpiffeId>,
}

impl JwtSvidProvider {
    /// Asks for the JWT-SVID of `spiffe_id` (for a workload entitled to several identities);
    /// by default the agent's default identity.
    #[must_use]
    pub fn spiffe_id(mut self, spiffe_id: SpiffeId) -> Self {
        self.spiffe_id = Some(spiffe_id);
        self
    }

    /// The audience the tokens are fetched for.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Fetches one JWT-SVID, checked against the request.
    async fn fetch(&self) -> Result<BearerToken, JwtSvidSourceError> {
        let timeout = self.shared.fetch_timeout;
        let fetch = self
            .shared
            .source
            .fetch_jwt_svid_with_id([self.audience.as_str()], self.spiffe_id.as_ref());
        let svid = match tokio::time::timeout(timeout, fetch).await {
            Err(_) => {
                return Err(JwtSvidSourceError::FetchTimeout {
                    audience: self.audience.clone(),
                    timeout,
                });
            }
            Ok(Err(error)) => {
                return Err(JwtSvidSourceError::Fetch {
                    audience: self.audience.clone(),
                    reason: error.to_string(),
                });
            }
            Ok(Ok(svid)) => svid,
        };
        accept_svid(
            &svid,
            &self.audience,
            self.spiffe_id.as_ref(),
            SystemTime::now(),
        )
    }
}

impl TokenProvider for JwtSvidProvider {
    fn token(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<BearerToken, TokenProviderError>> + Send + '_>> {
        Box::pin(async move { self.fetch().await.map_err(TokenProviderError::from) })
    }
}

impl fmt::Debug for JwtSvidProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvidProvider")
            .field("endpoint", &self.shared.endpoint)
            .field("audience", &self.audience)
            .field(
                "spiffe_id",
                &self.spiffe_id.as_ref().map(ToString::to_string),
            )
            .finish()
    }
}

/// Checks a JWT-SVID the agent answered before it is used: for `audience`, for the requested
/// SPIFFE ID (if any), not expired at `now`; returns it as a bearer token expiring at its `exp`.
fn accept_svid(
    svid: &JwtSvid,
    audience: &str,
    spiffe_id: Option<&SpiffeId>,
    now: SystemTime,
) -> Result<BearerToken, JwtSvidSourceError> {
    let unexpected = |problem: String| JwtSvidSourceError::UnexpectedSvid {
        audience: audience.to_owned(),
        problem,
    };
    if !svid.audience().iter().any(|a| a == audience) {
        return Err(unexpected(format!(
            "its audience {:?} does not contain the requested one",
            svid.audience()
        )));
    }
    if let Some(expected) = spiffe_id
        && svid.spiffe_id() != expected
    {
        return Err(unexpected(format!(
            "it is for {}, not the requested {expected}",
            svid.spiffe_id()
        )));
    }
    let expires_at = u64::try_from(svid.claims().exp())
        .ok()
        .and_then(|exp| UNIX_EPOCH.checked_add(Duration::from_secs(exp)))
        .ok_or_else(|| unexpected("its `exp` is out of range".into()))?;
    if expires_at <= now {
        return Err(unexpected("it has already expired".into()));
    }
    BearerToken::new(svid.token())
        .map(|token| token.with_expiry(expires_at))
        .map_err(|error| unexpected(error.to_string()))
}

/// Applies bundle sets from the Workload API to a [`JwtBundles`] handle, remembering what it
/// applied per trust domain.
struct Follower {
    bundles: JwtBundles,
    /// The JWKS document last applied per trust domain.
    applied: HashMap<TrustDomain, Vec<u8>>,
}

impl Follower {
    fn new(bundles: JwtBundles) -> Self {
        Self {
            bundles,
            applied: HashMap::new(),
        }
    }

    /// Brings the bundles in line with `set` (`None`: the agent withdrew the bundles). A
    /// trust domain whose new bundle is refused keeps its last good one. Returns why each
    /// refused bundle was refused.
    fn sync(&mut self, set: Option<&JwtBundleSet>) -> Vec<String> {
        let Some(set) = set else {
            if !self.applied.is_empty() {
                tracing::warn!("the Workload API withdrew the JWT bundles; removing them");
            }
            for (trust_domain, _) in self.applied.drain() {
                self.bundles.remove(&trust_domain);
            }
            return Vec::new();
        };
        let mut refused = Vec::new();
        for (trust_domain, bundle) in set.iter() {
            let jwks = jwks_document(bundle);
            if self.applied.get(trust_domain) == Some(&jwks) {
                continue;
            }
            match self.bundles.set(trust_domain.clone(), &jwks) {
                Ok(()) => {
                    self.applied.insert(trust_domain.clone(), jwks);
                }
                Err(error) => {
                    // `JwtBundles::set` logged and counted it; the last good bundle stays.
                    refused.push(format!("{trust_domain}: {error}"));
                }
            }
        }
        let gone: Vec<TrustDomain> = self
            .applied
            .keys()
            .filter(|td| set.get_ref(td).is_none())
            .cloned()
            .collect();
        for trust_domain in gone {
            tracing::info!(%trust_domain, "the Workload API no longer sends this JWT bundle");
            self.applied.remove(&trust_domain);
            self.bundles.remove(&trust_domain);
        }
        refused
    }
}

/// The JWKS document of a bundle, keys ordered by `kid` (so that equal bundles give equal
/// bytes).
fn jwks_document(bundle: &JwtBundle) -> Vec<u8> {
    let keys: BTreeMap<&str, &[u8]> = bundle
        .jwt_authorities()
        .map(|authority| (authority.key_id(), authority.jwk_json()))
        .collect();
    let mut document = b"{\"keys\":[".to_vec();
    for (index, jwk) in keys.values().enumerate() {
        if index > 0 {
            document.push(b',');
        }
        document.extend_from_slice(jwk);
    }
    document.extend_from_slice(b"]}");
    document
}

/// Follows the source's updates until `stopped` fires (the last handle was dropped) or the
/// source closes.
async fn follow(
    source: JwtSource,
    mut follower: Follower,
    mut updates: spiffe::JwtSourceUpdates,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    tracing::warn!("Workload API JWT source closed; keeping the last JWT bundles");
                    break;
                }
                let state = source.state();
                follower.sync(state.bundle_set().ok().as_deref());
            }
            _ = &mut stopped => break,
        }
    }
    shutdown(&source).await;
}

async fn shutdown(source: &JwtSource) {
    if source.shutdown_with_timeout(SHUTDOWN_GRACE).await.is_err() {
        tracing::warn!("Workload API JWT source did not shut down in time");
    }
}

#[cfg(test)]
#[cfg(feature = "testkit")]
mod tests {
    use super::*;
    use crate::jwt::Algorithm;
    use crate::testkit::TokenIssuer;

    fn td(name: &str) -> TrustDomain {
        TrustDomain::new(name).unwrap()
    }

    fn bundle(trust_domain: &str, jwks: &str) -> JwtBundle {
        JwtBundle::from_jwt_authorities(td(trust_domain), jwks.as_bytes()).unwrap()
    }

    fn set(bundles: Vec<JwtBundle>) -> JwtBundleSet {
        bundles.into_iter().collect()
    }

    fn issuer(kid: &str) -> TokenIssuer {
        TokenIssuer::new("spire", kid, Algorithm::ES256).unwrap()
    }

    /// A bundle the spiffe crate accepts (every key has a `kid`) but that holds no key this
    /// crate can verify with.
    const UNUSABLE: &str = r#"{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#;

    #[test]
    fn follower_keeps_the_last_good_bundle_when_an_update_is_unusable() {
        let bundles = JwtBundles::new();
        let keys = KeySource::jwt_bundles(&bundles);
        let mut follower = Follower::new(bundles.clone());
        let good = issuer("k1");
        assert!(
            follower
                .sync(Some(&set(vec![bundle("example.org", &good.jwt_bundle())])))
                .is_empty()
        );
        assert_eq!(bundles.trust_domains(), vec![td("example.org")]);
        let revision = keys.revision();

        let refused = follower.sync(Some(&set(vec![bundle("example.org", UNUSABLE)])));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(
            bundles.trust_domains(),
            vec![td("example.org")],
            "the last good bundle stays"
        );
        assert_eq!(keys.revision(), revision, "nothing was replaced");
        assert_eq!(keys.failed_reloads(), 1);
        assert_eq!(
            follower.applied.get(&td("example.org")),
            Some(&jwks_document(&bundle("example.org", &good.jwt_bundle())))
        );

        // A good update afterwards is applied.
        let next = issuer("k2");
        assert!(
            follower
                .sync(Some(&set(vec![bundle("example.org", &next.jwt_bundle())])))
                .is_empty()
        );
        assert!(keys.revision() > revision);
    }

    #[test]
    fn follower_skips_unchanged_bundles_and_removes_vanished_trust_domains() {
        let bundles = JwtBundles::new();
        let keys = KeySource::jwt_bundles(&bundles);
        let mut follower = Follower::new(bundles.clone());
        let example = issuer("k1");
        let other = issuer("o1");
        let both = set(vec![
            bundle("example.org", &example.jwt_bundle()),
            bundle("other.org", &other.jwt_bundle()),
        ]);
        follower.sync(Some(&both));
        let revision = keys.revision();
        follower.sync(Some(&both));
        assert_eq!(
            keys.revision(),
            revision,
            "an unchanged set changes nothing"
        );

        follower.sync(Some(&set(vec![bundle(
            "example.org",
            &example.jwt_bundle(),
        )])));
        assert_eq!(bundles.trust_domains(), vec![td("example.org")]);
    }

    #[test]
    fn follower_removes_every_bundle_when_the_agent_withdraws_them() {
        let bundles = JwtBundles::new();
        let mut follower = Follower::new(bundles.clone());
        follower.sync(Some(&set(vec![bundle(
            "example.org",
            &issuer("k1").jwt_bundle(),
        )])));
        assert_eq!(bundles.trust_domains().len(), 1);
        follower.sync(None);
        assert!(bundles.trust_domains().is_empty(), "fail closed");
    }

    #[test]
    fn follower_removes_only_what_it_set() {
        let bundles = JwtBundles::new();
        bundles
            .set(td("federated.org"), issuer("f1").jwt_bundle())
            .unwrap();
        let mut follower = Follower::new(bundles.clone());
        follower.sync(Some(&set(vec![bundle(
            "example.org",
            &issuer("k1").jwt_bundle(),
        )])));
        follower.sync(None);
        assert_eq!(bundles.trust_domains(), vec![td("federated.org")]);
    }

    fn svid(issuer: &TokenIssuer, sub: &str, audiences: &[&str], lifetime: Duration) -> JwtSvid {
        let token = issuer
            .token()
            .subject(sub)
            .audiences(audiences)
            .expires_in(lifetime)
            .sign()
            .unwrap();
        JwtSvid::parse_insecure(&token).unwrap()
    }

    #[test]
    fn fetched_svids_are_checked_before_use() {
        let issuer = issuer("k1");
        let me = "spiffe://example.org/web";
        let hour = Duration::from_secs(3600);
        let now = SystemTime::now();

        let ok = svid(&issuer, me, &["api", "other"], hour);
        let token = accept_svid(&ok, "api", None, now).unwrap();
        let expires = token.expires_at().unwrap();
        assert!(expires > now + hour - Duration::from_secs(2) && expires <= now + hour);
        assert!(!format!("{token:?}").contains(ok.token()));

        let wrong_audience = svid(&issuer, me, &["other"], hour);
        let error = accept_svid(&wrong_audience, "api", None, now).unwrap_err();
        assert!(matches!(error, JwtSvidSourceError::UnexpectedSvid { .. }));
        assert!(!error.to_string().contains(wrong_audience.token()));

        let requested = SpiffeId::new("spiffe://example.org/batch").unwrap();
        assert!(matches!(
            accept_svid(&ok, "api", Some(&requested), now),
            Err(JwtSvidSourceError::UnexpectedSvid { .. })
        ));
        let mine = SpiffeId::new(me).unwrap();
        assert!(accept_svid(&ok, "api", Some(&mine), now).is_ok());

        assert!(matches!(
            accept_svid(&ok, "api", None, now + hour + Duration::from_secs(1)),
            Err(JwtSvidSourceError::UnexpectedSvid { .. })
        ));
    }

    #[test]
    fn jwks_documents_are_canonical() {
        let mut issuer = issuer("b");
        issuer.add_key("a", Algorithm::EdDSA).unwrap();
        issuer.add_key("c", Algorithm::ES384).unwrap();
        let jwks = issuer.jwt_bundle();
        let first = jwks_document(&bundle("example.org", &jwks));
        for _ in 0..8 {
            assert_eq!(jwks_document(&bundle("example.org", &jwks)), first);
        }
        let parsed: serde_json::Value = serde_json::from_slice(&first).unwrap();
        let kids: Vec<&str> = parsed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, ["a", "b", "c"]);
    }
}
