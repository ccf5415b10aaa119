//! The channel of a proxy: credentials, trust and revocation from the flags, as
//! echo_server builds its own.

use std::time::Duration;

use secure_channel::revocation::{DenyList, RevocationLists};
use secure_channel::{CredentialSource, SecureChannelBuilder, TrustDomain, WorkloadApi};

use crate::failure::Failure;
use crate::proxy::flags::TrustFlags;

/// How long the Workload API may take to deliver the first SVID.
const WORKLOAD_API_TIMEOUT: Duration = Duration::from_secs(15);

/// The credential source of the flags: files (watched) or the Workload API. With the Workload
/// API, its JWT-SVID source comes along.
pub(crate) async fn credentials(
    flags: &TrustFlags,
) -> Result<(CredentialSource, Option<secure_channel::jwt::JwtSvidSource>), Failure> {
    if let Some(endpoint) = &flags.workload_api {
        let api = WorkloadApi::builder()
            .endpoint(endpoint.as_str())
            .initial_timeout(WORKLOAD_API_TIMEOUT)
            .connect()
            .await
            .map_err(|e| Failure::invalid(format!("--workload-api {endpoint}"), e))?;
        let (x509, jwt) = api.into_parts();
        return Ok((x509, Some(jwt)));
    }
    let (Some(cert), Some(key), Some(bundle)) = (&flags.cert, &flags.key, &flags.bundle) else {
        return Err(Failure::Usage(
            "credentials: --cert, --key and --bundle, or --workload-api unix:PATH".into(),
        ));
    };
    let mut files = CredentialSource::from_files(cert, key).own_bundle(bundle);
    for (td, path) in &flags.federated {
        let td = TrustDomain::new(td)
            .map_err(|e| Failure::Usage(format!("--federated-bundle {td}: {e}")))?;
        files = files.bundle(td, path);
    }
    // The error names the file.
    let source = files.start().map_err(|e| Failure::Invalid(e.to_string()))?;
    Ok((source, None))
}

/// Applies `--tls12`, `--crl`, `--deny-list` and `--max-connection-age`.
pub(crate) fn apply(
    flags: &TrustFlags,
    mut builder: SecureChannelBuilder,
) -> Result<SecureChannelBuilder, Failure> {
    if flags.tls12 {
        builder = builder.allow_tls12();
    }
    if !flags.crls.is_empty() {
        let lists = RevocationLists::from_files(&flags.crls)
            .start()
            .map_err(|e| Failure::invalid("--crl", e))?;
        builder = builder.revocation_lists(&lists);
    }
    if let Some(path) = &flags.deny_list {
        let denied = DenyList::from_file(path)
            .start()
            .map_err(|e| Failure::invalid("--deny-list", e))?;
        builder = builder.deny_list(&denied);
    }
    if let Some(secs) = flags.max_connection_age {
        builder = builder.max_connection_age(Duration::from_secs(secs));
    }
    Ok(builder)
}
