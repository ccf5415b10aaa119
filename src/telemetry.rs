//! Metrics through the `metrics` facade: names, labels and the recording helpers.
//!
//! No exporter is installed by this crate; without a recorder every call is a no-op. Label
//! values are bounded: outcomes and reasons from fixed sets, rule names from the policy, the
//! source kind, and the workload's own SPIFFE ID — never a peer's unauthenticated ID, a path or
//! a token.

use std::time::{SystemTime, UNIX_EPOCH};

/// Handshakes, by `side` (`server`, `client`), `outcome` (`accepted`, `refused`, `failed`),
/// `reason` and `group` (the negotiated key exchange group of an accepted handshake, such as
/// `X25519MLKEM768`; `none` otherwise).
pub const HANDSHAKES: &str = "secure_channel_handshakes_total";
/// Connections open on secure listeners.
pub const CONNECTIONS_OPEN: &str = "secure_channel_connections_open";
/// Connections cut off because their peer is no longer trusted, by `side` (`server`, `client`)
/// and `reason` (`untrusted_chain`, `revoked`, `denied`, `not_allowed`, `expired`, `max_age`).
pub const CONNECTIONS_CUT_OFF: &str = "secure_channel_connections_cut_off_total";
/// Authorization decisions, by `outcome` (`allow`, `deny`, `would_deny`) and `rule` (the deciding
/// rule's name, or the denial reason).
pub const AUTHZ_DECISIONS: &str = "secure_channel_authz_decisions_total";
/// Requests refused by a rate or concurrency limit, by `source` (`layer`: a `RateLimitLayer`,
/// `policy`: a policy rule), `limit` (the policy rule's name, or the layer limit's: `default`,
/// `total` or an override's name) and `reason` (`rate`, `concurrency`, `total`, `capacity`).
/// Never by caller: limits are per SPIFFE ID, their counters per limit.
pub const RATE_LIMITED: &str = "secure_channel_rate_limited_total";
/// Bearer tokens refused, by `reason`.
pub const JWT_REJECTIONS: &str = "secure_channel_jwt_rejections_total";
/// Bearer tokens accepted.
pub const JWT_ACCEPTED: &str = "secure_channel_jwt_accepted_total";
/// The workload's current SVID expiry, in Unix seconds, by `source` and `spiffe_id` (its own).
pub const SVID_NOT_AFTER: &str = "secure_channel_svid_not_after_seconds";
/// Fetches of federated bundles from bundle endpoints, by `trust_domain` (the configured remote
/// trust domain), `outcome` (`applied`, `unchanged`, `refused`) and `reason` (why it was
/// refused: `connect`, `endpoint_refused`, `status`, `timeout`, `too_large`,
/// `trust_domain_mismatch`, `invalid_bundle`, `sequence_backwards`; `none` otherwise).
pub const FEDERATION_FETCHES: &str = "secure_channel_federation_fetches_total";
/// Credential reloads, by `source` (`memory`, `files`, `workload-api`) and `outcome` (`applied`,
/// `refused`).
pub const CREDENTIAL_RELOADS: &str = "secure_channel_credential_reloads_total";

/// Records the outcome of a handshake (`accepted`, `refused` or `failed`, with a bounded
/// reason), and the key exchange group it negotiated.
pub(crate) fn handshake(
    side: &'static str,
    outcome: &'static str,
    reason: &'static str,
    group: Option<rustls::NamedGroup>,
) {
    let group = group_label(group);
    metrics::counter!(HANDSHAKES, "side" => side, "outcome" => outcome, "reason" => reason, "group" => group)
        .increment(1);
}

/// A bounded label for a key exchange group: its IANA name, `other` or `none`.
pub(crate) fn group_label(group: Option<rustls::NamedGroup>) -> &'static str {
    use rustls::NamedGroup as G;
    match group {
        None => "none",
        Some(G::X25519MLKEM768) => "X25519MLKEM768",
        Some(G::secp256r1MLKEM768) => "secp256r1MLKEM768",
        Some(G::MLKEM768) => "MLKEM768",
        Some(G::X25519) => "X25519",
        Some(G::secp256r1) => "secp256r1",
        Some(G::secp384r1) => "secp384r1",
        Some(_) => "other",
    }
}

/// Records a connection opened on a listener; the guard records its closing.
pub(crate) fn connection_opened() -> ConnectionGauge {
    metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
    ConnectionGauge
}

/// Decrements the open-connections gauge when dropped.
#[derive(Debug)]
pub(crate) struct ConnectionGauge;

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
    }
}

/// Records a connection cut off.
pub(crate) fn connection_cut_off(side: &'static str, reason: &'static str) {
    metrics::counter!(CONNECTIONS_CUT_OFF, "side" => side, "reason" => reason).increment(1);
}

/// The key of [`AUTHZ_DECISIONS`] for one outcome and rule (or denial reason): built once per
/// rule and outcome by the policy, then used for every such decision.
pub(crate) fn authz_decision_key(
    outcome: &'static str,
    rule: metrics::SharedString,
) -> metrics::Key {
    metrics::Key::from_parts(
        AUTHZ_DECISIONS,
        vec![
            metrics::Label::new("outcome", outcome),
            metrics::Label::new("rule", rule),
        ],
    )
}

/// Records an authorization decision: what `metrics::counter!` does, with a key built before.
pub(crate) fn authz_decision(key: &metrics::Key) {
    static METADATA: metrics::Metadata<'static> =
        metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
    metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA)).increment(1);
}

/// Records a request refused by a limit.
pub(crate) fn rate_limited(
    source: &'static str,
    limit: metrics::SharedString,
    reason: &'static str,
) {
    metrics::counter!(RATE_LIMITED, "source" => source, "limit" => limit, "reason" => reason)
        .increment(1);
}

/// Records a refused bearer token.
pub(crate) fn jwt_rejection(reason: &'static str) {
    metrics::counter!(JWT_REJECTIONS, "reason" => reason).increment(1);
}

/// Records an accepted bearer token.
pub(crate) fn jwt_accepted() {
    metrics::counter!(JWT_ACCEPTED).increment(1);
}

/// Records the expiry of the workload's current SVID.
pub(crate) fn svid_not_after(
    source: &'static str,
    spiffe_id: &spiffe::SpiffeId,
    not_after: SystemTime,
) {
    let secs = not_after
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    metrics::gauge!(SVID_NOT_AFTER, "source" => source, "spiffe_id" => spiffe_id.to_string())
        .set(secs);
}

/// Records a credential reload.
pub(crate) fn credential_reload(source: &'static str, outcome: &'static str) {
    metrics::counter!(CREDENTIAL_RELOADS, "source" => source, "outcome" => outcome).increment(1);
}

/// Records a fetch of a federated bundle.
pub(crate) fn federation_fetch(
    trust_domain: &spiffe::TrustDomain,
    outcome: &'static str,
    reason: &'static str,
) {
    metrics::counter!(
        FEDERATION_FETCHES,
        "trust_domain" => trust_domain.as_str().to_owned(),
        "outcome" => outcome,
        "reason" => reason
    )
    .increment(1);
}
