use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use tower_layer::Layer;
use tower_service::Service;

use super::layer::Config;
use super::{AuthorizeLayer, ResponseFuture};
use crate::authz::{AuthzRequest, Decision, Policy, PolicySource, encode_normalized};
use crate::identity::PeerIdentity;
use crate::jwt::VerifiedClaims;
use crate::layer::peer::missing_peer_identity;
use crate::layer::rate_limit::LimitHit;
use crate::layer::{
    DefaultResponder, LimitSource, Rejection, RejectionBody, RejectionKind, RejectionResponder,
    is_grpc,
};
use crate::limit::Permit;

/// What a denied caller is told: nothing about the policy.
pub(super) const FORBIDDEN: &str = "the caller is not allowed to call this route";

/// The service of [`AuthorizeLayer`].
pub struct Authorize<S, R = DefaultResponder> {
    pub(super) inner: S,
    pub(super) config: Arc<Config<R>>,
}

impl<S> Authorize<S> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: S, policy: impl Into<PolicySource>) -> Self {
        AuthorizeLayer::new(policy).layer(inner)
    }

    /// A layer for `policy`; same as [`AuthorizeLayer::new`].
    pub fn layer(policy: impl Into<PolicySource>) -> AuthorizeLayer {
        AuthorizeLayer::new(policy)
    }
}

impl<S, R> Authorize<S, R> {
    define_inner_service_accessors!();
}

impl<S: Clone, R> Clone for Authorize<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: std::fmt::Debug, R> std::fmt::Debug for Authorize<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorize")
            .field("inner", &self.inner)
            .field("policy", &self.config.policy)
            .finish_non_exhaustive()
    }
}

/// What the layer does with one request.
enum Outcome {
    Pass {
        decision: Decision,
        rewrite: Option<String>,
        /// Counts the request against the admitting rule's concurrency limit.
        permit: Option<Permit>,
    },
    Reject(Rejection),
}

/// The route axum matched, when the request was already routed: the layer then runs after
/// routing (`Router::layer`, `Router::route_layer`), on a path that may not be the routed one.
#[cfg(feature = "axum")]
fn routed_by_axum<B>(request: &Request<B>) -> Option<&str> {
    request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
}

/// Refuses a request that axum routed before this layer saw it (fail closed), logging the
/// misuse at ERROR once per layer (then at DEBUG, so that the log is not flooded).
#[cfg(feature = "axum")]
fn refuse_after_routing<R, B>(config: &Config<R>, request: &Request<B>) -> Option<Rejection> {
    let route = routed_by_axum(request)?;
    let first = !config
        .after_routing_reported
        .swap(true, std::sync::atomic::Ordering::Relaxed);
    if first {
        tracing::error!(
            target: crate::authz::AUDIT_TARGET,
            method = %request.method(),
            path = ?request.uri().path(),
            route,
            reason = "layer_before_routing",
            "AuthorizeLayer runs after axum routing (Router::layer or route_layer), so the routed \
             path may not be the authorized one: every request is refused with 403. Apply it with \
             secure_channel::integration::axum::layer_before_routing(router, layer)"
        );
    } else {
        tracing::debug!(
            target: crate::authz::AUDIT_TARGET,
            method = %request.method(),
            path = ?request.uri().path(),
            route,
            reason = "layer_before_routing",
            "request refused: AuthorizeLayer runs after axum routing"
        );
    }
    Some(Rejection::new(RejectionKind::Forbidden, FORBIDDEN))
}

fn decide<B>(policy: &PolicySource, request: &Request<B>) -> Outcome {
    let Some(peer) = crate::layer::peer_identity(request.extensions()) else {
        return Outcome::Reject(missing_peer_identity(request));
    };
    let policy = policy.load();
    let authz = AuthzRequest::new(peer.spiffe_id(), request.method(), request.uri().path())
        .with_claims(request.extensions().get::<VerifiedClaims>());
    let (decision, normalized) = policy.decide(&authz);
    policy.record(&authz, &decision);
    if !decision.passes() {
        return Outcome::Reject(Rejection::denied(decision.deny_reason(), FORBIDDEN));
    }
    let permit = match admit_by_rule(&policy, &decision, request, peer) {
        Ok(permit) => permit,
        Err(rejection) => return Outcome::Reject(rejection),
    };
    let rewrite = match normalized {
        Ok(Cow::Owned(path)) => Some(encode_normalized(&path)),
        Ok(Cow::Borrowed(_)) | Err(_) => None,
    };
    Outcome::Pass {
        decision,
        rewrite,
        permit,
    }
}

/// Applies the limits of the rule that allowed the request to its caller: the request's
/// in-flight permit, or the rejection of a request over them. In dry-run mode a request over
/// them is logged ("would-limit") and passes.
fn admit_by_rule<B>(
    policy: &Policy,
    decision: &Decision,
    request: &Request<B>,
    caller: &PeerIdentity,
) -> Result<Option<Permit>, Rejection> {
    let limiter = match decision.rule() {
        Some(rule) if decision.is_allowed() => match policy.rule_limiter(rule.index()) {
            Some(limiter) => limiter,
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    match limiter.table.admit_peer(caller, || 0) {
        Ok(permit) => Ok(permit),
        Err(refusal) => {
            let hit = LimitHit {
                source: LimitSource::PolicyRule,
                name: &limiter.name,
                sampler: &limiter.sampler,
                reason: refusal.reason,
                retry_after: refusal.retry_after,
            };
            let dry_run = decision.is_dry_run();
            let rejection = hit.record(request, caller.spiffe_id(), limiter.table.now(), dry_run);
            if dry_run { Ok(None) } else { Err(rejection) }
        }
    }
}

fn rewrite_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}")).ok()?,
        None => PathAndQuery::try_from(path).ok()?,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).ok()
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for Authorize<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RejectionResponder,
    ResBody: RejectionBody,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // Whether the caller speaks gRPC matters only for a rejection's form.
        let rejected = |rejection: Rejection, request: &Request<ReqBody>| {
            ResponseFuture::rejected(self.config.responder.respond(&rejection, is_grpc(request)))
        };
        #[cfg(feature = "axum")]
        if let Some(rejection) = refuse_after_routing(&self.config, &request) {
            return rejected(rejection, &request);
        }
        match decide(&self.config.policy, &request) {
            Outcome::Reject(rejection) => rejected(rejection, &request),
            Outcome::Pass {
                decision,
                rewrite,
                permit,
            } => {
                if let Some(path) = rewrite {
                    match rewrite_path(request.uri(), &path) {
                        Some(uri) => *request.uri_mut() = uri,
                        // Cannot happen with an encoded path; fail closed all the same.
                        None if decision.is_allowed() => {
                            return rejected(
                                Rejection::new(RejectionKind::Forbidden, FORBIDDEN),
                                &request,
                            );
                        }
                        None => {}
                    }
                }
                request.extensions_mut().insert(decision);
                ResponseFuture::called(self.inner.call(request), permit)
            }
        }
    }
}
