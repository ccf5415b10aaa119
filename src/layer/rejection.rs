//! Request-time rejections and their mapping to HTTP and gRPC responses.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};

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
}

/// A request refused by a layer.
///
/// The description is meant for the caller: it never contains token or key material, nor the
/// policy's internals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    kind: RejectionKind,
    description: Cow<'static, str>,
}

impl Rejection {
    /// A rejection of `kind`, with a short description safe to show to the caller.
    pub fn new(kind: RejectionKind, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            description: description.into(),
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

    /// The HTTP status this rejection maps to.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            RejectionKind::MissingPeerIdentity | RejectionKind::InvalidToken => {
                StatusCode::UNAUTHORIZED
            }
            RejectionKind::InsufficientScope | RejectionKind::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    /// The gRPC status code this rejection maps to (16 UNAUTHENTICATED or 7 PERMISSION_DENIED).
    pub fn grpc_status(&self) -> u16 {
        match self.status() {
            StatusCode::UNAUTHORIZED => 16,
            _ => 7,
        }
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
pub trait RejectionResponder: Clone + Send + Sync + 'static {
    /// The response for `rejection`; `grpc` says whether the request was a gRPC call.
    fn respond<B: RejectionBody>(&self, rejection: &Rejection, grpc: bool) -> Response<B>;
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
            response
        } else {
            let error = match rejection.kind() {
                RejectionKind::MissingPeerIdentity => "unauthenticated",
                RejectionKind::InvalidToken => "invalid_token",
                RejectionKind::InsufficientScope => "insufficient_scope",
                RejectionKind::Forbidden => "forbidden",
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
}
