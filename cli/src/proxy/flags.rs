//! The proxies' flags. They mean what `examples/echo_server.rs`'s mean, so scripts carry over.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use secure_channel::IdMatcher;

/// Where the proxy's own SVID and the trust bundles come from, and how peers' chains are
/// checked: the same on both sides.
#[derive(Debug, Args)]
pub(crate) struct TrustFlags {
    /// PEM certificate chain of our SVID, leaf first (watched for rotation).
    #[arg(long, value_name = "PATH", requires_all = ["key", "bundle"], conflicts_with = "workload_api")]
    pub(crate) cert: Option<PathBuf>,
    /// PEM private key of our SVID: PKCS#8, SEC1 or PKCS#1 (watched).
    #[arg(long, value_name = "PATH", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// PEM CA certificates of our own trust domain (watched).
    #[arg(long, value_name = "PATH", requires = "cert")]
    pub(crate) bundle: Option<PathBuf>,
    /// PEM CA certificates of another trust domain, TD=PATH (repeatable, watched).
    #[arg(long = "federated-bundle", value_name = "TD=PATH", requires = "cert", value_parser = parse_federated)]
    pub(crate) federated: Vec<(String, PathBuf)>,
    /// The SPIFFE Workload API (a SPIRE agent) instead of files: unix:PATH.
    #[arg(long = "workload-api", value_name = "unix:PATH", value_parser = parse_workload_api)]
    pub(crate) workload_api: Option<String>,
    /// Also accept TLS 1.2 (default: TLS 1.3 only).
    #[arg(long)]
    pub(crate) tls12: bool,
    /// An X.509 CRL, PEM or DER (repeatable, watched): checked in every handshake, and open
    /// connections it revokes are cut off.
    #[arg(long = "crl", value_name = "PATH")]
    pub(crate) crls: Vec<PathBuf>,
    /// Peers refused even though their chain validates: one SPIFFE ID or
    /// `sha256:<hex of the leaf DER>` per line, `#` comments (watched).
    #[arg(long = "deny-list", value_name = "PATH")]
    pub(crate) deny_list: Option<PathBuf>,
    /// Close every connection this long after its handshake.
    #[arg(long = "max-connection-age", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_connection_age: Option<u64>,
}

/// `--listen`: an address to bind.
pub(crate) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|e| format!("expected IP:PORT (such as 127.0.0.1:8443): {e}"))
}

/// An `--allow` or `--expect-server` matcher: an exact ID, `spiffe://td`, or
/// `spiffe://td/path/*`.
pub(crate) fn parse_matcher(text: &str) -> Result<IdMatcher, String> {
    IdMatcher::parse(text).map_err(|e| e.to_string())
}

fn parse_federated(text: &str) -> Result<(String, PathBuf), String> {
    let (td, path) = text
        .split_once('=')
        .ok_or_else(|| "expected TRUST_DOMAIN=PATH".to_owned())?;
    secure_channel::TrustDomain::new(td).map_err(|e| format!("trust domain {td:?}: {e}"))?;
    if path.is_empty() {
        return Err("the PATH is empty".into());
    }
    Ok((td.to_owned(), PathBuf::from(path)))
}

fn parse_workload_api(text: &str) -> Result<String, String> {
    match text.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Ok(text.to_owned()),
        _ => Err("expected unix:PATH (the agent's socket)".into()),
    }
}
