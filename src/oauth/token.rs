//! One token request at the token endpoint (RFC 6749 section 4.4 and RFC 8693 share it): the
//! form, RFC 8705 client authentication, the answer parsed, the certificate binding checked.

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Uri;
use hyper_util::client::legacy::connect::Connect;
use sha2::{Digest, Sha256};

use super::error::{OAuthConfigError, TokenRequestError, TokenRequestErrorKind};
use super::http::HttpClient;
use crate::jwt::{BearerToken, unverified_claims};
use crate::source::CredentialSource;

/// How the client authenticates to the token endpoint (RFC 8705 section 2): always by the
/// certificate of the mutual TLS connection, never by a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `tls_client_auth` (RFC 8705 section 2.1): the server validates the certificate chain
    /// (PKI) and matches the certificate against the client's registration (subject DN, or a
    /// SAN such as the SPIFFE ID in `tls_client_auth_san_uri`).
    TlsClientAuth,
    /// `self_signed_tls_client_auth` (RFC 8705 section 2.2): the server matches the certificate
    /// against the ones registered for the client (its JWK set), without a chain.
    SelfSignedTlsClientAuth,
}

impl ClientAuth {
    /// The method's name in `token_endpoint_auth_method` and in metadata.
    pub fn method(self) -> &'static str {
        match self {
            Self::TlsClientAuth => "tls_client_auth",
            Self::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }
}

/// The token endpoint as one client (`client_id`, certificate authentication) uses it.
pub(crate) struct TokenEndpoint<C> {
    pub(crate) http: HttpClient<C>,
    pub(crate) uri: Uri,
    pub(crate) client_id: String,
    /// When set, issued tokens must be bound to the certificate of this source's SVID.
    pub(crate) binding: Option<CredentialSource>,
}

impl<C> fmt::Debug for TokenEndpoint<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("uri", &self.uri)
            .field("client_id", &self.client_id)
            .field("require_binding", &self.binding.is_some())
            .field("http", &self.http)
            .finish()
    }
}

/// Checks a client ID: not empty, printable.
pub(crate) fn check_client_id(client_id: &str) -> Result<(), OAuthConfigError> {
    if client_id.is_empty() || client_id.chars().any(char::is_control) {
        return Err(OAuthConfigError::InvalidSetting {
            field: "client_id",
            problem: "must be non-empty and printable".into(),
        });
    }
    Ok(())
}

/// Checks a scope token (RFC 6749 section 3.3: `%x21 / %x23-5B / %x5D-7E`, at least one).
pub(crate) fn check_scope(scope: &str) -> Result<(), OAuthConfigError> {
    let valid = |b: u8| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b);
    if scope.is_empty() || !scope.bytes().all(valid) {
        return Err(OAuthConfigError::InvalidSetting {
            field: "scope",
            problem: format!("{scope:?} is not a scope token (RFC 6749 section 3.3)"),
        });
    }
    Ok(())
}

/// The parameters several grants share: `scope`, `audience`, `resource`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Targets {
    pub(crate) scopes: Vec<String>,
    pub(crate) audiences: Vec<String>,
    pub(crate) resources: Vec<String>,
}

impl Targets {
    pub(crate) fn check(&self) -> Result<(), OAuthConfigError> {
        self.scopes.iter().try_for_each(|s| check_scope(s))?;
        if self.audiences.iter().any(|a| a.is_empty()) {
            return Err(OAuthConfigError::InvalidSetting {
                field: "audience",
                problem: "must not be empty".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn append(&self, form: &mut form_urlencoded::Serializer<'_, String>) {
        if !self.scopes.is_empty() {
            form.append_pair("scope", &self.scopes.join(" "));
        }
        for audience in &self.audiences {
            form.append_pair("audience", audience);
        }
        for resource in &self.resources {
            form.append_pair("resource", resource);
        }
    }
}

/// A resource indicator (RFC 8707 section 2): an absolute URI (`scheme:...`) without a
/// fragment, whitespace or control characters.
pub(crate) fn resource_uri(text: &str) -> Result<String, OAuthConfigError> {
    let scheme_ok = text.split_once(':').is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if scheme_ok
        && !text.contains('#')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Ok(text.to_owned())
    } else {
        Err(OAuthConfigError::InvalidSetting {
            field: "resource",
            problem: format!("{text:?} is not an absolute URI without a fragment (RFC 8707)"),
        })
    }
}

/// What a successful answer must be to be used.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// RFC 6749 section 5.1.
    AccessToken,
    /// RFC 8693 section 2.2.1: `issued_token_type` is required too.
    Exchanged,
}

impl<C> TokenEndpoint<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// Sends one token request: `grant_type`, `client_id` (RFC 8705 authentication: the
    /// certificate is the connection's), then `fill`'s parameters.
    pub(crate) async fn request(
        &self,
        grant_type: &str,
        expect: Expect,
        fill: impl FnOnce(&mut form_urlencoded::Serializer<'_, String>),
    ) -> Result<BearerToken, TokenRequestError> {
        // The serializer is not `Send`: it must be gone before the first await.
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", grant_type);
            form.append_pair("client_id", &self.client_id);
            fill(&mut form);
            form.finish()
        };
        let before = self.binding.as_ref().and_then(current_thumbprint);
        let answer = self.http.post_form(&self.uri, body).await?;
        let (token, access_token) = parse_answer(&self.uri, &answer.body, expect)?;
        if let Some(source) = &self.binding {
            let after = current_thumbprint(source);
            check_binding(&self.uri, &access_token, [before, after])?;
        }
        Ok(token)
    }
}

/// The SHA-256 thumbprint (base64url) of the source's current SVID leaf.
fn current_thumbprint(source: &CredentialSource) -> Option<String> {
    let snapshot = source.snapshot();
    let leaf = snapshot.credentials.svid().chain().first()?;
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(leaf.as_ref())))
}

/// RFC 8705 section 3.1: the token's `cnf.x5t#S256` must be the thumbprint of the certificate
/// this workload presented (the SVID current when the request was sent, or when the answer
/// came: a rotation in between is not a mismatch).
fn check_binding(
    uri: &Uri,
    access_token: &str,
    presented: [Option<String>; 2],
) -> Result<(), TokenRequestError> {
    let not_bound = |detail: &str| {
        TokenRequestError::new(TokenRequestErrorKind::NotBound, uri, detail.to_owned())
    };
    let claims = unverified_claims(access_token)
        .ok_or_else(|| not_bound("the token is not a JWT, so its binding cannot be checked"))?;
    let bound = claims
        .get("cnf")
        .and_then(|cnf| cnf.get("x5t#S256"))
        .and_then(|v| v.as_str())
        .ok_or_else(|| not_bound("the token has no cnf.x5t#S256: it is not certificate-bound"))?;
    if presented.iter().flatten().any(|p| p == bound) {
        Ok(())
    } else {
        Err(not_bound(
            "the token is bound to another certificate than the one this workload presented",
        ))
    }
}

/// The longest `expires_in` believed (a year); a larger one is treated as unknown.
const MAX_EXPIRES_IN: u64 = 365 * 24 * 3600;

/// Parses a 200 answer: the token, and the access token's text (for the binding check).
fn parse_answer(
    uri: &Uri,
    body: &[u8],
    expect: Expect,
) -> Result<(BearerToken, String), TokenRequestError> {
    let invalid = |detail: String| {
        TokenRequestError::new(TokenRequestErrorKind::InvalidResponse, uri, detail)
    };
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the answer is not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("the answer is not a JSON object".into()))?;
    let access_token = match object.get("access_token") {
        Some(serde_json::Value::String(token)) if !token.is_empty() => token.clone(),
        Some(_) => return Err(invalid("access_token is not a non-empty string".into())),
        None => return Err(invalid("the answer has no access_token".into())),
    };
    match object.get("token_type").and_then(|v| v.as_str()) {
        Some(kind) if kind.eq_ignore_ascii_case("bearer") => {}
        Some(kind) => {
            return Err(invalid(format!(
                "token_type {:?} is not Bearer",
                kind.chars().take(32).collect::<String>()
            )));
        }
        None => return Err(invalid("the answer has no token_type".into())),
    }
    let issued_token_type = object.get("issued_token_type").and_then(|v| v.as_str());
    if let Expect::Exchanged = expect
        && issued_token_type.is_none_or(str::is_empty)
    {
        return Err(invalid(
            "the answer has no issued_token_type (RFC 8693 section 2.2.1)".into(),
        ));
    }
    let expires_in = match object.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(seconds) => Some(seconds),
            None => {
                return Err(invalid(
                    "expires_in is not a non-negative whole number".into(),
                ));
            }
        },
    };
    let mut token = BearerToken::new(&access_token)
        .map_err(|e| invalid(format!("access_token cannot be sent: {e}")))?;
    if let Some(seconds) = expires_in.filter(|s| *s <= MAX_EXPIRES_IN) {
        let by_lifetime = SystemTime::now() + Duration::from_secs(seconds);
        let expiry = match token.expires_at() {
            Some(exp) => exp.min(by_lifetime),
            None => by_lifetime,
        };
        token = token.with_expiry(expiry);
    }
    Ok((token, access_token))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn uri() -> Uri {
        Uri::from_static("https://as.example.org/token")
    }

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "eyJhbGciOiJFUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    fn kind(body: &str, expect: Expect) -> TokenRequestErrorKind {
        parse_answer(&uri(), body.as_bytes(), expect)
            .unwrap_err()
            .kind()
    }

    #[test]
    fn a_token_answer() {
        let (token, text) = parse_answer(
            &uri(),
            br#"{"access_token":"abc","token_type":"bearer","expires_in":60}"#,
            Expect::AccessToken,
        )
        .unwrap();
        assert_eq!(text, "abc");
        let left = token
            .expires_at()
            .unwrap()
            .duration_since(SystemTime::now());
        assert!(left.unwrap() <= Duration::from_secs(60));
    }

    #[test]
    fn expiry_is_the_earlier_of_exp_and_expires_in() {
        let exp = SystemTime::now() + Duration::from_secs(30);
        let secs = exp
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let body = serde_json::json!({
            "access_token": jwt(serde_json::json!({"exp": secs})),
            "token_type": "Bearer",
            "expires_in": 3600,
        });
        let (token, _) =
            parse_answer(&uri(), body.to_string().as_bytes(), Expect::AccessToken).unwrap();
        assert_eq!(
            token.expires_at().unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
        );
    }

    #[test]
    fn invalid_answers() {
        use TokenRequestErrorKind::InvalidResponse as I;
        for body in [
            "not json",
            "[1]",
            r#"{"token_type":"Bearer"}"#,
            r#"{"access_token":"","token_type":"Bearer"}"#,
            r#"{"access_token":5,"token_type":"Bearer"}"#,
            r#"{"access_token":"abc"}"#,
            r#"{"access_token":"abc","token_type":"DPoP"}"#,
            r#"{"access_token":"abc","token_type":"Bearer","expires_in":-5}"#,
            r#"{"access_token":"abc","token_type":"Bearer","expires_in":"60"}"#,
            r#"{"access_token":"a\nb","token_type":"Bearer"}"#,
        ] {
            assert_eq!(kind(body, Expect::AccessToken), I, "{body}");
        }
        assert_eq!(
            kind(
                r#"{"access_token":"abc","token_type":"Bearer"}"#,
                Expect::Exchanged
            ),
            I
        );
    }

    #[test]
    fn binding() {
        let bound = jwt(serde_json::json!({"cnf": {"x5t#S256": "T1"}}));
        let unbound = jwt(serde_json::json!({"sub": "x"}));
        let ok = |t: &str, p: [Option<String>; 2]| check_binding(&uri(), t, p);
        assert!(ok(&bound, [Some("T1".into()), None]).is_ok());
        assert!(ok(&bound, [Some("T0".into()), Some("T1".into())]).is_ok());
        for (token, presented) in [
            (bound.as_str(), [Some("T2".to_owned()), None]),
            (bound.as_str(), [None, None]),
            (unbound.as_str(), [Some("T1".to_owned()), None]),
            ("opaque", [Some("T1".to_owned()), None]),
        ] {
            assert_eq!(
                ok(token, presented).unwrap_err().kind(),
                TokenRequestErrorKind::NotBound
            );
        }
    }

    #[test]
    fn scopes_and_resources() {
        assert!(check_scope("read:orders").is_ok());
        for bad in ["", "two words", "quote\"", "back\\slash", "é"] {
            assert!(check_scope(bad).is_err(), "{bad}");
        }
        assert!(resource_uri("https://api.example.org/orders").is_ok());
        assert!(resource_uri("urn:example:orders").is_ok());
        assert!(resource_uri("/relative").is_err());
        assert!(resource_uri("https://api.example.org/#f").is_err());
        assert!(check_client_id("").is_err());
    }
}
