//! The token validator: built once from a checked configuration, then used per request.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::crypto::CryptoProvider;
use rustls::time_provider::{DefaultTimeProvider, TimeProvider};
use serde_json::{Map, Value};
use spiffe::SpiffeId;

use crate::PeerIdentity;
use crate::jwt::cache::TokenCache;
use crate::jwt::source::{BoxFuture, KeyLookup, KeySource};
use crate::jwt::{JwtConfigError, TokenError, TokenErrorKind, VerifiedClaims};

/// The default algorithm allow-list.
pub const DEFAULT_ALGORITHMS: [Algorithm; 5] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::RS256,
    Algorithm::PS256,
];

/// The default clock skew allowed on `exp`, `nbf` and `iat`: 5 seconds.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
/// The default maximum token lifetime (`exp` minus `iat`, or `nbf`): 24 hours.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The default maximum token size: 8 KiB.
pub const DEFAULT_MAX_TOKEN_SIZE: usize = 8 * 1024;
/// The default capacity of the validated-token cache.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Which kind of token a validator accepts; decides the claim rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// OAuth access tokens (RFC 9068) and other issuer-signed JWTs: an issuer is required.
    AccessToken,
    /// SPIFFE JWT-SVIDs: `sub` is a SPIFFE ID (selecting the trust domain's bundle), `aud` is
    /// present; `typ`, when present, is `JWT` or `JOSE`.
    JwtSvid,
}

/// Builds a [`JwtValidator`]; start with [`JwtValidator::access_tokens`] or
/// [`JwtValidator::jwt_svids`]. Everything is checked in [`build`](Self::build).
#[must_use]
pub struct JwtValidatorBuilder {
    profile: Profile,
    audiences: Vec<String>,
    issuers: Vec<String>,
    any_issuer: bool,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    max_lifetime: Duration,
    required_claims: Vec<String>,
    max_token_size: usize,
    token_types: Option<Vec<String>>,
    keys: Option<KeySource>,
    require_binding: bool,
    subject_is_peer: bool,
    clock: Arc<dyn TimeProvider>,
    cache_capacity: usize,
    provider: Option<&'static CryptoProvider>,
}

impl fmt::Debug for JwtValidatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtValidatorBuilder")
            .field("profile", &self.profile)
            .field("audiences", &self.audiences)
            .field("issuers", &self.issuers)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtValidatorBuilder {
    fn new(profile: Profile, audience: String) -> Self {
        Self {
            profile,
            audiences: vec![audience],
            issuers: Vec::new(),
            any_issuer: false,
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            leeway: DEFAULT_LEEWAY,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            required_claims: Vec::new(),
            max_token_size: DEFAULT_MAX_TOKEN_SIZE,
            token_types: None,
            keys: None,
            require_binding: false,
            subject_is_peer: false,
            clock: Arc::new(DefaultTimeProvider),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            provider: None,
        }
    }

    /// Where the verification keys come from (required).
    pub fn key_source(mut self, keys: KeySource) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Accepts tokens from `issuer` (exact match of `iss`). Required for access tokens, at
    /// least once; for JWT-SVIDs, `iss` is checked only when an issuer is given.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Accepts access tokens whatever their `iss` claim says, instead of requiring
    /// [`issuer`](Self::issuer). Only for a key source that holds the keys of one issuer (such
    /// as that issuer's JWKS file): there, the signature already says who issued the token.
    pub fn any_issuer(mut self) -> Self {
        self.any_issuer = true;
        self
    }

    /// Accepts tokens for `audience` too (a token's `aud`, a string or a list, must contain
    /// one of the audiences).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Replaces the algorithm allow-list (default ES256, ES384, EdDSA, RS256, PS256). HMAC
    /// algorithms are refused at build: keys here are public, and a shared secret could not be
    /// told apart from a public key used as one.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Clock skew allowed on `exp`, `nbf` and `iat` (default 5 s, at most 5 minutes).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The longest lifetime a token may have: `exp` minus `iat` (or `nbf`, or now when the
    /// token has neither). Default 24 hours.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// Requires claim `name` to be present (and not `null`). `exp` is always required.
    pub fn require_claim(mut self, name: impl Into<String>) -> Self {
        self.required_claims.push(name.into());
        self
    }

    /// The largest token accepted, in bytes (default 8 KiB; 256 B to 64 KiB). Checked before
    /// anything of the token is decoded.
    pub fn max_token_size(mut self, bytes: usize) -> Self {
        self.max_token_size = bytes;
        self
    }

    /// Requires the header's `typ` to be `token_type` (compared case-insensitively, an
    /// `application/` prefix ignored), e.g. `at+jwt` for RFC 9068 access tokens. Call again to
    /// accept several types. Without it `typ` is not checked, except that JWT-SVIDs carrying a
    /// `typ` must say `JWT` or `JOSE`.
    pub fn require_type(mut self, token_type: impl Into<String>) -> Self {
        self.token_types
            .get_or_insert_with(Vec::new)
            .push(normalize_type(&token_type.into()));
        self
    }

    /// Requires every token to be certificate-bound (RFC 8705 `cnf.x5t#S256`). A token that
    /// carries `cnf` must match the connection's certificate whether or not this is called.
    pub fn require_certificate_binding(mut self) -> Self {
        self.require_binding = true;
        self
    }

    /// Requires the token's `sub` to be the SPIFFE ID the caller proved on this connection
    /// (for JWT-SVIDs: the workload presenting the token is the one it was issued to).
    pub fn require_subject_matches_peer(mut self) -> Self {
        self.subject_is_peer = true;
        self
    }

    /// The clock for `exp`, `nbf` and `iat` (default: the system clock). A clock that cannot
    /// be read refuses every token.
    pub fn time_provider(mut self, clock: Arc<dyn TimeProvider>) -> Self {
        self.clock = clock;
        self
    }

    /// How many validated tokens are remembered (default 10 000; 0 turns the cache off).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The jsonwebtoken crypto backend for signature checks. By default aws-lc-rs when the
    /// `aws-lc-rs` feature is on, else RustCrypto when `ring` is on; never the process-wide
    /// default (which panics when both backends are compiled in).
    pub fn crypto_provider(mut self, provider: &'static CryptoProvider) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Checks the configuration and builds the validator.
    pub fn build(self) -> Result<JwtValidator, JwtConfigError> {
        let keys = self.keys.ok_or(JwtConfigError::MissingKeySource)?;
        let audiences: Vec<String> = self
            .audiences
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            return Err(JwtConfigError::MissingAudience);
        }
        let issuers: Vec<String> = self.issuers.into_iter().filter(|i| !i.is_empty()).collect();
        if self.profile == Profile::AccessToken && issuers.is_empty() && !self.any_issuer {
            return Err(JwtConfigError::MissingIssuer);
        }
        if self.algorithms.is_empty() {
            return Err(JwtConfigError::NoAlgorithms);
        }
        for alg in &self.algorithms {
            if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(JwtConfigError::UnsupportedAlgorithm {
                    algorithm: format!("{alg:?}"),
                });
            }
        }
        if self.leeway > MAX_LEEWAY {
            return Err(JwtConfigError::InvalidSetting {
                field: "leeway",
                problem: format!("{:?} is more than the {MAX_LEEWAY:?} allowed", self.leeway),
            });
        }
        if self.max_lifetime.is_zero() {
            return Err(JwtConfigError::InvalidSetting {
                field: "max_lifetime",
                problem: "must be above zero".into(),
            });
        }
        if !(256..=64 * 1024).contains(&self.max_token_size) {
            return Err(JwtConfigError::InvalidSetting {
                field: "max_token_size",
                problem: format!("{} bytes is outside 256 to 65536", self.max_token_size),
            });
        }
        let provider = match self.provider {
            Some(provider) => provider,
            None => {
                crate::crypto::default_jwt_provider().ok_or(JwtConfigError::NoCryptoProvider)?
            }
        };
        Ok(JwtValidator {
            inner: Arc::new(Inner {
                profile: self.profile,
                audiences,
                issuers,
                algorithms: self.algorithms,
                leeway: self.leeway.as_secs_f64(),
                max_lifetime: self.max_lifetime.as_secs_f64(),
                required_claims: self.required_claims,
                max_token_size: self.max_token_size,
                token_types: self.token_types,
                keys,
                require_binding: self.require_binding,
                subject_is_peer: self.subject_is_peer,
                clock: self.clock,
                cache: (self.cache_capacity > 0).then(|| TokenCache::new(self.cache_capacity)),
                provider,
            }),
        })
    }
}

fn normalize_type(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

/// Validates bearer tokens against a checked configuration and the caller's connection.
///
/// Cheap to clone (an `Arc`). Per token, in this order: size (before any decoding); three
/// base64url parts holding JSON objects; header: `alg` not `none` and in the allow-list, no
/// `crit`, `typ` when configured, a `kid`; the key by `kid` (a key source that can refresh is
/// asked once, single-flight and rate-limited); the key's own `alg` and type fit the header's;
/// the signature; then the claims: `exp` (required), `nbf`, `iat`, lifetime, `iss`, `aud`,
/// required claims, the JWT-SVID `sub`, and the certificate binding.
///
/// # Security
///
/// - Keys never come from the token (`jwk`, `jku`, `x5u`, `x5c` headers are ignored).
/// - `cnf.x5t#S256` is compared with the thumbprint of the leaf certificate of *this*
///   connection, from the [`PeerIdentity`]; a token with `cnf` must match even when binding is
///   not required, and a `cnf` without `x5t#S256` is refused (the binding cannot be checked).
/// - A validated token is remembered by (SHA-256 of the token, certificate thumbprint) until
///   its `exp`, or until the key source changes; reusing it costs a hash and a lookup.
#[derive(Clone)]
pub struct JwtValidator {
    inner: Arc<Inner>,
}

struct Inner {
    profile: Profile,
    audiences: Vec<String>,
    issuers: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: f64,
    max_lifetime: f64,
    required_claims: Vec<String>,
    max_token_size: usize,
    token_types: Option<Vec<String>>,
    keys: KeySource,
    require_binding: bool,
    subject_is_peer: bool,
    clock: Arc<dyn TimeProvider>,
    cache: Option<TokenCache>,
    provider: &'static CryptoProvider,
}

impl fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("JwtValidator")
            .field("profile", &inner.profile)
            .field("audiences", &inner.audiences)
            .field("issuers", &inner.issuers)
            .field("algorithms", &inner.algorithms)
            .field("leeway_secs", &inner.leeway)
            .field("require_binding", &inner.require_binding)
            .field("keys", &inner.keys)
            .finish_non_exhaustive()
    }
}

/// The outcome of one synchronous attempt.
pub(crate) enum Attempt {
    Done(TokenResult<VerifiedClaims>),
    /// The `kid` is unknown and the key source can refresh: refresh, then try once more.
    Refresh(BoxFuture<'static, ()>),
}

type TokenResult<T> = std::result::Result<T, TokenError>;

fn fail<T>(kind: TokenErrorKind) -> TokenResult<T> {
    Err(TokenError::new(kind))
}

impl JwtValidator {
    /// A validator for access tokens (OAuth 2.0 JWT access tokens, RFC 9068, or any
    /// issuer-signed JWT) for `audience`. Requires [`issuer`](JwtValidatorBuilder::issuer) and
    /// [`key_source`](JwtValidatorBuilder::key_source).
    pub fn access_tokens(audience: impl Into<String>) -> JwtValidatorBuilder {
        JwtValidatorBuilder::new(Profile::AccessToken, audience.into())
    }

    /// A validator for SPIFFE JWT-SVIDs for `audience`: `sub` must be a SPIFFE ID and selects
    /// the trust domain's bundle (use [`KeySource::jwt_bundles`]); `aud` must be present; a
    /// `typ`, when present, must be `JWT` or `JOSE`.
    pub fn jwt_svids(audience: impl Into<String>) -> JwtValidatorBuilder {
        JwtValidatorBuilder::new(Profile::JwtSvid, audience.into())
    }

    /// The key source.
    pub fn key_source(&self) -> &KeySource {
        &self.inner.keys
    }

    /// The largest token accepted, in bytes.
    pub fn max_token_size(&self) -> usize {
        self.inner.max_token_size
    }

    /// Validates `token` presented by `peer` on its connection.
    ///
    /// Completes without waiting unless the token names an unknown `kid` and the key source
    /// can refresh; then it waits for that (shared, rate-limited) refresh and tries once more.
    pub async fn validate(&self, token: &str, peer: &PeerIdentity) -> TokenResult<VerifiedClaims> {
        let token = token.as_bytes();
        match self.attempt(token, peer) {
            Attempt::Done(result) => result,
            Attempt::Refresh(refresh) => {
                refresh.await;
                self.attempt_once(token, peer)
            }
        }
    }

    /// One attempt; asks for a refresh when the `kid` is unknown and the source can refresh.
    ///
    /// `token` is the bytes as presented (an `Authorization` header's): a cached token is
    /// recognized by comparing them, and any other must be UTF-8 to be decoded.
    pub(crate) fn attempt(&self, token: &[u8], peer: &PeerIdentity) -> Attempt {
        match self.check(token, peer) {
            Err(error) if error.kind() == TokenErrorKind::UnknownKey => {
                match self.inner.keys.refresh_for_unknown_kid() {
                    Some(refresh) => Attempt::Refresh(refresh),
                    None => Attempt::Done(Err(error)),
                }
            }
            other => Attempt::Done(other),
        }
    }

    /// One attempt without refreshing.
    pub(crate) fn attempt_once(
        &self,
        token: &[u8],
        peer: &PeerIdentity,
    ) -> TokenResult<VerifiedClaims> {
        self.check(token, peer)
    }

    fn now(&self) -> TokenResult<f64> {
        match self.inner.clock.current_time() {
            Some(now) => Ok(now.as_secs() as f64),
            None => fail(TokenErrorKind::ClockUnavailable),
        }
    }

    fn check(&self, token: &[u8], peer: &PeerIdentity) -> TokenResult<VerifiedClaims> {
        let inner = &*self.inner;
        if token.is_empty() {
            return fail(TokenErrorKind::Missing);
        }
        if token.len() > inner.max_token_size {
            return fail(TokenErrorKind::TooLarge);
        }
        let now = self.now()?;
        let cache_entry = inner.cache.as_ref().map(|cache| {
            let key = cache.key(token, peer.thumbprint_sha256());
            (cache, key)
        });
        let revision = inner.keys.revision();
        if let Some((cache, key)) = &cache_entry
            && let Some(claims) = cache.get(key, now, revision)
        {
            return Ok(claims);
        }

        let Ok(token) = std::str::from_utf8(token) else {
            return fail(TokenErrorKind::Malformed);
        };
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return fail(TokenErrorKind::Malformed);
        };
        let header = decode_object(header_b64)?;
        let claims = decode_object(payload_b64)?;

        let (alg, kid) = self.check_header(&header)?;

        // Key. For JWT-SVIDs the (not yet verified) subject names the trust domain whose
        // bundle holds the key; a forged subject only selects a bundle whose key must verify.
        let subject_id = match inner.profile {
            Profile::JwtSvid => Some(spiffe_subject(&claims)?),
            Profile::AccessToken => None,
        };
        let lookup = KeyLookup {
            kid,
            trust_domain: subject_id.as_ref().map(SpiffeId::trust_domain),
        };
        let Some(key) = inner.keys.find(&lookup) else {
            return fail(TokenErrorKind::UnknownKey);
        };
        if !key.accepts(alg) {
            return fail(TokenErrorKind::KeyAlgorithmMismatch);
        }

        // Signature, over the encoded header and payload as received.
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| TokenError::new(TokenErrorKind::Malformed))?;
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let message = &token.as_bytes()[..signed_len];
        let verifier = (inner.provider.verifier_factory)(&alg, key.decoding_key())
            .map_err(|_| TokenError::new(TokenErrorKind::KeyAlgorithmMismatch))?;
        if verifier.verify(message, &signature).is_err() {
            return fail(TokenErrorKind::InvalidSignature);
        }

        // Claims.
        let deadline = self.check_claims(&claims, now, peer, subject_id.as_ref())?;
        let verified = VerifiedClaims::new(claims);
        if let Some((cache, key)) = cache_entry {
            cache.insert(&key, verified.clone(), deadline, revision);
        }
        Ok(verified)
    }

    /// The header: no `crit`, `alg` not `none` and allowed, `typ` as configured, a `kid`;
    /// returns the algorithm and the `kid`.
    fn check_header<'h>(
        &self,
        header: &'h Map<String, Value>,
    ) -> TokenResult<(Algorithm, &'h str)> {
        if header.contains_key("crit") {
            return fail(TokenErrorKind::CriticalHeader);
        }
        let Some(alg_name) = header.get("alg").and_then(Value::as_str) else {
            return fail(TokenErrorKind::Malformed);
        };
        if alg_name.eq_ignore_ascii_case("none") {
            return fail(TokenErrorKind::AlgorithmNone);
        }
        let alg = match Algorithm::from_str(alg_name) {
            Ok(alg) if self.inner.algorithms.contains(&alg) => alg,
            _ => return fail(TokenErrorKind::DisallowedAlgorithm),
        };
        self.check_type(header)?;
        let kid = match header.get("kid") {
            Some(Value::String(kid)) if !kid.is_empty() => kid.as_str(),
            _ => return fail(TokenErrorKind::MissingKeyId),
        };
        Ok((alg, kid))
    }

    fn check_type(&self, header: &Map<String, Value>) -> TokenResult<()> {
        let typ = match header.get("typ") {
            None => None,
            Some(Value::String(typ)) => Some(normalize_type(typ)),
            Some(_) => return fail(TokenErrorKind::WrongType),
        };
        if let Some(expected) = &self.inner.token_types {
            return match typ {
                Some(typ) if expected.contains(&typ) => Ok(()),
                _ => fail(TokenErrorKind::WrongType),
            };
        }
        if self.inner.profile == Profile::JwtSvid
            && let Some(typ) = typ
            && typ != "jwt"
            && typ != "jose"
        {
            return fail(TokenErrorKind::WrongType);
        }
        Ok(())
    }

    /// Checks the claims of a token whose signature verified; returns the Unix time until
    /// which it may be cached (`exp` plus leeway).
    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: f64,
        peer: &PeerIdentity,
        subject_id: Option<&SpiffeId>,
    ) -> TokenResult<f64> {
        let exp = self.check_times(claims, now)?;
        self.check_issuer(claims)?;
        self.check_audience(claims)?;
        check_subject_type(claims)?;
        self.check_required_claims(claims)?;
        self.check_subject_is_peer(claims, peer, subject_id)?;
        check_binding(claims, peer, self.inner.require_binding)?;
        Ok(exp + self.inner.leeway)
    }

    /// `exp` (required), `nbf` and `iat` against `now` with the leeway, and the lifetime from
    /// `iat` (or `nbf`, or now) to `exp`; returns `exp`.
    fn check_times(&self, claims: &Map<String, Value>, now: f64) -> TokenResult<f64> {
        let leeway = self.inner.leeway;
        let exp = match claims.get("exp") {
            Some(value) => numeric_date(value)?,
            None => {
                return Err(TokenError::with_description(
                    TokenErrorKind::InvalidClaim,
                    "token has no exp claim",
                ));
            }
        };
        if now >= exp + leeway {
            return fail(TokenErrorKind::Expired);
        }
        let nbf = claims.get("nbf").map(numeric_date).transpose()?;
        if let Some(nbf) = nbf
            && nbf > now + leeway
        {
            return fail(TokenErrorKind::NotYetValid);
        }
        let iat = claims.get("iat").map(numeric_date).transpose()?;
        if let Some(iat) = iat
            && iat > now + leeway
        {
            return fail(TokenErrorKind::IssuedInFuture);
        }
        let start = iat.or(nbf).unwrap_or(now);
        if exp - start > self.inner.max_lifetime {
            return fail(TokenErrorKind::LifetimeTooLong);
        }
        Ok(exp)
    }

    /// `iss`: a string, one of ours when issuers are configured (then also required).
    fn check_issuer(&self, claims: &Map<String, Value>) -> TokenResult<()> {
        let issuers = &self.inner.issuers;
        match claims.get("iss") {
            Some(Value::String(iss)) => {
                if !issuers.is_empty() && !issuers.contains(iss) {
                    return fail(TokenErrorKind::WrongIssuer);
                }
            }
            Some(_) => return fail(TokenErrorKind::WrongIssuer),
            None => {
                if !issuers.is_empty() {
                    return fail(TokenErrorKind::WrongIssuer);
                }
            }
        }
        Ok(())
    }

    /// `aud`: a string, or a non-empty list of strings, containing one of ours.
    fn check_audience(&self, claims: &Map<String, Value>) -> TokenResult<()> {
        let audiences = &self.inner.audiences;
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => audiences.contains(aud),
            Some(Value::Array(list)) => {
                !list.is_empty()
                    && list.iter().all(Value::is_string)
                    && list
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|a| audiences.iter().any(|ours| ours == a))
            }
            _ => false,
        };
        if !audience_ok {
            return fail(TokenErrorKind::WrongAudience);
        }
        Ok(())
    }

    /// Every configured required claim is present and not `null`.
    fn check_required_claims(&self, claims: &Map<String, Value>) -> TokenResult<()> {
        for name in &self.inner.required_claims {
            if claims.get(name).is_none_or(Value::is_null) {
                return Err(TokenError::with_description(
                    TokenErrorKind::InvalidClaim,
                    format!("token has no {name} claim"),
                ));
            }
        }
        Ok(())
    }

    /// When configured, `sub` is the SPIFFE ID the caller proved on this connection.
    fn check_subject_is_peer(
        &self,
        claims: &Map<String, Value>,
        peer: &PeerIdentity,
        subject_id: Option<&SpiffeId>,
    ) -> TokenResult<()> {
        if !self.inner.subject_is_peer {
            return Ok(());
        }
        let subject = match subject_id {
            Some(id) => id.clone(),
            None => spiffe_subject(claims)?,
        };
        if &subject != peer.spiffe_id() {
            return fail(TokenErrorKind::SubjectMismatch);
        }
        Ok(())
    }
}

/// `sub`, when present, is a string.
fn check_subject_type(claims: &Map<String, Value>) -> TokenResult<()> {
    if let Some(sub) = claims.get("sub")
        && !sub.is_string()
    {
        return fail(TokenErrorKind::InvalidSubject);
    }
    Ok(())
}

/// RFC 8705 section 3.1: `cnf.x5t#S256` is the base64url (unpadded) SHA-256 of the DER of the
/// client certificate.
fn check_binding(
    claims: &Map<String, Value>,
    peer: &PeerIdentity,
    required: bool,
) -> TokenResult<()> {
    let Some(cnf) = claims.get("cnf") else {
        return if required {
            fail(TokenErrorKind::BindingRequired)
        } else {
            Ok(())
        };
    };
    let Some(cnf) = cnf.as_object() else {
        return fail(TokenErrorKind::UnsupportedBinding);
    };
    let Some(thumbprint) = cnf.get("x5t#S256") else {
        return fail(TokenErrorKind::UnsupportedBinding);
    };
    let Some(thumbprint) = thumbprint.as_str() else {
        return fail(TokenErrorKind::BindingMismatch);
    };
    let ours = URL_SAFE_NO_PAD.encode(peer.thumbprint_sha256());
    if thumbprint.as_bytes() != ours.as_bytes() {
        return fail(TokenErrorKind::BindingMismatch);
    }
    Ok(())
}

/// The `sub` claim as a canonical SPIFFE ID.
fn spiffe_subject(claims: &Map<String, Value>) -> TokenResult<SpiffeId> {
    let Some(sub) = claims.get("sub").and_then(Value::as_str) else {
        return fail(TokenErrorKind::InvalidSubject);
    };
    match SpiffeId::new(sub) {
        Ok(id) if id.to_string() == sub => Ok(id),
        _ => fail(TokenErrorKind::InvalidSubject),
    }
}

/// A JSON NumericDate (seconds since the epoch; fractions allowed).
fn numeric_date(value: &Value) -> TokenResult<f64> {
    match value.as_f64() {
        Some(secs) if secs.is_finite() => Ok(secs),
        _ => Err(TokenError::with_description(
            TokenErrorKind::InvalidClaim,
            "token time claim is not a number",
        )),
    }
}

/// One base64url (unpadded) part holding a JSON object.
fn decode_object(part: &str) -> TokenResult<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::new(TokenErrorKind::Malformed))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => fail(TokenErrorKind::Malformed),
    }
}
