//! The errors of the OAuth 2.0 clients: [`OAuthConfigError`] when building or discovering,
//! [`TokenRequestError`] when a token request fails.

use std::fmt;

use http::StatusCode;

use crate::{ConnectionError, ConnectionErrorKind, Location};

/// A problem with an OAuth 2.0 client's configuration, or with what discovery found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthConfigError {
    /// A setting is out of range or malformed.
    #[error("{field}: {problem}")]
    InvalidSetting {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// An endpoint (configured, or named by the server's metadata) is not an absolute `https`
    /// URI: tokens and client credentials never travel over plain HTTP.
    #[error("{location}: {uri:?} is not an absolute https URI ({problem})")]
    InvalidEndpoint {
        /// Where the URI came from (a field of the configuration or of the metadata).
        location: Location,
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Fetching the authorization server's metadata failed.
    #[error("fetching the authorization server metadata failed: {0}")]
    Discovery(#[source] Box<TokenRequestError>),
    /// The metadata names another issuer than the one asked for (RFC 8414 section 3.3: the
    /// metadata must not be used).
    #[error("the metadata at {url} names issuer {presented:?}, not the expected {expected:?}")]
    IssuerMismatch {
        /// Where the metadata was fetched.
        url: String,
        /// The issuer the client was configured with.
        expected: String,
        /// The issuer the metadata names.
        presented: String,
    },
    /// The metadata is not a JSON object with the members RFC 8414 requires.
    #[error("the metadata at {url} is invalid: {problem}")]
    InvalidMetadata {
        /// Where the metadata was fetched.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The authorization server says it does not support what this client needs.
    #[error("the authorization server does not support {needed} (its {field}: {supported:?})")]
    Unsupported {
        /// The metadata member that says so.
        field: &'static str,
        /// What this client needs.
        needed: String,
        /// What the server lists.
        supported: Vec<String>,
    },
}

/// Why a token request (or a metadata fetch) failed; see [`TokenRequestError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRequestErrorKind {
    /// No connection: TCP, or the TLS handshake, including an endpoint whose identity is not
    /// the expected one (SPIFFE ID or WebPKI host name); see
    /// [`TokenRequestError::connection_error`].
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// The server answered with an RFC 6749 section 5.2 error; see
    /// [`TokenRequestError::error_response`].
    ErrorResponse,
    /// The server answered with a status other than 200 and no RFC 6749 error body.
    UnexpectedStatus,
    /// The answer's body is larger than the client accepts.
    ResponseTooLarge,
    /// The answer is not what RFC 6749 section 5.1 (or RFC 8693 section 2.2.1) describes: not
    /// JSON, no `access_token`, a `token_type` other than `Bearer`, a malformed `expires_in`.
    InvalidResponse,
    /// Certificate binding was required and the issued token is not bound (no
    /// `cnf.x5t#S256`, or not a JWT), or is bound to another certificate than the one this
    /// workload presented.
    NotBound,
    /// The request could not be sent (an I/O error after connecting, a protocol error).
    Transport,
}

/// An RFC 6749 section 5.2 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `invalid_request`: a parameter is missing, repeated or malformed.
    InvalidRequest,
    /// `invalid_client`: client authentication failed (for RFC 8705: no certificate, or not
    /// the certificate registered for the client).
    InvalidClient,
    /// `invalid_grant`: the grant (for token exchange: the subject token) is invalid, expired
    /// or revoked.
    InvalidGrant,
    /// `unauthorized_client`: the client may not use this grant type.
    UnauthorizedClient,
    /// `unsupported_grant_type`: the server does not support the grant type.
    UnsupportedGrantType,
    /// `invalid_scope`: a requested scope is invalid or not allowed.
    InvalidScope,
    /// `invalid_target` (RFC 8707, RFC 8693): a requested audience or resource is not
    /// acceptable.
    InvalidTarget,
    /// A code this crate does not know; [`ErrorResponse::code_str`] has it.
    Other,
}

impl ErrorCode {
    fn parse(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "invalid_target" => Self::InvalidTarget,
            _ => Self::Other,
        }
    }
}

/// An RFC 6749 section 5.2 error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    status: StatusCode,
    code: ErrorCode,
    code_str: String,
    description: Option<String>,
}

/// The longest `error` or `error_description` kept (the rest is cut off).
const MAX_TEXT: usize = 256;

/// `text` printable and bounded: an answer's text ends up in logs.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect()
}

impl ErrorResponse {
    /// Parses an error body (`{"error": "...", ...}`); `None` when it is not one.
    pub(crate) fn parse(status: StatusCode, body: &[u8]) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Body {
            error: String,
            error_description: Option<String>,
        }
        let body: Body = serde_json::from_slice(body).ok()?;
        if body.error.is_empty() {
            return None;
        }
        Some(Self {
            status,
            code: ErrorCode::parse(&body.error),
            code_str: sanitize(&body.error),
            description: body.error_description.as_deref().map(sanitize),
        })
    }

    /// The HTTP status of the answer (400 or 401 as RFC 6749 says; servers differ).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The error code as the server wrote it (control characters removed, at most 256).
    pub fn code_str(&self) -> &str {
        &self.code_str
    }

    /// The server's `error_description`, if any (control characters removed, at most 256).
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
}

impl fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code_str, self.status)?;
        if let Some(description) = &self.description {
            write!(f, ": {description}")?;
        }
        Ok(())
    }
}

/// A failed token request (or metadata fetch): why ([`kind`](Self::kind)), at which endpoint,
/// and the server's RFC 6749 error when it sent one.
///
/// Never holds a token, a client credential or key material. A
/// [`TokenProvider`](crate::jwt::TokenProvider) returns it boxed: recover it with
/// `error.downcast_ref::<TokenRequestError>()`. Cloning it shares its source (the requests
/// that waited for one token exchange get the same error).
#[derive(Debug, Clone)]
pub struct TokenRequestError {
    kind: TokenRequestErrorKind,
    endpoint: String,
    detail: String,
    response: Option<Box<ErrorResponse>>,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl TokenRequestError {
    pub(crate) fn new(
        kind: TokenRequestErrorKind,
        endpoint: &http::Uri,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            endpoint: endpoint_text(endpoint),
            detail: detail.into(),
            response: None,
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(std::sync::Arc::from(source.into()));
        self
    }

    pub(crate) fn from_response(endpoint: &http::Uri, response: ErrorResponse) -> Self {
        Self {
            kind: TokenRequestErrorKind::ErrorResponse,
            endpoint: endpoint_text(endpoint),
            detail: response.to_string(),
            response: Some(Box::new(response)),
            source: None,
        }
    }

    /// Why the request failed.
    pub fn kind(&self) -> TokenRequestErrorKind {
        self.kind
    }

    /// The endpoint asked (scheme, authority and path; no query).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The server's RFC 6749 section 5.2 error, for [`TokenRequestErrorKind::ErrorResponse`].
    pub fn error_response(&self) -> Option<&ErrorResponse> {
        self.response.as_deref()
    }

    /// The connection error, for [`TokenRequestErrorKind::Connect`] when the connector
    /// reported one of this crate's (such as
    /// [`ConnectionError::PeerRejected`](crate::ConnectionError::PeerRejected) for a token
    /// endpoint with another SPIFFE ID than expected).
    pub fn connection_error(&self) -> Option<&ConnectionError> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = match &self.source {
            Some(source) => Some(source.as_ref()),
            None => None,
        };
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<ConnectionError>() {
                return Some(found);
            }
            next = error.source();
        }
        None
    }

    /// The kind of the connection error, when there is one of this crate's.
    pub fn connection_error_kind(&self) -> Option<ConnectionErrorKind> {
        self.connection_error().map(ConnectionError::kind)
    }
}

fn endpoint_text(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or(""),
        uri.authority().map(|a| a.as_str()).unwrap_or(""),
        uri.path()
    )
}

impl fmt::Display for TokenRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "token request to {} failed: {}",
            self.endpoint, self.detail
        )
    }
}

impl std::error::Error for TokenRequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(source) => Some(source.as_ref()),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn error_codes_are_typed_and_unknown_ones_kept() {
        for (text, code) in [
            ("invalid_request", ErrorCode::InvalidRequest),
            ("invalid_client", ErrorCode::InvalidClient),
            ("invalid_grant", ErrorCode::InvalidGrant),
            ("unauthorized_client", ErrorCode::UnauthorizedClient),
            ("unsupported_grant_type", ErrorCode::UnsupportedGrantType),
            ("invalid_scope", ErrorCode::InvalidScope),
            ("invalid_target", ErrorCode::InvalidTarget),
            ("slow_down", ErrorCode::Other),
        ] {
            let body = format!(r#"{{"error":"{text}","error_description":"why"}}"#);
            let parsed = ErrorResponse::parse(StatusCode::BAD_REQUEST, body.as_bytes()).unwrap();
            assert_eq!(parsed.code(), code, "{text}");
            assert_eq!(parsed.code_str(), text);
            assert_eq!(parsed.description(), Some("why"));
        }
    }

    #[test]
    fn not_an_error_body() {
        for body in [&b"<html>"[..], b"{}", br#"{"error":""}"#, br#"{"error":5}"#] {
            assert!(ErrorResponse::parse(StatusCode::BAD_REQUEST, body).is_none());
        }
    }

    #[test]
    fn server_text_is_bounded_and_printable() {
        let long = "x".repeat(5000);
        let body = format!(r#"{{"error":"a\u001bb","error_description":"{long}"}}"#);
        let parsed = ErrorResponse::parse(StatusCode::BAD_REQUEST, body.as_bytes()).unwrap();
        assert_eq!(parsed.code_str(), "ab");
        assert_eq!(parsed.description().unwrap().len(), MAX_TEXT);
    }
}
