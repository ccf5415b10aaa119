//! The two error families of the token room: configuration errors (at build time, naming the
//! field or file) and request-time token rejections (opaque, with a [`TokenErrorKind`]).

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

use crate::Location;

/// Why a token was refused. Stable names for metrics come from [`TokenErrorKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenErrorKind {
    /// The request carries no bearer token in its `Authorization` header.
    Missing,
    /// The token is larger than the configured maximum; nothing of it was decoded.
    TooLarge,
    /// The token is not a compact JWS of three base64url parts holding JSON objects.
    Malformed,
    /// The header says `alg: none`.
    AlgorithmNone,
    /// The header's algorithm is not in the allow-list (HMAC algorithms never are).
    DisallowedAlgorithm,
    /// The header carries `crit`: nothing here understands critical extensions.
    CriticalHeader,
    /// The header's `typ` is missing where required, or not one of the expected types.
    WrongType,
    /// The header carries no `kid`.
    MissingKeyId,
    /// No key with the token's `kid` is known (after a refresh, where the source can refresh).
    UnknownKey,
    /// The key with the token's `kid` is bound to another algorithm (its JWK `alg`), or its
    /// type does not fit the header's algorithm.
    KeyAlgorithmMismatch,
    /// The signature does not verify.
    InvalidSignature,
    /// The token has expired (`exp`, with the leeway).
    Expired,
    /// The token is not valid yet (`nbf`, with the leeway).
    NotYetValid,
    /// The token was issued in the future (`iat`, with the leeway).
    IssuedInFuture,
    /// The token lives longer than the configured maximum lifetime.
    LifetimeTooLong,
    /// A required claim is missing, or a registered claim has the wrong JSON type.
    InvalidClaim,
    /// The issuer (`iss`) is not an accepted one.
    WrongIssuer,
    /// The audience (`aud`) does not contain this service's audience.
    WrongAudience,
    /// A JWT-SVID's `sub` is not a valid SPIFFE ID.
    InvalidSubject,
    /// A JWT-SVID's `sub` is not the SPIFFE ID the caller proved on this connection.
    SubjectMismatch,
    /// The token is bound (`cnf.x5t#S256`) to another certificate than the one on this
    /// connection.
    BindingMismatch,
    /// Certificate binding is required and the token carries no `cnf`.
    BindingRequired,
    /// The token's `cnf` uses a confirmation method this service cannot check.
    UnsupportedBinding,
    /// The clock could not be read, so time claims cannot be checked.
    ClockUnavailable,
}

impl TokenErrorKind {
    /// A short, stable, snake_case name (for metrics labels and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::AlgorithmNone => "alg_none",
            Self::DisallowedAlgorithm => "disallowed_algorithm",
            Self::CriticalHeader => "critical_header",
            Self::WrongType => "wrong_type",
            Self::MissingKeyId => "missing_kid",
            Self::UnknownKey => "unknown_kid",
            Self::KeyAlgorithmMismatch => "key_algorithm_mismatch",
            Self::InvalidSignature => "invalid_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::InvalidClaim => "invalid_claim",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::InvalidSubject => "invalid_subject",
            Self::SubjectMismatch => "subject_mismatch",
            Self::BindingMismatch => "binding_mismatch",
            Self::BindingRequired => "binding_required",
            Self::UnsupportedBinding => "unsupported_binding",
            Self::ClockUnavailable => "clock_unavailable",
        }
    }

    fn default_description(self) -> &'static str {
        match self {
            Self::Missing => "bearer token missing",
            Self::TooLarge => "token too large",
            Self::Malformed => "token malformed",
            Self::AlgorithmNone => "unsigned tokens are not accepted",
            Self::DisallowedAlgorithm => "token algorithm not accepted",
            Self::CriticalHeader => "token has critical header parameters",
            Self::WrongType => "token type not accepted",
            Self::MissingKeyId => "token has no key id",
            Self::UnknownKey => "token signing key unknown",
            Self::KeyAlgorithmMismatch => "token algorithm does not match its key",
            Self::InvalidSignature => "token signature invalid",
            Self::Expired => "token expired",
            Self::NotYetValid => "token not valid yet",
            Self::IssuedInFuture => "token issued in the future",
            Self::LifetimeTooLong => "token lifetime too long",
            Self::InvalidClaim => "token claim missing or invalid",
            Self::WrongIssuer => "token issuer not accepted",
            Self::WrongAudience => "token audience not accepted",
            Self::InvalidSubject => "token subject is not a SPIFFE ID",
            Self::SubjectMismatch => "token subject is not the caller's identity",
            Self::BindingMismatch => "token bound to another certificate",
            Self::BindingRequired => "certificate-bound token required",
            Self::UnsupportedBinding => "token confirmation method not supported",
            Self::ClockUnavailable => "time unavailable",
        }
    }
}

impl fmt::Display for TokenErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token refused at request time.
///
/// Opaque on purpose: match on [`kind`](Self::kind). The [`description`](Self::description) is
/// safe to send to the caller (an RFC 6750 `error_description`): it never holds token content or
/// key material, only fixed text and, for a missing claim, the configured claim name.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenError {
    kind: TokenErrorKind,
    description: Cow<'static, str>,
}

impl TokenError {
    pub(crate) fn new(kind: TokenErrorKind) -> Self {
        Self {
            kind,
            description: Cow::Borrowed(kind.default_description()),
        }
    }

    pub(crate) fn with_description(
        kind: TokenErrorKind,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            kind,
            description: description.into(),
        }
    }

    /// Why the token was refused.
    pub fn kind(&self) -> TokenErrorKind {
        self.kind
    }

    /// A short description, safe to send to the caller.
    pub fn description(&self) -> &str {
        &self.description
    }
}

impl From<TokenErrorKind> for TokenError {
    fn from(kind: TokenErrorKind) -> Self {
        Self::new(kind)
    }
}

impl fmt::Debug for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenError")
            .field("kind", &self.kind)
            .field("description", &self.description)
            .finish()
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl std::error::Error for TokenError {}

/// A token validator or key source that cannot be built as configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtConfigError {
    /// No audience was given (it is required: a token for another service must not pass).
    #[error("field `audience`: at least one audience is required")]
    MissingAudience,
    /// An access-token validator was built without an accepted issuer.
    #[error("field `issuer`: at least one issuer is required for access tokens")]
    MissingIssuer,
    /// No key source was given.
    #[error("field `key_source`: a key source is required")]
    MissingKeySource,
    /// The algorithm allow-list is empty.
    #[error("field `algorithms`: the allow-list is empty")]
    NoAlgorithms,
    /// An algorithm that is never accepted (HMAC: no shared secrets, no algorithm confusion).
    #[error(
        "field `algorithms`: {algorithm} is not supported (only asymmetric algorithms are: \
         ES256, ES384, EdDSA, RS256, RS384, RS512, PS256, PS384, PS512)"
    )]
    UnsupportedAlgorithm {
        /// The algorithm given.
        algorithm: String,
    },
    /// A duration setting is out of range.
    #[error("field `{field}`: {problem}")]
    InvalidSetting {
        /// The builder method.
        field: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// No jsonwebtoken crypto backend: enable feature `aws-lc-rs` or `ring`, or pass one with
    /// `JwtValidatorBuilder::crypto_provider`.
    #[error(
        "no jsonwebtoken crypto provider: enable feature `aws-lc-rs` or `ring`, or call \
         `crypto_provider(..)`"
    )]
    NoCryptoProvider,
    /// A JWK set is not usable.
    #[error("{location}: JWK set refused: {reason}")]
    InvalidJwks {
        /// Where the set came from.
        location: Location,
        /// Why it was refused (never key material).
        reason: String,
    },
    /// A JWKS file could not be read.
    #[error(transparent)]
    Read(#[from] crate::ReadError),
    /// A JWKS file kept changing while being read at start: it is being written. Write the new
    /// file beside the old one and rename it over it.
    #[error("file {}: kept changing while being read (is it being written?)", path.display())]
    Unstable {
        /// The file.
        path: PathBuf,
    },
    /// The initial fetch of a JWKS URL failed.
    #[error("JWKS fetch failed: {reason}")]
    Fetch {
        /// What the fetcher reported.
        reason: String,
    },
    /// A trust domain name is not valid.
    #[error("field `trust_domain`: {input:?} is not a trust domain: {reason}")]
    InvalidTrustDomain {
        /// The text given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// A background task could not be started (no tokio runtime, or no thread).
    #[error("{what}: cannot be started: {reason}")]
    Background {
        /// What was to be started.
        what: &'static str,
        /// Why not.
        reason: String,
    },
}
