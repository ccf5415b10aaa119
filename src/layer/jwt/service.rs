use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, header};
use tower_service::Service;

use super::future::{BoxFuture, Pending};
use super::layer::Config;
use super::{JwtLayer, ResponseFuture};
use crate::PeerIdentity;
use crate::jwt::{JwtValidator, TokenError, TokenErrorKind, VerifiedClaims};
use crate::layer::{
    DefaultResponder, Rejection, RejectionBody, RejectionKind, RejectionResponder, is_grpc,
    peer_identity,
};

/// The service of [`JwtLayer`]: calls the inner service only for requests with a valid token,
/// with the token's [`VerifiedClaims`] in the request extensions.
#[derive(Clone)]
pub struct Jwt<S, R = DefaultResponder> {
    pub(super) inner: S,
    pub(super) config: Arc<Config>,
    pub(super) responder: R,
}

impl<S> Jwt<S> {
    /// The layer (same as [`JwtLayer::new`]).
    pub fn layer(validator: JwtValidator) -> JwtLayer {
        JwtLayer::new(validator)
    }
}

impl<S, R> Jwt<S, R> {
    define_inner_service_accessors!();
}

impl<S: fmt::Debug, R> fmt::Debug for Jwt<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("inner", &self.inner)
            .field("scopes", &self.config.scopes)
            .finish_non_exhaustive()
    }
}

/// The token of `Authorization: Bearer <token>`, from the one `Authorization` header, as
/// bytes: the validator recognizes a cached token by comparing them and checks any other as
/// UTF-8 and base64url before decoding it, so the header is not checked character by
/// character here.
fn bearer_token(headers: &HeaderMap, max_size: usize) -> Result<&[u8], TokenError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(TokenError::new(TokenErrorKind::Missing));
    };
    if values.next().is_some() {
        return Err(TokenError::with_description(
            TokenErrorKind::Malformed,
            "more than one Authorization header",
        ));
    }
    // "Bearer " plus some spaces: anything longer than that plus the token limit is too large,
    // whatever it holds.
    if value.len() > max_size + 16 {
        return Err(TokenError::new(TokenErrorKind::TooLarge));
    }
    let value = value.as_bytes();
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return Err(TokenError::new(TokenErrorKind::Missing));
    };
    let (scheme, token) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(TokenError::new(TokenErrorKind::Missing));
    }
    let token = trim_spaces(token);
    if token.is_empty() {
        return Err(TokenError::new(TokenErrorKind::Missing));
    }
    Ok(token)
}

/// `bytes` without leading and trailing spaces (only `' '`, as RFC 7235's `1*SP`).
fn trim_spaces(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ').unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

pub(super) fn token_rejection(error: &TokenError) -> Rejection {
    tracing::debug!(reason = error.kind().as_str(), "bearer token refused");
    crate::telemetry::jwt_rejection(error.kind().as_str());
    Rejection::invalid_token(error)
}

/// After validation: the scopes, then the claims into the request.
pub(super) fn admit<B>(
    config: &Config,
    claims: VerifiedClaims,
    request: &mut Request<B>,
) -> Result<(), Rejection> {
    if let Some(missing) = config.scopes.iter().find(|s| !claims.has_scope(s)) {
        tracing::debug!(scope = %missing, "bearer token lacks a required scope");
        crate::telemetry::jwt_rejection("insufficient_scope");
        return Err(Rejection::insufficient_scope(missing));
    }
    crate::telemetry::jwt_accepted();
    request.extensions_mut().insert(claims);
    Ok(())
}

/// What `call` decided before any waiting.
enum Decision<B> {
    Admit(Request<B>),
    /// The rejection, and whether the request is gRPC.
    Reject(Rejection, bool),
    Refresh(BoxFuture, Box<[u8]>, PeerIdentity, Request<B>),
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for Jwt<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: RejectionResponder,
    ResBody: RejectionBody,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // Whether the caller speaks gRPC matters only for a rejection's form: it is looked up
        // when one is made.
        let decision = {
            let validator = &self.config.validator;
            match peer_identity(request.extensions()) {
                None => Decision::Reject(
                    Rejection::new(
                        RejectionKind::MissingPeerIdentity,
                        "no verified peer identity on this connection",
                    ),
                    is_grpc(&request),
                ),
                Some(peer) => match bearer_token(request.headers(), validator.max_token_size()) {
                    Err(error) => Decision::Reject(token_rejection(&error), is_grpc(&request)),
                    Ok(token) => match validator.attempt(token, peer) {
                        crate::jwt::Attempt::Done(Ok(claims)) => {
                            match admit(&self.config, claims, &mut request) {
                                Ok(()) => Decision::Admit(request),
                                Err(rejection) => Decision::Reject(rejection, is_grpc(&request)),
                            }
                        }
                        crate::jwt::Attempt::Done(Err(error)) => {
                            Decision::Reject(token_rejection(&error), is_grpc(&request))
                        }
                        crate::jwt::Attempt::Refresh(refresh) => {
                            let token = Box::from(token);
                            let peer = peer.clone();
                            Decision::Refresh(refresh, token, peer, request)
                        }
                    },
                },
            }
        };
        match decision {
            Decision::Admit(request) => ResponseFuture::called(self.inner.call(request)),
            Decision::Reject(rejection, grpc) => {
                ResponseFuture::rejected(self.responder.respond(&rejection, grpc))
            }
            Decision::Refresh(refresh, token, peer, request) => {
                let grpc = is_grpc(&request);
                // The inner service is ready now; keep that one for the call after the
                // refresh, and leave a clone in its place (the tower `AsyncRequireAuthorization`
                // pattern).
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::refreshing(
                    refresh,
                    Pending {
                        service,
                        request,
                        token,
                        peer,
                        config: Arc::clone(&self.config),
                        responder: self.responder.clone(),
                        grpc,
                    },
                )
            }
        }
    }
}
