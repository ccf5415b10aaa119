//! Request-time rejections and their mapping to HTTP and gRPC responses.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::authz::DenyReason;
use crate::jwt::{TokenError, TokenErrorKind};
use crate::limit::LimitReason;

/// What kind of rejection a layer made; decides the status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The request carries no verified peer identity (the service is not behind a secure
    /// listener): HTTP 401, gRPC UNAUTHENTICATED.
    MissingPeerIdentity,
    /// The bearer token is missing, malformed, expired, unverifiable or not bound to this
    /// connection: HTTP 401 with `WWW-Authenticate: Bearer error="invalid_token"`, gRPC
    /// UNAUTHENTICATED.
    InvalidToken,
    /// The token is valid but lacks a required scope: HTTP 403 with
    /// `WWW-Authenticate: Bearer error="insufficient_scope"`, gRPC PERMISSION_DENIED.
    InsufficientScope,
    /// The authorization policy denies the request: HTTP 403, gRPC PERMISSION_DENIED.
    Forbidden,
    /// The caller is over a rate or concurrency limit: HTTP 429 with `Retry-After` (whole
    /// seconds, rounded up), gRPC RESOURCE_EXHAUSTED.
    TooManyRequests,
}

/// The typed cause a layer knows, beyond the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    /// Nothing more than the kind (a rejection made with [`Rejection::new`]).
    Unspecified,
    /// The JWT layer refused the token.
    Token(TokenErrorKind),
    /// The JWT layer found the token without this scope.
    MissingScope(String),
    /// The authorization policy denied the request.
    Denied(DenyReason),
    /// A limit refused the request.
    Limited(LimitExceeded),
}

/// Where a limit that refused a request was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitSource {
    /// A [`RateLimitLayer`](crate::layer::rate_limit::RateLimitLayer) (limits written in code).
    Layer,
    /// A rule of the authorization policy (`rate`, `burst`, `concurrency`), enforced by the
    /// [`AuthorizeLayer`](crate::layer::authorize::AuthorizeLayer) for the callers the rule
    /// admits.
    PolicyRule,
}

impl LimitSource {
    /// `layer` or `policy`: the `source` label of the rate-limit metric.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Layer => "layer",
            Self::PolicyRule => "policy",
        }
    }
}

/// Which limit refused a request ([`RejectionKind::TooManyRequests`]), for custom responders
/// and logging: [`Rejection::limit_exceeded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    source: LimitSource,
    name: Arc<str>,
    reason: LimitReason,
    retry_after: Duration,
}

impl LimitExceeded {
    pub(crate) fn new(
        source: LimitSource,
        name: Arc<str>,
        reason: LimitReason,
        retry_after: Duration,
    ) -> Self {
        Self {
            source,
            name,
            reason,
            retry_after,
        }
    }

    /// Whether the limit was set on the layer or on a policy rule.
    pub fn source(&self) -> LimitSource {
        self.source
    }

    /// The limit's name: the policy rule's, or the layer limit's (`default`, `total`, or the
    /// name given to an override).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which part of the limit refused: the caller's rate, its requests in flight, the total
    /// rate, or the limiter's capacity.
    pub fn reason(&self) -> LimitReason {
        self.reason
    }

    /// How long until a request of the caller could be admitted: exact for rate limits, one
    /// second (a hint) for in-flight and capacity refusals.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// [`retry_after`](Self::retry_after) in whole seconds, rounded up, at least 1: the
    /// `Retry-After` header's value.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// A request refused by a layer.
///
/// The description is meant for the caller: it never contains token or key material, nor the
/// policy's internals. The typed cause ([`token_error`](Self::token_error),
/// [`missing_scope`](Self::missing_scope), [`deny_reason`](Self::deny_reason),
/// [`limit_exceeded`](Self::limit_exceeded)) is meant for a
/// custom [`RejectionResponder`] and for logging; the [`DefaultResponder`] does not send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    kind: RejectionKind,
    description: Cow<'static, str>,
    cause: Cause,
}

impl Rejection {
    /// A rejection of `kind`, with a short description safe to show to the caller.
    pub fn new(kind: RejectionKind, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            description: description.into(),
            cause: Cause::Unspecified,
        }
    }

    /// The JWT layer's refusal of a token: [`RejectionKind::InvalidToken`] with the error's
    /// kind and description.
    pub(crate) fn invalid_token(error: &TokenError) -> Self {
        Self {
            cause: Cause::Token(error.kind()),
            ..Self::new(RejectionKind::InvalidToken, error.description().to_owned())
        }
    }

    /// The JWT layer's refusal of a valid token without `scope`:
    /// [`RejectionKind::InsufficientScope`].
    pub(crate) fn insufficient_scope(scope: &str) -> Self {
        Self {
            cause: Cause::MissingScope(scope.to_owned()),
            ..Self::new(
                RejectionKind::InsufficientScope,
                format!("scope {scope} required"),
            )
        }
    }

    /// The policy's denial: [`RejectionKind::Forbidden`] with `reason` (every denial has one)
    /// and a `description` that says nothing of the policy.
    pub(crate) fn denied(reason: Option<DenyReason>, description: &'static str) -> Self {
        Self {
            cause: reason.map_or(Cause::Unspecified, Cause::Denied),
            ..Self::new(RejectionKind::Forbidden, description)
        }
    }

    /// A limit's refusal: [`RejectionKind::TooManyRequests`], with a description that names no
    /// limit.
    pub(crate) fn too_many_requests(limit: LimitExceeded) -> Self {
        let description = match limit.reason() {
            LimitReason::Concurrency => "too many requests in flight: retry later",
            _ => "too many requests: retry later",
        };
        Self {
            cause: Cause::Limited(limit),
            ..Self::new(RejectionKind::TooManyRequests, description)
        }
    }

    /// What kind of rejection this is.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The description sent to the caller.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Why the JWT layer refused the bearer token (for [`RejectionKind::InvalidToken`]); `None`
    /// for other rejections.
    pub fn token_error(&self) -> Option<TokenErrorKind> {
        match self.cause {
            Cause::Token(kind) => Some(kind),
            _ => None,
        }
    }

    /// The required scope the token lacks (for [`RejectionKind::InsufficientScope`], the
    /// first one the JWT layer found missing); `None` for other rejections.
    pub fn missing_scope(&self) -> Option<&str> {
        match &self.cause {
            Cause::MissingScope(scope) => Some(scope),
            _ => None,
        }
    }

    /// Why the authorization policy denied the request (for [`RejectionKind::Forbidden`]);
    /// `None` for other rejections, and for a request the authorization layer refused without
    /// asking the policy (a layer applied after axum routing).
    pub fn deny_reason(&self) -> Option<DenyReason> {
        match self.cause {
            Cause::Denied(reason) => Some(reason),
            _ => None,
        }
    }

    /// Which limit refused the request (for [`RejectionKind::TooManyRequests`]); `None` for
    /// other rejections.
    pub fn limit_exceeded(&self) -> Option<&LimitExceeded> {
        match &self.cause {
            Cause::Limited(limit) => Some(limit),
            _ => None,
        }
    }

    /// The HTTP status this rejection maps to.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            RejectionKind::MissingPeerIdentity | RejectionKind::InvalidToken => {
                StatusCode::UNAUTHORIZED
            }
            RejectionKind::InsufficientScope | RejectionKind::Forbidden => StatusCode::FORBIDDEN,
            RejectionKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The gRPC status code this rejection maps to (16 UNAUTHENTICATED, 7 PERMISSION_DENIED or
    /// 8 RESOURCE_EXHAUSTED).
    pub fn grpc_status(&self) -> u16 {
        match self.kind {
            RejectionKind::MissingPeerIdentity | RejectionKind::InvalidToken => 16,
            RejectionKind::InsufficientScope | RejectionKind::Forbidden => 7,
            RejectionKind::TooManyRequests => 8,
        }
    }

    /// The `Retry-After` seconds of a limit's refusal.
    fn retry_after_secs(&self) -> Option<u64> {
        self.limit_exceeded().map(LimitExceeded::retry_after_secs)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.description)
    }
}

impl std::error::Error for Rejection {}

/// Whether a request is a gRPC call (`content-type: application/grpc…`).
pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Response bodies a rejection can be written into.
pub trait RejectionBody: Sized {
    /// A body holding `bytes`.
    fn from_bytes(bytes: Bytes) -> Self;
}

impl RejectionBody for http_body_util::Full<Bytes> {
    fn from_bytes(bytes: Bytes) -> Self {
        Self::new(bytes)
    }
}

impl RejectionBody for Bytes {
    fn from_bytes(bytes: Bytes) -> Self {
        bytes
    }
}

impl RejectionBody for String {
    fn from_bytes(bytes: Bytes) -> Self {
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl<E> RejectionBody for http_body_util::combinators::UnsyncBoxBody<Bytes, E> {
    fn from_bytes(bytes: Bytes) -> Self {
        use http_body_util::BodyExt;
        http_body_util::Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    }
}

/// Turns rejections into responses. Replace the [`DefaultResponder`] to change bodies or
/// headers; keep the status codes unless the callers' protocol needs others.
///
/// A closure `Fn(&Rejection, bool) -> Response<Bytes>` is a responder: it is given the
/// rejection and whether the request was a gRPC call, and its response's body is turned into
/// the service's body type with [`RejectionBody::from_bytes`]; the [`Rejection`] is then put in
/// the response's extensions. Give the closure's argument types (`|rejection: &Rejection,
/// grpc: bool|`), as nothing else tells the compiler what they are. The closure can start from
/// the default response, `DefaultResponder.respond::<Bytes>(rejection, grpc)`, and change it.
///
/// ```
/// use bytes::Bytes;
/// use http::{Response, StatusCode};
/// use secure_channel::jwt::{JwtValidator, KeySource, TokenErrorKind};
/// use secure_channel::layer::jwt::JwtLayer;
/// use secure_channel::layer::{DefaultResponder, Rejection, RejectionResponder};
///
/// # let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256",
/// #     "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
/// #     "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
/// # let validator = JwtValidator::access_tokens("https://api.example.org")
/// #     .issuer("https://issuer.example.org")
/// #     .key_source(KeySource::from_jwks(jwks)?)
/// #     .build()?;
/// // Tell HTTP callers with an expired token to fetch a new one; answer the rest as usual.
/// let layer = JwtLayer::new(validator).responder(|rejection: &Rejection, grpc: bool| {
///     if !grpc && rejection.token_error() == Some(TokenErrorKind::Expired) {
///         let mut response = Response::new(Bytes::from_static(b"token expired: renew it"));
///         *response.status_mut() = StatusCode::UNAUTHORIZED;
///         response
///     } else {
///         DefaultResponder.respond(rejection, grpc)
///     }
/// });
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait RejectionResponder: Clone + Send + Sync + 'static {
    /// The response for `rejection`; `grpc` says whether the request was a gRPC call.
    fn respond<B: RejectionBody>(&self, rejection: &Rejection, grpc: bool) -> Response<B>;
}

impl<F> RejectionResponder for F
where
    F: Fn(&Rejection, bool) -> Response<Bytes> + Clone + Send + Sync + 'static,
{
    fn respond<B: RejectionBody>(&self, rejection: &Rejection, grpc: bool) -> Response<B> {
        let mut response = self(rejection, grpc).map(B::from_bytes);
        response.extensions_mut().insert(rejection.clone());
        response
    }
}

/// The default mapping: a small JSON body for HTTP (with an RFC 6750 `WWW-Authenticate` header for
/// token problems), a trailers-only gRPC status for gRPC. The [`Rejection`] is stored in the
/// response extensions.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultResponder;

impl RejectionResponder for DefaultResponder {
    fn respond<B: RejectionBody>(&self, rejection: &Rejection, grpc: bool) -> Response<B> {
        let mut response = if grpc {
            let mut response = Response::new(B::from_bytes(Bytes::new()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(rejection.grpc_status()));
            if let Ok(message) =
                HeaderValue::from_str(&percent_encode_grpc(rejection.description()))
            {
                headers.insert("grpc-message", message);
            }
            // gRFC A6: a client with a retry policy waits this long before retrying.
            if let Some(secs) = rejection.retry_after_secs() {
                headers.insert(
                    "grpc-retry-pushback-ms",
                    HeaderValue::from(secs.saturating_mul(1000)),
                );
            }
            response
        } else {
            let error = match rejection.kind() {
                RejectionKind::MissingPeerIdentity => "unauthenticated",
                RejectionKind::InvalidToken => "invalid_token",
                RejectionKind::InsufficientScope => "insufficient_scope",
                RejectionKind::Forbidden => "forbidden",
                RejectionKind::TooManyRequests => "too_many_requests",
            };
            let body =
                serde_json::json!({ "error": error, "error_description": rejection.description() });
            let mut response = Response::new(B::from_bytes(Bytes::from(body.to_string())));
            *response.status_mut() = rejection.status();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if matches!(
                rejection.kind(),
                RejectionKind::InvalidToken | RejectionKind::InsufficientScope
            ) {
                let challenge = format!(
                    "Bearer error=\"{error}\", error_description=\"{}\"",
                    quoted_string_safe(rejection.description())
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            if let Some(secs) = rejection.retry_after_secs() {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        };
        response.extensions_mut().insert(rejection.clone());
        response
    }
}

/// RFC 6750 error descriptions are limited to printable ASCII without `"` and `\`.
fn quoted_string_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if (' '..='~').contains(&c) && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// gRPC messages are percent-encoded outside printable ASCII.
fn percent_encode_grpc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_mapping() {
        let r = Rejection::new(RejectionKind::InvalidToken, "token expired");
        let response: Response<String> = DefaultResponder.respond(&r, false);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", error_description=\"token expired\""
        );
        assert!(response.body().contains("\"error\":\"invalid_token\""));
        assert_eq!(response.extensions().get::<Rejection>(), Some(&r));

        let r = Rejection::new(RejectionKind::InsufficientScope, "scope \"write\" required");
        let response: Response<String> = DefaultResponder.respond(&r, false);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"insufficient_scope\", error_description=\"scope _write_ required\""
        );

        let r = Rejection::new(RejectionKind::Forbidden, "denied");
        let response: Response<String> = DefaultResponder.respond(&r, false);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    /// Every body type a layer can answer with carries the JSON of the rejection, and the
    /// `Display` form names the kind and the description.
    #[tokio::test]
    async fn every_body_type_carries_the_rejection() {
        use http_body_util::BodyExt;

        async fn text<B>(response: Response<B>) -> String
        where
            B: http_body::Body,
            B::Error: fmt::Debug,
        {
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(bytes.to_vec()).unwrap()
        }

        let r = Rejection::new(RejectionKind::Forbidden, "denied");
        assert_eq!(r.to_string(), "Forbidden: denied");
        let expected = r#"{"error":"forbidden","error_description":"denied"}"#;
        let full: Response<http_body_util::Full<Bytes>> = DefaultResponder.respond(&r, false);
        assert_eq!(text(full).await, expected);
        let boxed: Response<
            http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>,
        > = DefaultResponder.respond(&r, false);
        assert_eq!(text(boxed).await, expected);
        #[cfg(feature = "axum")]
        {
            let axum: Response<axum::body::Body> = DefaultResponder.respond(&r, false);
            assert_eq!(text(axum).await, expected);
        }
        #[cfg(feature = "tonic")]
        {
            let tonic: Response<tonic::body::Body> = DefaultResponder.respond(&r, false);
            assert_eq!(text(tonic).await, expected);
        }
    }

    #[test]
    fn grpc_mapping() {
        for (kind, code) in [
            (RejectionKind::InvalidToken, "16"),
            (RejectionKind::MissingPeerIdentity, "16"),
            (RejectionKind::Forbidden, "7"),
            (RejectionKind::InsufficientScope, "7"),
        ] {
            let response: Response<String> =
                DefaultResponder.respond(&Rejection::new(kind, "nö"), true);
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["grpc-status"], code);
            assert_eq!(response.headers()["grpc-message"], "n%C3%B6");
        }
    }

    /// What the three accessors of the typed cause say.
    fn causes(r: &Rejection) -> (Option<TokenErrorKind>, Option<&str>, Option<DenyReason>) {
        (r.token_error(), r.missing_scope(), r.deny_reason())
    }

    #[test]
    fn the_typed_cause_is_kept_and_only_its_own_accessor_answers() {
        let plain = Rejection::new(RejectionKind::InvalidToken, "no validated token");
        assert_eq!(causes(&plain), (None, None, None));

        let token = Rejection::invalid_token(&TokenError::new(TokenErrorKind::Expired));
        assert_eq!(token.kind(), RejectionKind::InvalidToken);
        assert_eq!(token.description(), "token expired");
        assert_eq!(causes(&token), (Some(TokenErrorKind::Expired), None, None));

        let scope = Rejection::insufficient_scope("orders:write");
        assert_eq!(scope.kind(), RejectionKind::InsufficientScope);
        assert_eq!(scope.description(), "scope orders:write required");
        assert_eq!(causes(&scope), (None, Some("orders:write"), None));

        let denied = Rejection::denied(Some(DenyReason::DenyRule), "denied");
        assert_eq!(denied.kind(), RejectionKind::Forbidden);
        assert_eq!(denied.description(), "denied");
        assert_eq!(causes(&denied), (None, None, Some(DenyReason::DenyRule)));
        let unexplained = Rejection::denied(None, "denied");
        assert_eq!(unexplained.deny_reason(), None);
        assert_eq!(
            unexplained,
            Rejection::new(RejectionKind::Forbidden, "denied")
        );
        // The cause is part of the rejection's identity.
        assert_ne!(denied, unexplained);
    }

    fn limited(reason: LimitReason, retry_after: Duration) -> Rejection {
        Rejection::too_many_requests(LimitExceeded::new(
            LimitSource::PolicyRule,
            Arc::from("batch-reads"),
            reason,
            retry_after,
        ))
    }

    /// 429 with `Retry-After` in whole seconds rounded up, a body that names no limit, and the
    /// typed cause for custom responders.
    #[test]
    fn limits_map_to_429_with_retry_after() {
        let r = limited(LimitReason::Rate, Duration::from_millis(1_200));
        assert_eq!(r.kind(), RejectionKind::TooManyRequests);
        assert_eq!(causes(&r), (None, None, None));
        let limit = r.limit_exceeded().unwrap();
        assert_eq!(
            (limit.source(), limit.name(), limit.reason()),
            (LimitSource::PolicyRule, "batch-reads", LimitReason::Rate)
        );
        assert_eq!(limit.retry_after(), Duration::from_millis(1_200));
        assert_eq!(limit.retry_after_secs(), 2);
        let response: Response<String> = DefaultResponder.respond(&r, false);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            response.body(),
            r#"{"error":"too_many_requests","error_description":"too many requests: retry later"}"#
        );
        assert!(!response.body().contains("batch"));
        assert_eq!(response.extensions().get::<Rejection>(), Some(&r));

        // Never "retry after 0 seconds"; whole seconds stay whole.
        for (wait, secs) in [(1, 1), (999, 1), (1_000, 1), (1_001, 2), (3_600_000, 3_600)] {
            let r = limited(LimitReason::Rate, Duration::from_millis(wait));
            assert_eq!(
                r.limit_exceeded().unwrap().retry_after_secs(),
                secs,
                "{wait}"
            );
        }
        let r = limited(LimitReason::Concurrency, Duration::from_secs(1));
        assert_eq!(r.description(), "too many requests in flight: retry later");
        let response: Response<String> = DefaultResponder.respond(&r, false);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");

        // Other rejections carry no Retry-After.
        let response: Response<String> =
            DefaultResponder.respond(&Rejection::new(RejectionKind::Forbidden, "no"), false);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn limits_map_to_resource_exhausted() {
        let r = limited(LimitReason::Total, Duration::from_millis(2_500));
        assert_eq!(r.grpc_status(), 8);
        let response: Response<String> = DefaultResponder.respond(&r, true);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "8");
        assert_eq!(response.headers()["grpc-retry-pushback-ms"], "3000");
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        // A plain rejection of that kind (made by a user) maps the same, without a pushback.
        let plain = Rejection::new(RejectionKind::TooManyRequests, "slow down");
        let response: Response<String> = DefaultResponder.respond(&plain, true);
        assert_eq!(response.headers()["grpc-status"], "8");
        assert!(response.headers().get("grpc-retry-pushback-ms").is_none());
        let response: Response<String> = DefaultResponder.respond(&plain, false);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn a_closure_is_a_responder() {
        let responder = |rejection: &Rejection, grpc: bool| {
            let mut response =
                Response::new(Bytes::from(format!("{:?} {grpc}", rejection.token_error())));
            *response.status_mut() = StatusCode::IM_A_TEAPOT;
            response
                .headers_mut()
                .insert("x-reason", HeaderValue::from_static("closure"));
            response
        };
        let rejection = Rejection::invalid_token(&TokenError::new(TokenErrorKind::Missing));
        for grpc in [false, true] {
            let response: Response<String> = responder.respond(&rejection, grpc);
            assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
            assert_eq!(response.headers()["x-reason"], "closure");
            assert_eq!(response.body(), &format!("Some(Missing) {grpc}"));
            assert_eq!(response.extensions().get::<Rejection>(), Some(&rejection));
        }

        // Starting from the default response keeps its status, headers and body.
        let default = |rejection: &Rejection, grpc: bool| DefaultResponder.respond(rejection, grpc);
        let by_closure: Response<String> = default.respond(&rejection, false);
        let direct: Response<String> = DefaultResponder.respond(&rejection, false);
        assert_eq!(by_closure.status(), direct.status());
        assert_eq!(by_closure.headers(), direct.headers());
        assert_eq!(by_closure.body(), direct.body());
        assert_eq!(by_closure.extensions().get::<Rejection>(), Some(&rejection));
    }
}
