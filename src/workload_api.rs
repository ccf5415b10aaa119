//! One connection setting for both halves of the SPIFFE Workload API: the X.509 credentials a
//! [`SecureChannel`](crate::SecureChannel) presents and trusts, and the JWT-SVIDs and JWT bundles
//! of the token layers.

use std::time::Duration;

use crate::jwt::{JwtSvidSource, JwtSvidSourceBuilder, JwtSvidSourceError};
use crate::source::WorkloadApiSourceBuilder;
use crate::{ConfigError, CredentialSource};

/// Both sources of the SPIFFE Workload API, connected with one builder: the X.509 credential
/// source for the channel and the JWT-SVID source for tokens, from the same endpoint.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use secure_channel::{SecureChannel, WorkloadApi};
/// use secure_channel::jwt::JwtValidator;
///
/// let api = WorkloadApi::builder().connect().await?;
/// let channel = SecureChannel::builder(api.x509())
///     .allow_client("spiffe://example.org/web")
///     .build()?;
/// let tokens = JwtValidator::jwt_svids("spiffe://example.org/api")
///     .key_source(api.jwt().key_source())
///     .require_subject_matches_peer()
///     .build()?;
/// # let _ = (channel, tokens);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct WorkloadApi {
    x509: CredentialSource,
    jwt: JwtSvidSource,
}

/// Builds a [`WorkloadApi`]; see [`WorkloadApi::builder`]. Each setting goes to both halves.
#[derive(Debug, Clone)]
#[must_use]
pub struct WorkloadApiBuilder {
    x509: WorkloadApiSourceBuilder,
    jwt: JwtSvidSourceBuilder,
}

/// Why [`WorkloadApiBuilder::connect`] failed: which half, and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadApiError {
    /// The X.509 half: no usable SVID or bundles.
    #[error(transparent)]
    X509(#[from] ConfigError),
    /// The JWT half: no usable JWT bundles.
    #[error(transparent)]
    Jwt(#[from] JwtSvidSourceError),
}

impl WorkloadApi {
    /// Starts building: the endpoint is `SPIFFE_ENDPOINT_SOCKET` unless
    /// [`endpoint`](WorkloadApiBuilder::endpoint) names one; each half waits up to 30 s for its
    /// first update.
    pub fn builder() -> WorkloadApiBuilder {
        WorkloadApiBuilder {
            x509: CredentialSource::from_workload_api(),
            jwt: JwtSvidSource::builder(),
        }
    }

    /// The X.509 credential source, for [`SecureChannel::builder`](crate::SecureChannel::builder).
    pub fn x509(&self) -> &CredentialSource {
        &self.x509
    }

    /// The JWT-SVID source: JWT bundles for validators, this workload's JWT-SVIDs for clients.
    pub fn jwt(&self) -> &JwtSvidSource {
        &self.jwt
    }

    /// Both sources, to keep separately.
    pub fn into_parts(self) -> (CredentialSource, JwtSvidSource) {
        (self.x509, self.jwt)
    }
}

impl WorkloadApiBuilder {
    /// The Workload API endpoint, such as `unix:/run/spire/agent.sock`.
    pub fn endpoint(self, endpoint: impl Into<String>) -> Self {
        let endpoint = endpoint.into();
        Self {
            x509: self.x509.endpoint(endpoint.clone()),
            jwt: self.jwt.endpoint(endpoint),
        }
    }

    /// How long [`connect`](Self::connect) waits for each half's first update (default 30 s).
    pub fn initial_timeout(self, timeout: Duration) -> Self {
        Self {
            x509: self.x509.initial_timeout(timeout),
            jwt: self.jwt.initial_timeout(timeout),
        }
    }

    /// Bounds each JWT-SVID fetch of the JWT half (default 10 s).
    pub fn jwt_fetch_timeout(self, timeout: Duration) -> Self {
        Self {
            jwt: self.jwt.fetch_timeout(timeout),
            ..self
        }
    }

    /// Connects both halves at once and waits for their first updates; fails if either fails.
    pub async fn connect(self) -> Result<WorkloadApi, WorkloadApiError> {
        // The half that succeeds is dropped (and stops following) when the other fails.
        let (x509, jwt) = tokio::join!(self.x509.connect(), self.jwt.connect());
        Ok(WorkloadApi {
            x509: x509?,
            jwt: jwt?,
        })
    }
}
