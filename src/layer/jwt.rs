//! Bearer token validation per request: [`JwtLayer`], [`Jwt`] and its [`ResponseFuture`].
//!
//! ```
//! use secure_channel::jwt::{JwtValidator, KeySource};
//! use secure_channel::layer::JwtLayer;
//!
//! # let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256",
//! #     "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
//! #     "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
//! let validator = JwtValidator::access_tokens("https://api.example.org")
//!     .issuer("https://issuer.example.org")
//!     .key_source(KeySource::from_jwks(jwks)?)
//!     .build()?;
//! // Wrap the service (after the secure listener has put the caller's PeerIdentity in the
//! // request extensions): handlers see `VerifiedClaims` in theirs.
//! let layer = JwtLayer::new(validator).require_scope("orders:read");
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Security
//!
//! - The token is taken only from the `Authorization: Bearer` header (one such header); a token
//!   in the query string or a form body is not looked at, so such a request has no token.
//! - Validation is against the [`PeerIdentity`] the secure listener put in the request
//!   extensions (the certificate of this connection); a request without one is refused.
//! - Every failure is a [`Rejection`] answered by the [`RejectionResponder`] (401
//!   `invalid_token`, 403 `insufficient_scope`, or their gRPC statuses); the inner service is
//!   not called. Nothing here answers 500 or panics on any input.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, Request, Response, header};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::PeerIdentity;
use crate::jwt::{JwtValidator, TokenError, TokenErrorKind, VerifiedClaims};
use crate::layer::{
    DefaultResponder, Rejection, RejectionBody, RejectionKind, RejectionResponder, is_grpc,
    peer_identity,
};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

#[derive(Clone)]
struct Config {
    validator: JwtValidator,
    scopes: Vec<String>,
}

/// Validates the bearer token of every request.
///
/// The token comes only from `Authorization: Bearer`; it is validated against the
/// [`PeerIdentity`] of the connection; the inner service (which must be `Clone`) is called only
/// for valid tokens, with [`VerifiedClaims`] in the request extensions. Rejections are answered
/// by the [`RejectionResponder`].
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

/// The service of [`JwtLayer`]: calls the inner service only for requests with a valid token,
/// with the token's [`VerifiedClaims`] in the request extensions.
#[derive(Clone)]
pub struct Jwt<S, R = DefaultResponder> {
    inner: S,
    config: Arc<Config>,
    responder: R,
}

impl<S> Jwt<S> {
    /// The layer (same as [`JwtLayer::new`]).
    pub fn layer(validator: JwtValidator) -> JwtLayer {
        JwtLayer::new(validator)
    }
}

impl<S, R> Jwt<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
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

fn token_rejection(error: &TokenError) -> Rejection {
    tracing::debug!(reason = error.kind().as_str(), "bearer token refused");
    crate::telemetry::jwt_rejection(error.kind().as_str());
    Rejection::new(RejectionKind::InvalidToken, error.description().to_owned())
}

/// After validation: the scopes, then the claims into the request.
fn admit<B>(
    config: &Config,
    claims: VerifiedClaims,
    request: &mut Request<B>,
) -> Result<(), Rejection> {
    if let Some(missing) = config.scopes.iter().find(|s| !claims.has_scope(s)) {
        tracing::debug!(scope = %missing, "bearer token lacks a required scope");
        crate::telemetry::jwt_rejection("insufficient_scope");
        return Err(Rejection::new(
            RejectionKind::InsufficientScope,
            format!("scope {missing} required"),
        ));
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
        let state = match decision {
            Decision::Admit(request) => State::Called {
                future: self.inner.call(request),
            },
            Decision::Reject(rejection, grpc) => State::Rejected {
                response: Some(self.responder.respond(&rejection, grpc)),
            },
            Decision::Refresh(refresh, token, peer, request) => {
                let grpc = is_grpc(&request);
                // The inner service is ready now; keep that one for the call after the
                // refresh, and leave a clone in its place (the tower `AsyncRequireAuthorization`
                // pattern).
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                State::Refreshing {
                    refresh,
                    pending: Some(Pending {
                        service,
                        request,
                        token,
                        peer,
                        config: Arc::clone(&self.config),
                        responder: self.responder.clone(),
                        grpc,
                    }),
                }
            }
        };
        ResponseFuture { state }
    }
}

/// A request waiting for a key refresh.
struct Pending<S, B, R> {
    service: S,
    request: Request<B>,
    token: Box<[u8]>,
    peer: PeerIdentity,
    config: Arc<Config>,
    responder: R,
    grpc: bool,
}

pin_project! {
    /// The response future of [`Jwt`].
    pub struct ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        Called {
            #[pin]
            future: S::Future,
        },
        Rejected {
            response: Option<S::Response>,
        },
        Refreshing {
            refresh: BoxFuture,
            pending: Option<Pending<S, ReqBody, R>>,
        },
    }
}

impl<S, ReqBody, R> fmt::Debug for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Rejected { .. } => "rejected",
            State::Refreshing { .. } => "refreshing keys",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, ReqBody, ResBody, R> Future for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RejectionResponder,
    ResBody: RejectionBody,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Called { future } => return future.poll(cx),
                StateProj::Rejected { response } => {
                    return match response.take() {
                        Some(response) => Poll::Ready(Ok(response)),
                        // Polled after completion: answer again rather than panic.
                        None => Poll::Ready(Ok(DefaultResponder.respond(
                            &Rejection::new(
                                RejectionKind::InvalidToken,
                                "request already answered",
                            ),
                            false,
                        ))),
                    };
                }
                StateProj::Refreshing { refresh, pending } => {
                    ready!(refresh.as_mut().poll(cx));
                    let Some(pending) = pending.take() else {
                        return Poll::Ready(Ok(DefaultResponder.respond(
                            &Rejection::new(
                                RejectionKind::InvalidToken,
                                "request already answered",
                            ),
                            false,
                        )));
                    };
                    let Pending {
                        mut service,
                        mut request,
                        token,
                        peer,
                        config,
                        responder,
                        grpc,
                    } = pending;
                    let outcome = config
                        .validator
                        .attempt_once(&token, &peer)
                        .map_err(|error| token_rejection(&error))
                        .and_then(|claims| admit(&config, claims, &mut request));
                    match outcome {
                        Ok(()) => State::Called {
                            future: service.call(request),
                        },
                        Err(rejection) => State::Rejected {
                            response: Some(responder.respond(&rejection, grpc)),
                        },
                    }
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

#[cfg(test)]
#[cfg(feature = "testkit")]
mod tests {
    use std::convert::Infallible;
    use std::time::{Duration, SystemTime};

    use http::StatusCode;
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;
    use crate::jwt::test_support::*;
    use crate::jwt::{Algorithm, JwtValidatorBuilder, KeySource};
    use crate::testkit::TokenIssuer;

    fn validator(issuer: &TokenIssuer) -> JwtValidatorBuilder {
        JwtValidator::access_tokens(AUDIENCE)
            .issuer(ISSUER)
            .key_source(KeySource::from_jwks(issuer.jwks()).unwrap())
    }

    fn request(token: Option<&str>, peer: Option<&PeerIdentity>) -> Request<()> {
        let mut builder = Request::builder().uri("/orders");
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut request = builder.body(()).unwrap();
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer.clone());
        }
        request
    }

    /// The handler: answers with the verified subject, so tests see the claims arrived.
    async fn handler(request: Request<()>) -> Result<Response<String>, Infallible> {
        let claims = request.extensions().get::<VerifiedClaims>();
        let body = match claims {
            Some(claims) => format!("hello {}", claims.subject().unwrap_or("?")),
            None => "no claims".to_owned(),
        };
        Ok(Response::new(body))
    }

    async fn send(layer: &JwtLayer, request: Request<()>) -> Response<String> {
        let service = layer.layer(tower::service_fn(handler));
        within(service.oneshot(request)).await.unwrap()
    }

    /// A 401 `invalid_token` with `description`, that never reached the handler and does not
    /// echo the token.
    fn assert_invalid(response: &Response<String>, description: &str, token: &str) {
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{}",
            response.body()
        );
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert_eq!(
            challenge,
            format!("Bearer error=\"invalid_token\", error_description=\"{description}\""),
        );
        assert!(!response.body().contains("hello"));
        let rejection = response.extensions().get::<Rejection>().unwrap();
        assert_eq!(rejection.kind(), RejectionKind::InvalidToken);
        if token.len() > 10 {
            for part in token.split('.').filter(|p| p.len() > 4) {
                assert!(!response.body().contains(part));
                assert!(!challenge.contains(part));
            }
        }
    }

    async fn rejected_with(layer: &JwtLayer, token: &str, peer: &PeerIdentity, description: &str) {
        let response = send(layer, request(Some(token), Some(peer))).await;
        assert_invalid(&response, description, token);
    }

    #[tokio::test]
    async fn every_rejection_is_401_invalid_token() {
        let mut issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
        issuer.add_key("k384", Algorithm::ES384).unwrap();
        let c = caller();
        let layer = JwtLayer::new(validator(&issuer).build().unwrap());
        let required = JwtLayer::new(
            validator(&issuer)
                .require_certificate_binding()
                .build()
                .unwrap(),
        );
        let now = SystemTime::now();
        let t = || issuer.token().audience(AUDIENCE).subject("alice");
        let mut tamper = serde_json::Map::new();
        tamper.insert("sub".into(), json!("admin"));

        let cases: Vec<(&JwtLayer, String, &str)> = vec![
            (&layer, t().unsigned(), "unsigned tokens are not accepted"),
            (
                &layer,
                t().hs256_with_public_key().unwrap(),
                "token algorithm not accepted",
            ),
            (
                &layer,
                t().header("kid", json!("unknown")).sign().unwrap(),
                "token signing key unknown",
            ),
            (
                &layer,
                t().expires_at(now - Duration::from_secs(60))
                    .sign()
                    .unwrap(),
                "token expired",
            ),
            (
                &layer,
                t().not_before(now + Duration::from_secs(60))
                    .sign()
                    .unwrap(),
                "token not valid yet",
            ),
            (
                &layer,
                t().audience("https://other.test").sign().unwrap(),
                "token audience not accepted",
            ),
            (
                &layer,
                t().issued_by("https://evil.test").sign().unwrap(),
                "token issuer not accepted",
            ),
            (
                &layer,
                t().tampered(tamper).unwrap(),
                "token signature invalid",
            ),
            (
                &layer,
                t().sign().unwrap().replacen('e', "*", 1),
                "token malformed",
            ),
            (
                &layer,
                t().claim("pad", json!("x".repeat(9000))).sign().unwrap(),
                "token too large",
            ),
            (
                &required,
                t().bound_to_svid(&c.other).sign().unwrap(),
                "token bound to another certificate",
            ),
            (
                &required,
                t().sign().unwrap(),
                "certificate-bound token required",
            ),
            (
                &layer,
                t().header("crit", json!(["b64"])).sign().unwrap(),
                "token has critical header parameters",
            ),
            (
                &layer,
                t().bound_to_svid(&c.other).sign().unwrap(),
                "token bound to another certificate",
            ),
            (
                &layer,
                t().claim("cnf", json!({"jkt": "x"})).sign().unwrap(),
                "token confirmation method not supported",
            ),
            (
                &layer,
                t().key("k384").header("kid", json!("k1")).sign().unwrap(),
                "token algorithm does not match its key",
            ),
            (
                &layer,
                t().issued_at(now + Duration::from_secs(60))
                    .expires_in(Duration::from_secs(120))
                    .sign()
                    .unwrap(),
                "token issued in the future",
            ),
            (
                &layer,
                t().expires_in(Duration::from_secs(3 * 24 * 3600))
                    .sign()
                    .unwrap(),
                "token lifetime too long",
            ),
            (
                &layer,
                t().header("kid", serde_json::Value::Null).sign().unwrap(),
                "token has no key id",
            ),
        ];
        for (layer, token, description) in &cases {
            rejected_with(layer, token, &c.peer, description).await;
        }

        // The good token passes both, and its claims reach the handler.
        let good = t().bound_to_svid(&c.svid).sign().unwrap();
        for layer in [&layer, &required] {
            let response = send(layer, request(Some(&good), Some(&c.peer))).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.body(), "hello alice");
        }
    }

    #[tokio::test]
    async fn token_only_from_the_authorization_header() {
        let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
        let c = caller();
        let layer = JwtLayer::new(validator(&issuer).build().unwrap());
        let token = issuer
            .token()
            .audience(AUDIENCE)
            .subject("alice")
            .sign()
            .unwrap();

        // In the query string: not looked at, so the request has no token.
        let mut in_query = request(None, Some(&c.peer));
        *in_query.uri_mut() = format!("/orders?access_token={token}").parse().unwrap();
        let response = send(&layer, in_query).await;
        assert_invalid(&response, "bearer token missing", &token);

        let response = send(&layer, request(None, Some(&c.peer))).await;
        assert_invalid(&response, "bearer token missing", &token);

        for value in [
            format!("Basic {token}"),
            "Bearer".to_owned(),
            "Bearer    ".to_owned(),
            token.clone(),
        ] {
            let mut r = request(None, Some(&c.peer));
            r.headers_mut()
                .insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_invalid(&send(&layer, r).await, "bearer token missing", &token);
        }

        let mut twice = request(Some(&token), Some(&c.peer));
        twice.headers_mut().append(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        assert_invalid(
            &send(&layer, twice).await,
            "more than one Authorization header",
            &token,
        );

        let mut binary = request(None, Some(&c.peer));
        binary.headers_mut().insert(
            header::AUTHORIZATION,
            http::HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        );
        assert_invalid(&send(&layer, binary).await, "token malformed", &token);

        let mut huge = request(None, Some(&c.peer));
        huge.headers_mut().insert(
            header::AUTHORIZATION,
            format!("Bearer {}", "a".repeat(20_000)).parse().unwrap(),
        );
        assert_invalid(&send(&layer, huge).await, "token too large", &token);

        // Scheme case and extra spaces are tolerated (RFC 7235), before the token and after,
        // on first sight and from the cache.
        for _ in 0..2 {
            let mut spaced = request(None, Some(&c.peer));
            spaced.headers_mut().insert(
                header::AUTHORIZATION,
                format!("bearer   {token}  ").parse().unwrap(),
            );
            assert_eq!(send(&layer, spaced).await.body(), "hello alice");
        }
    }

    /// The header may be longer than the token limit by "Bearer" and spaces, 16 bytes in all:
    /// a header of exactly the limit plus 16 reaches the validator, one byte more is refused as
    /// too large whatever it holds.
    #[tokio::test]
    async fn header_size_boundary_is_exact() {
        let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
        let c = caller();
        let token = issuer
            .token()
            .audience(AUDIENCE)
            .subject("alice")
            .claim("pad", json!("p".repeat(300)))
            .sign()
            .unwrap();
        let layer = JwtLayer::new(
            validator(&issuer)
                .max_token_size(token.len())
                .build()
                .unwrap(),
        );
        let with_header = |value: String| {
            let mut r = request(None, Some(&c.peer));
            r.headers_mut()
                .insert(header::AUTHORIZATION, value.parse().unwrap());
            r
        };
        let at_limit = format!("Bearer {token}{}", " ".repeat(9));
        assert_eq!(at_limit.len(), token.len() + 16);
        let response = send(&layer, with_header(at_limit)).await;
        assert_eq!(response.body(), "hello alice");
        let over = format!("Bearer {token}{}", " ".repeat(10));
        assert_invalid(
            &send(&layer, with_header(over)).await,
            "token too large",
            &token,
        );
    }

    /// The layer is ready only when the inner service is (back-pressure passes through), and
    /// the Debug forms show the validator and the required scopes.
    #[tokio::test]
    async fn readiness_is_the_inner_services_and_debug_forms() {
        use crate::layer::test_support::{NeverReady, is_ready};

        let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
        let c = caller();
        let layer = JwtLayer::new(validator(&issuer).build().unwrap()).require_scope("read");
        let mut never = layer.layer(NeverReady);
        assert!(!is_ready::<_, Request<()>>(&mut never).await);
        assert!(is_ready(&mut layer.layer(tower::service_fn(handler))).await);

        let debug = format!("{layer:?}");
        assert!(
            debug.starts_with("JwtLayer { validator: JwtValidator {"),
            "{debug}"
        );
        assert!(debug.ends_with(r#"scopes: ["read"], .. }"#), "{debug}");
        assert_eq!(
            format!("{never:?}"),
            r#"Jwt { inner: NeverReady, scopes: ["read"], .. }"#
        );
        let future = never.call(request(None, Some(&c.peer)));
        assert_eq!(
            format!("{future:?}"),
            r#"ResponseFuture { state: "rejected" }"#
        );
        let token = issuer
            .token()
            .audience(AUDIENCE)
            .scope("read")
            .sign()
            .unwrap();
        let future = never.call(request(Some(&token), Some(&c.peer)));
        assert_eq!(
            format!("{future:?}"),
            r#"ResponseFuture { state: "called" }"#
        );
    }

    #[tokio::test]
    async fn missing_peer_identity_is_401_and_never_reaches_the_handler() {
        let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
        let layer = JwtLayer::new(validator(&issuer).build().unwrap());
        let token = issuer.token().audience(AUDIENCE).sign().unwrap();
        let response = send(&layer, request(Some(&token), None)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.extensions().get::<Rejection>().unwrap().kind(),
            RejectionKind::MissingPeerIdentity
        );
        assert!(!response.body().contains("hello"));
    }

    #[tokio::test]
    async fn missing_scope_is_403_insufficient_scope() {
        let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
        let c = caller();
        let layer = JwtLayer::new(validator(&issuer).build().unwrap())
            .require_scope("orders:read")
            .require_scope("orders:write");
        let t = || issuer.token().audience(AUDIENCE).subject("alice");

        let response = send(
            &layer,
            request(
                Some(&t().scope("orders:read").sign().unwrap()),
                Some(&c.peer),
            ),
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"insufficient_scope\", error_description=\"scope orders:write required\""
        );
        assert_eq!(
            response.extensions().get::<Rejection>().unwrap().kind(),
            RejectionKind::InsufficientScope
        );

        let both = t().scope("orders:write orders:read").sign().unwrap();
        assert_eq!(
            send(&layer, request(Some(&both), Some(&c.peer)))
                .await
                .body(),
            "hello alice"
        );
        let scp = t()
            .claim("scp", json!(["orders:read", "orders:write"]))
            .sign()
            .unwrap();
        assert_eq!(
            send(&layer, request(Some(&scp), Some(&c.peer)))
                .await
                .status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn grpc_rejections_are_unauthenticated() {
        let issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
        let c = caller();
        let layer = JwtLayer::new(validator(&issuer).build().unwrap());
        let mut r = request(Some("a.b.c"), Some(&c.peer));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, "application/grpc".parse().unwrap());
        let response = send(&layer, r).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "16");
    }

    #[tokio::test]
    async fn good_paths_es256_eddsa_rs256_and_aud_list() {
        let c = caller();
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let issuer = TokenIssuer::new(ISSUER, "k", alg).unwrap();
            let layer = JwtLayer::new(validator(&issuer).build().unwrap());
            for token in [
                issuer
                    .token()
                    .audience(AUDIENCE)
                    .subject("alice")
                    .sign()
                    .unwrap(),
                issuer
                    .token()
                    .audiences(&["https://other.test", AUDIENCE])
                    .subject("alice")
                    .bound_to_svid(&c.svid)
                    .sign()
                    .unwrap(),
            ] {
                let response = send(&layer, request(Some(&token), Some(&c.peer))).await;
                assert_eq!(
                    response.status(),
                    StatusCode::OK,
                    "{alg:?}: {}",
                    response.body()
                );
                assert_eq!(response.body(), "hello alice");
            }
        }
    }

    #[tokio::test]
    async fn rotation_through_the_layer_waits_for_the_refresh() {
        let mut issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).unwrap();
        let fetcher = TestFetcher::new(issuer.jwks());
        let keys = within(
            KeySource::jwks_url(fetcher.clone())
                .unknown_kid_interval(Duration::ZERO)
                .start(),
        )
        .await
        .unwrap();
        let c = caller();
        let layer = JwtLayer::new(
            JwtValidator::access_tokens(AUDIENCE)
                .issuer(ISSUER)
                .key_source(keys)
                .build()
                .unwrap(),
        )
        .require_scope("read");

        issuer.add_key("k2", Algorithm::EdDSA).unwrap();
        let rotated = issuer
            .token()
            .key("k2")
            .audience(AUDIENCE)
            .subject("bob")
            .scope("read")
            .sign()
            .unwrap();

        // Before the issuer publishes the key: refused after one refresh.
        let response = send(&layer, request(Some(&rotated), Some(&c.peer))).await;
        assert_invalid(&response, "token signing key unknown", &rotated);
        assert_eq!(fetcher.fetches(), 2);

        // Published: the next request refreshes and is let through.
        fetcher.serve(Ok(issuer.jwks()));
        let response = send(&layer, request(Some(&rotated), Some(&c.peer))).await;
        assert_eq!(response.body(), "hello bob");
        assert_eq!(fetcher.fetches(), 3);

        // After a refresh, the scope check still applies.
        issuer.add_key("k3", Algorithm::ES256).unwrap();
        fetcher.serve(Ok(issuer.jwks()));
        let k3 = issuer.token().key("k3").audience(AUDIENCE).sign().unwrap();
        let response = send(&layer, request(Some(&k3), Some(&c.peer))).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
}
