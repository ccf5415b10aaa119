//! The SPIFFE Workload API (a SPIRE agent), through `spiffe::X509Source`.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::X509Source;

use crate::error::{ConfigError, Location, WorkloadApiProblem};
use crate::source::{CredentialSource, Credentials, Publisher, Svid, TrustBundle, TrustBundles};

/// Builds a [`CredentialSource`] that follows the SPIFFE Workload API.
///
/// The SVID and every bundle the agent sends (the workload's own trust domain and each federated
/// one) are followed as they rotate. An update whose SVID or own trust domain's bundle fails
/// validation is refused and the last good credentials stay in use. A federated trust domain's
/// bundle is judged on its own: a bad one keeps that domain's last good bundle (counted in
/// [`CredentialSource::failed_reloads`] and logged) while the SVID and the other bundles are
/// applied, so one partner's broken CA cannot stop our own rotation.
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
    pub async fn connect(self) -> Result<CredentialSource, ConfigError> {
        let endpoint = crate::error::workload_api_endpoint(self.endpoint.as_deref());
        let failed = |problem| ConfigError::WorkloadApi {
            endpoint: endpoint.clone(),
            problem,
        };
        let mut builder = X509Source::builder();
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint(endpoint);
        }
        let x509 = tokio::time::timeout(self.initial_timeout, builder.build())
            .await
            .map_err(|_| {
                failed(WorkloadApiProblem::InitialTimeout {
                    timeout: self.initial_timeout,
                })
            })?
            .map_err(|e| failed(client_problem(&e)))?;
        // At start there is no last good bundle to keep: a bad federated one is left out.
        let credentials = match convert(&x509, None, &endpoint) {
            Ok((credentials, refused)) => {
                for error in &refused {
                    tracing::warn!(%error, "federated bundle refused at start; that trust domain is not trusted");
                }
                credentials
            }
            Err(error) => {
                x509.shutdown().await;
                return Err(error);
            }
        };
        let (source, publisher) = CredentialSource::new("workload-api", credentials);
        tokio::spawn(follow(x509, publisher, endpoint));
        Ok(source)
    }
}

/// Builds a snapshot from the Workload API's current SVID and bundles.
///
/// The SVID and the bundle of its own trust domain must both be sound, or the whole update is
/// refused. A federated trust domain's bundle is validated on its own: a bad one keeps that
/// domain's bundle from `previous` (none if it had none) and is returned with the credentials,
/// so one partner's broken CA cannot freeze our own rotation.
fn convert(
    x509: &X509Source,
    previous: Option<&Credentials>,
    endpoint: &str,
) -> Result<(Credentials, Vec<ConfigError>), ConfigError> {
    let failed = |problem| ConfigError::WorkloadApi {
        endpoint: endpoint.to_owned(),
        problem,
    };
    let svid = x509.svid().map_err(|e| failed(client_problem(&e)))?;
    let chain = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let svid = Svid::load(chain, key, &Location::WorkloadApi, &Location::WorkloadApi)?;
    let own = svid.spiffe_id().trust_domain().clone();
    let mut bundles = TrustBundles::new();
    let mut refused = Vec::new();
    for (td, bundle) in x509
        .bundle_set()
        .map_err(|e| failed(client_problem(&e)))?
        .iter()
    {
        let certs = bundle
            .authorities()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
            .collect();
        match TrustBundle::load(td.clone(), certs, &Location::WorkloadApi) {
            Ok(bundle) => bundles.insert(bundle),
            Err(error) if *td == own => return Err(error),
            Err(error) => {
                if let Some(last_good) = previous.and_then(|p| p.bundles().get(td)) {
                    bundles.insert(last_good.clone());
                }
                refused.push(error);
            }
        }
    }
    if bundles.get(&own).is_none() {
        return Err(failed(WorkloadApiProblem::MissingOwnBundle {
            trust_domain: own,
        }));
    }
    Ok((Credentials::new(svid, bundles), refused))
}

fn client_problem(error: &spiffe::X509SourceError) -> WorkloadApiProblem {
    WorkloadApiProblem::Client {
        message: error.to_string(),
    }
}

async fn follow(x509: X509Source, publisher: Publisher, endpoint: String) {
    let mut updates = x509.updated();
    loop {
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    tracing::warn!("Workload API source closed; keeping the last credentials");
                    break;
                }
                let previous = publisher.current();
                match convert(&x509, previous.as_ref(), &endpoint) {
                    Ok((credentials, refused)) => {
                        for error in &refused {
                            publisher.reject_part("federated bundle", error);
                        }
                        if !publisher.publish(credentials) {
                            break;
                        }
                    }
                    Err(error) => publisher.reject(&error),
                }
            }
            () = publisher.closed() => break,
        }
    }
    x509.shutdown().await;
}
