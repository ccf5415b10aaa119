//! The HTTP side shared by discovery and the token requests: one hyper client over the
//! caller's connector, every exchange bounded in time and size.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connect;
use hyper_util::rt::TokioExecutor;

use super::error::{ErrorResponse, OAuthConfigError, TokenRequestError, TokenRequestErrorKind};
use crate::Location;

/// Default bound on one request, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default bound on an answer's body (a token response or metadata document).
pub const DEFAULT_MAX_RESPONSE_SIZE: usize = 64 * 1024;

/// A hyper client over the caller's connector, with the bounds of one exchange.
#[derive(Clone)]
pub(crate) struct HttpClient<C> {
    client: Client<C, Full<Bytes>>,
    pub(crate) timeout: Duration,
    pub(crate) max_response_size: usize,
}

impl<C> fmt::Debug for HttpClient<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .field("max_response_size", &self.max_response_size)
            .finish_non_exhaustive()
    }
}

/// A 200 answer's body.
pub(crate) struct Answer {
    pub(crate) body: Bytes,
}

impl<C> HttpClient<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    pub(crate) fn new(connector: C, timeout: Duration, max_response_size: usize) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
            max_response_size,
        }
    }

    /// POSTs `form` (already `application/x-www-form-urlencoded`) to `uri`.
    pub(crate) async fn post_form(
        &self,
        uri: &Uri,
        form: String,
    ) -> Result<Answer, TokenRequestError> {
        let request = Request::post(uri.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)));
        self.send(uri, request).await
    }

    /// GETs a JSON document at `uri`.
    pub(crate) async fn get_json(&self, uri: &Uri) -> Result<Answer, TokenRequestError> {
        let request = Request::get(uri.clone())
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()));
        self.send(uri, request).await
    }

    async fn send(
        &self,
        uri: &Uri,
        request: Result<Request<Full<Bytes>>, http::Error>,
    ) -> Result<Answer, TokenRequestError> {
        let request = request.map_err(|e| {
            TokenRequestError::new(TokenRequestErrorKind::Transport, uri, "invalid request")
                .with_source(e)
        })?;
        match tokio::time::timeout(self.timeout, self.exchange(uri, request)).await {
            Ok(answer) => answer,
            Err(_) => Err(TokenRequestError::new(
                TokenRequestErrorKind::Timeout,
                uri,
                format!("no complete answer within {:?}", self.timeout),
            )),
        }
    }

    async fn exchange(
        &self,
        uri: &Uri,
        request: Request<Full<Bytes>>,
    ) -> Result<Answer, TokenRequestError> {
        let response = self.client.request(request).await.map_err(|e| {
            let kind = if e.is_connect() {
                TokenRequestErrorKind::Connect
            } else {
                TokenRequestErrorKind::Transport
            };
            let detail = if e.is_connect() {
                "could not connect"
            } else {
                "the request failed"
            };
            TokenRequestError::new(kind, uri, detail).with_source(e)
        })?;
        let status = response.status();
        let too_large = || {
            TokenRequestError::new(
                TokenRequestErrorKind::ResponseTooLarge,
                uri,
                format!(
                    "the answer is larger than the {} bytes accepted",
                    self.max_response_size
                ),
            )
        };
        if let Some(length) = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && length > self.max_response_size as u64
        {
            return Err(too_large());
        }
        let body = Limited::new(response.into_body(), self.max_response_size)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    too_large()
                } else {
                    TokenRequestError::new(
                        TokenRequestErrorKind::Transport,
                        uri,
                        "reading the answer failed",
                    )
                    .with_source(e)
                }
            })?
            .to_bytes();
        if status == StatusCode::OK {
            return Ok(Answer { body });
        }
        match ErrorResponse::parse(status, &body) {
            Some(response) => Err(TokenRequestError::from_response(uri, response)),
            None => Err(TokenRequestError::new(
                TokenRequestErrorKind::UnexpectedStatus,
                uri,
                format!("answered {status}"),
            )),
        }
    }
}

/// `text` as an endpoint URI: absolute, `https`, with a host, without a fragment.
pub(crate) fn https_uri(text: &str, location: Location) -> Result<Uri, OAuthConfigError> {
    let invalid = |problem: &str| OAuthConfigError::InvalidEndpoint {
        location: location.clone(),
        uri: text.to_owned(),
        problem: problem.to_owned(),
    };
    if text.contains('#') {
        return Err(invalid("it has a fragment"));
    }
    let uri: Uri = text.parse().map_err(|_| invalid("not a URI"))?;
    if uri.scheme_str() != Some("https") {
        return Err(invalid("the scheme is not https"));
    }
    match uri.host() {
        Some(host) if !host.is_empty() => {}
        _ => return Err(invalid("it has no host")),
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid("it has user information"));
    }
    Ok(uri)
}

/// Checks a duration setting: above zero.
pub(crate) fn positive(field: &'static str, value: Duration) -> Result<(), OAuthConfigError> {
    if value.is_zero() {
        return Err(OAuthConfigError::InvalidSetting {
            field,
            problem: "must be above zero".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_absolute_https() {
        let check = |text: &str| https_uri(text, Location::Field("token_endpoint")).is_ok();
        assert!(check("https://as.example.org/token"));
        assert!(check("https://127.0.0.1:8443/realms/x/token"));
        for bad in [
            "http://as.example.org/token",
            "/token",
            "as.example.org/token",
            "https://as.example.org/token#frag",
            "https://user@as.example.org/token",
            "ftp://as.example.org",
            "",
        ] {
            assert!(!check(bad), "{bad}");
        }
    }
}
