use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use spiffe::SpiffeId;
use tower_service::Service;

use super::layer::{Limits, SOURCE};
use super::{RateLimitLayer, ResponseFuture};
use crate::authz::AUDIT_TARGET;
use crate::layer::peer::missing_peer_identity;
use crate::layer::{
    DefaultResponder, LimitExceeded, LimitSource, Rejection, RejectionBody, RejectionResponder,
    is_grpc,
};
use crate::limit::{LimitReason, LogSampler};

/// The service of [`RateLimitLayer`].
pub struct RateLimit<S, R = DefaultResponder> {
    pub(super) inner: S,
    pub(super) limits: Arc<Limits>,
    pub(super) responder: R,
}

impl<S> RateLimit<S> {
    /// A layer with the limits `builder` validates; same as
    /// [`RateLimitLayer::builder`].
    pub fn layer() -> super::RateLimitBuilder {
        RateLimitLayer::builder()
    }
}

impl<S, R> RateLimit<S, R> {
    define_inner_service_accessors!();
}

impl<S: Clone, R: Clone> Clone for RateLimit<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limits: Arc::clone(&self.limits),
            responder: self.responder.clone(),
        }
    }
}

impl<S: std::fmt::Debug, R> std::fmt::Debug for RateLimit<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A limit that refused a request, as its audit line and metric name it.
pub(crate) struct LimitHit<'a> {
    pub(crate) source: LimitSource,
    pub(crate) name: &'a Arc<str>,
    pub(crate) sampler: &'a LogSampler,
    pub(crate) reason: LimitReason,
    pub(crate) retry_after: Duration,
}

impl LimitHit<'_> {
    /// Counts the refusal (by limit, never by caller), writes its audit line when the sampler
    /// lets one through (at most one a second per limit, saying how many it held back), and
    /// makes the rejection. With `dry_run` (a policy in dry-run mode) the line says the
    /// request passes, and the caller decides to let it.
    pub(crate) fn record<B>(
        self,
        request: &Request<B>,
        caller: &SpiffeId,
        now: u64,
        dry_run: bool,
    ) -> Rejection {
        crate::telemetry::rate_limited(
            self.source.as_str(),
            metrics::SharedString::from_shared(Arc::clone(self.name)),
            self.reason.as_str(),
        );
        if let Some(suppressed) = self.sampler.sample(now) {
            let retry_after_ms = u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX);
            let (decision, message) = if dry_run {
                ("would-limit", "request over a limit (dry run): passed")
            } else {
                ("limit", "request refused: over a limit")
            };
            tracing::info!(
                target: AUDIT_TARGET,
                caller = %caller,
                method = %request.method(),
                path = ?request.uri().path(),
                decision,
                source = self.source.as_str(),
                limit = &**self.name,
                reason = self.reason.as_str(),
                retry_after_ms,
                suppressed,
                "{message}"
            );
        }
        Rejection::too_many_requests(LimitExceeded::new(
            self.source,
            Arc::clone(self.name),
            self.reason,
            self.retry_after,
        ))
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, R>
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

    #[inline(always)]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let Some(peer) = crate::layer::peer_identity(request.extensions()) else {
            let rejection = missing_peer_identity(&request);
            return ResponseFuture::rejected(self.responder.respond(&rejection, is_grpc(&request)));
        };
        match self.limits.admit(peer) {
            Ok(permit) => ResponseFuture::called(self.inner.call(request), permit),
            Err(refused) => {
                let hit = LimitHit {
                    source: SOURCE,
                    name: &refused.group.name,
                    sampler: &refused.group.sampler,
                    reason: refused.reason,
                    retry_after: refused.retry_after,
                };
                let rejection = hit.record(&request, peer.spiffe_id(), self.limits.now(), false);
                ResponseFuture::rejected(self.responder.respond(&rejection, is_grpc(&request)))
            }
        }
    }
}
