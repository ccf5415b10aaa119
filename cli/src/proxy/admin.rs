//! `--admin ADDR`: a plaintext listener on loopback for the orchestrator and the monitoring:
//! `/healthz`, `/ready`, `/metrics` (Prometheus) and `/status` (JSON).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use secure_channel::authz::PolicySource;
use secure_channel::{CredentialStatus, SecureChannel};
use serde_json::json;

use crate::failure::Failure;
use crate::text::rfc3339;

/// Backend requests that failed (502), by `mode` (`http`, `tcp`).
pub(crate) const BACKEND_ERRORS: &str = "secure_channel_proxy_backend_errors_total";

/// `--admin`: a loopback address only (the listener is plaintext and unauthenticated).
pub(crate) fn parse_admin(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|e| format!("expected a loopback IP:PORT (such as 127.0.0.1:9901): {e}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: the admin listener is plaintext and unauthenticated"
        ));
    }
    Ok(addr)
}

/// Installs the Prometheus recorder: done before the channel is built, so that the metrics
/// recorded while building it (the SVID's expiry) are kept.
pub(crate) fn install_recorder() -> Result<PrometheusHandle, Failure> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Failure::Invalid(format!("--admin: cannot install the metrics recorder: {e}")))
}

/// What `/status` and `/ready` read.
pub(crate) struct Admin {
    pub(crate) channel: SecureChannel,
    pub(crate) policy: Option<PolicySource>,
    pub(crate) metrics: PrometheusHandle,
    /// Set when SIGTERM arrived: `/ready` says 503 from then on.
    pub(crate) draining: Arc<AtomicBool>,
    /// `inbound http`, `inbound tcp`, ...
    pub(crate) role: &'static str,
    pub(crate) listen: String,
    pub(crate) upstream: String,
}

/// Binds the admin listener and serves it in the background; returns its address.
pub(crate) async fn start(addr: SocketAddr, admin: Admin) -> Result<SocketAddr, Failure> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::invalid(format!("--admin {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::invalid(format!("--admin {addr}"), e))?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(Arc::new(admin));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the admin listener stopped");
        }
    });
    Ok(local)
}

/// Ready while our SVID may be presented (not expired) and we are not draining.
async fn ready(State(admin): State<Arc<Admin>>) -> Response {
    if admin.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match admin.channel.credential_status() {
        CredentialStatus::Expired { not_after } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("credentials expired at {}\n", rfc3339(not_after)),
        )
            .into_response(),
        _ => (StatusCode::OK, "ready\n").into_response(),
    }
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        admin.metrics.render(),
    )
        .into_response()
}

async fn status(State(admin): State<Arc<Admin>>) -> Response {
    let credentials = admin.channel.source().current();
    let svid = credentials.svid();
    let (state, not_after) = match admin.channel.credential_status() {
        CredentialStatus::Valid { not_after } => ("valid", not_after),
        CredentialStatus::ExpiringSoon { not_after } => ("expiring_soon", not_after),
        CredentialStatus::Expired { not_after } => ("expired", not_after),
        _ => ("unknown", svid.not_after()),
    };
    let mut trust_domains: Vec<String> = credentials
        .bundles()
        .iter()
        .map(|bundle| bundle.trust_domain().to_string())
        .collect();
    trust_domains.sort();
    let body = json!({
        "role": admin.role,
        "listen": admin.listen,
        "upstream": admin.upstream,
        "spiffe_id": svid.spiffe_id().to_string(),
        "not_after": rfc3339(not_after),
        "credentials": state,
        "credentials_revision": admin.channel.source().revision(),
        "trust_domains": trust_domains,
        "policy_revision": admin.policy.as_ref().map(PolicySource::revision),
        "open_connections": admin.channel.open_connections(),
        "draining": admin.draining.load(Ordering::Relaxed),
    });
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        format!("{body:#}\n"),
    )
        .into_response()
}
