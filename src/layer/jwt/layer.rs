use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::Jwt;
use crate::jwt::JwtValidator;
use crate::layer::{DefaultResponder, RejectionResponder};

/// What a [`JwtLayer`] checks, shared by its services.
#[derive(Clone)]
pub(super) struct Config {
    pub(super) validator: JwtValidator,
    pub(super) scopes: Vec<String>,
}

/// Validates the bearer token of every request.
///
/// The token comes only from `Authorization: Bearer`; it is validated against the
/// [`PeerIdentity`](crate::PeerIdentity) of the connection; the inner service (which must be
/// `Clone`) is called only for valid tokens, with [`VerifiedClaims`](crate::jwt::VerifiedClaims)
/// in the request extensions. Rejections are answered by the [`RejectionResponder`].
#[derive(Clone)]
pub struct JwtLayer<R = DefaultResponder> {
    config: Arc<Config>,
    responder: R,
}

impl JwtLayer {
    /// A layer validating tokens with `validator`, answering rejections with the
    /// [`DefaultResponder`].
    pub fn new(validator: JwtValidator) -> Self {
        Self {
            config: Arc::new(Config {
                validator,
                scopes: Vec::new(),
            }),
            responder: DefaultResponder,
        }
    }
}

impl<R> JwtLayer<R> {
    /// Requires `scope` in the token (`scope` or `scp` claim); a token without it is answered
    /// 403 `insufficient_scope`. Call again to require several.
    #[must_use]
    pub fn require_scope(mut self, scope: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config).scopes.push(scope.into());
        self
    }

    /// Answers rejections with `responder` instead.
    pub fn responder<R2: RejectionResponder>(self, responder: R2) -> JwtLayer<R2> {
        JwtLayer {
            config: self.config,
            responder,
        }
    }
}

impl<R> fmt::Debug for JwtLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtLayer")
            .field("validator", &self.config.validator)
            .field("scopes", &self.config.scopes)
            .finish_non_exhaustive()
    }
}

impl<S, R: Clone> Layer<S> for JwtLayer<R> {
    type Service = Jwt<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        Jwt {
            inner,
            config: Arc::clone(&self.config),
            responder: self.responder.clone(),
        }
    }
}
