//! The SPIFFE Workload API (a SPIRE agent), through `spiffe::X509Source`.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::X509Source;

use crate::error::{Error, Location};
use crate::source::{CredentialSource, Credentials, Publisher, Svid, TrustBundle, TrustBundles};

/// Builds a [`CredentialSource`] that follows the SPIFFE Workload API.
///
/// The SVID and every bundle the agent sends (the workload's own trust domain and each federated
/// one) are followed as they rotate. An update that fails validation is refused and the last good
/// credentials stay in use.
#[derive(Debug, Clone)]
#[must_use]
pub struct WorkloadApiSourceBuilder {
    endpoint: Option<String>,
    initial_timeout: Duration,
}

impl CredentialSource {
    /// Credentials from the SPIFFE Workload API, at `SPIFFE_ENDPOINT_SOCKET` unless
    /// [`WorkloadApiSourceBuilder::endpoint`] names one.
    pub fn from_workload_api() -> WorkloadApiSourceBuilder {
        WorkloadApiSourceBuilder {
            endpoint: None,
            initial_timeout: Duration::from_secs(30),
        }
    }
}

impl WorkloadApiSourceBuilder {
    /// The Workload API endpoint, such as `unix:/run/spire/agent.sock`.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// How long [`connect`](Self::connect) waits for the first SVID (default 30 s).
    pub fn initial_timeout(mut self, timeout: Duration) -> Self {
        self.initial_timeout = timeout;
        self
    }

    /// Connects, waits for the first SVID and bundles, and follows their rotation in a tokio task.
    pub async fn connect(self) -> Result<CredentialSource, Error> {
        let mut builder = X509Source::builder();
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint(endpoint);
        }
        let x509 = tokio::time::timeout(self.initial_timeout, builder.build())
            .await
            .map_err(|_| {
                Error::WorkloadApi(format!(
                    "no X.509-SVID received within {:?}",
                    self.initial_timeout
                ))
            })?
            .map_err(|e| Error::WorkloadApi(e.to_string()))?;
        let credentials = match convert(&x509) {
            Ok(credentials) => credentials,
            Err(error) => {
                x509.shutdown().await;
                return Err(error);
            }
        };
        let (source, publisher, stop) = CredentialSource::new("workload-api", credentials);
        tokio::spawn(follow(x509, publisher, stop));
        Ok(source)
    }
}

fn convert(x509: &X509Source) -> Result<Credentials, Error> {
    let api_error = |e: spiffe::X509SourceError| Error::WorkloadApi(e.to_string());
    let svid = x509.svid().map_err(api_error)?;
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let svid = Svid::load(chain, key, &Location::WorkloadApi, &Location::WorkloadApi)?;
    let mut bundles = TrustBundles::new();
    for (td, bundle) in x509.bundle_set().map_err(api_error)?.iter() {
        let certs = bundle
            .authorities()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
            .collect();
        bundles.insert(TrustBundle::load(
            td.clone(),
            certs,
            &Location::WorkloadApi,
        )?);
    }
    Ok(Credentials::new(svid, bundles))
}

async fn follow(
    x509: X509Source,
    publisher: Publisher,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let mut updates = x509.updated();
    loop {
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    tracing::warn!("Workload API source closed; keeping the last credentials");
                    break;
                }
                match convert(&x509) {
                    Ok(credentials) => {
                        if !publisher.publish(credentials) {
                            break;
                        }
                    }
                    Err(error) => publisher.reject(&error),
                }
            }
            _ = stop.changed() => break,
        }
    }
    x509.shutdown().await;
}
