use std::sync::Arc;

use tower_layer::Layer;

use super::Authorize;
use crate::authz::PolicySource;
use crate::layer::{DefaultResponder, RejectionResponder};

/// What an [`AuthorizeLayer`] decides with, shared by its services.
pub(super) struct Config<R> {
    pub(super) policy: PolicySource,
    pub(super) responder: R,
    /// Whether the misuse "applied after routing" was already logged at ERROR.
    #[cfg(feature = "axum")]
    pub(super) after_routing_reported: std::sync::atomic::AtomicBool,
}

impl<R> Config<R> {
    fn new(policy: PolicySource, responder: R) -> Self {
        Self {
            policy,
            responder,
            #[cfg(feature = "axum")]
            after_routing_reported: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// Applies an authorization policy to every request.
///
/// Reads the caller's [`PeerIdentity`](crate::PeerIdentity) (and [`VerifiedClaims`](crate::jwt::VerifiedClaims), if a token layer validated one)
/// from the request extensions, decides with the current policy, and refuses denied requests
/// through the [`RejectionResponder`]: 403 `forbidden` (gRPC PERMISSION_DENIED), or 401 when
/// the identity is missing. Allowed requests carry their [`Decision`](crate::authz::Decision) in their extensions, and
/// go on with the normalized path.
pub struct AuthorizeLayer<R = DefaultResponder> {
    config: Arc<Config<R>>,
}

impl AuthorizeLayer {
    /// A layer deciding with `policy` (a [`Policy`](crate::authz::Policy) or a live
    /// [`PolicySource`]), answering denials with the [`DefaultResponder`].
    pub fn new(policy: impl Into<PolicySource>) -> Self {
        Self {
            config: Arc::new(Config::new(policy.into(), DefaultResponder)),
        }
    }
}

impl<R: RejectionResponder> AuthorizeLayer<R> {
    /// Replaces the responder that turns rejections into responses.
    pub fn responder<R2: RejectionResponder>(self, responder: R2) -> AuthorizeLayer<R2> {
        AuthorizeLayer {
            config: Arc::new(Config::new(self.config.policy.clone(), responder)),
        }
    }

    /// The policy source the layer reads.
    pub fn policy(&self) -> &PolicySource {
        &self.config.policy
    }
}

impl<R> Clone for AuthorizeLayer<R> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<R> std::fmt::Debug for AuthorizeLayer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizeLayer")
            .field("policy", &self.config.policy)
            .finish_non_exhaustive()
    }
}

impl<S, R> Layer<S> for AuthorizeLayer<R> {
    type Service = Authorize<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}
