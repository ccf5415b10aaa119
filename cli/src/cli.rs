//! The command line: every subcommand, its flags and an example of each (`--help`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use secure_channel::SpiffeId;

/// SPIFFE mutual TLS beside services that cannot link the secure-channel crate, and the chores
/// around SVIDs and authorization policies.
#[derive(Debug, Parser)]
#[command(name = "secure-channel", version, propagate_version = true)]
#[command(after_help = "\
Exit codes: 0 ok (allowed, valid), 1 denied or invalid, 2 usage error.
Logs go to stderr (RUST_LOG filters them); results to stdout.

Examples:
  secure-channel dev-ca init ./pki --trust-domain example.org
  secure-channel svid inspect ./pki/api.pem --bundle ./pki/ca.pem
  secure-channel policy explain policy.toml --caller spiffe://example.org/web --method GET --path /orders/1")]
pub(crate) struct Cli {
    /// Log more (-v: debug, -vv: trace); RUST_LOG, when set, wins.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// The default log filter for the verbosity asked for.
    pub(crate) fn log_level(&self) -> &'static str {
        match self.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Inspect X.509-SVIDs.
    #[command(subcommand)]
    Svid(SvidCommand),
    /// Load and test authorization policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// A development CA minting SVIDs as PEM files (NOT FOR PRODUCTION).
    #[command(subcommand, name = "dev-ca")]
    DevCa(DevCaCommand),
    /// SPIFFE mutual TLS in front of (or out of) a service that cannot link the crate.
    #[command(subcommand)]
    Proxy(ProxyCommand),
}

/// `proxy ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ProxyCommand {
    /// Accept mutual TLS, admit callers exactly as the library does (allow-list, policy,
    /// tokens, revocation, live cut-off), forward to a plaintext backend on loopback or a unix
    /// socket with the caller's SPIFFE ID in a header. Prints `listening on ADDR` when ready;
    /// drains on SIGTERM.
    #[command(after_help = "\
Examples:
  secure-channel proxy inbound --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\
      --cert svid.pem --key svid.key --bundle ca.pem --allow spiffe://example.org/web
  secure-channel proxy inbound --backend unix:/run/app.sock --workload-api unix:/run/spire/agent.sock \\
      --policy policy.toml --jwks jwks.json --audience orders --require-bound-token")]
    Inbound(Box<crate::proxy::InboundArgs>),
    /// A plaintext listener on this machine (loopback or a unix socket) for a service that
    /// cannot speak mutual TLS, forwarding to one target over mutual TLS: the target must prove
    /// an expected SPIFFE ID; a bearer token is attached from a file or the Workload API.
    #[command(after_help = "\
Examples:
  secure-channel proxy outbound --listen 127.0.0.1:15001 --target orders.internal:8443 \\
      --expect-server spiffe://example.org/orders \\
      --cert svid.pem --key svid.key --bundle ca.pem --token-file /run/tokens/orders
  secure-channel proxy outbound --listen unix:/run/orders.sock --target 10.0.0.7:8443 \\
      --expect-server spiffe://example.org/orders --workload-api unix:/run/spire/agent.sock \\
      --token-audience spiffe://example.org/orders")]
    Outbound(Box<crate::proxy::OutboundArgs>),
}

/// `svid ...`
#[derive(Debug, Subcommand)]
pub(crate) enum SvidCommand {
    /// Show an SVID's SPIFFE ID, validity and chain, and whether it is a valid X.509-SVID
    /// (with the rule it breaks if not) and chains to a bundle. Exit 0 valid, 1 invalid.
    #[command(after_help = "\
Examples:
  secure-channel svid inspect /run/svid/tls.crt
  secure-channel svid inspect /run/svid/tls.crt --bundle /run/svid/ca.crt --json")]
    Inspect(SvidInspect),
}

/// `svid inspect`
#[derive(Debug, Args)]
pub(crate) struct SvidInspect {
    /// The certificate chain, leaf first (PEM, or a single DER certificate).
    #[arg(value_name = "CERT")]
    pub(crate) cert: PathBuf,
    /// The PEM CA certificates of the SVID's own trust domain: also check that the chain
    /// validates against them, as a handshake would.
    #[arg(long, value_name = "PEM")]
    pub(crate) bundle: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `policy ...`
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Load a policy file and report its rules (exit 1, naming the line and field, if it is
    /// refused).
    #[command(after_help = "\
Example:
  secure-channel policy check policy.toml")]
    Check(PolicyCheck),
    /// Decide one request with a policy file and print the decision and the deciding rule:
    /// exit 0 allowed, 1 denied (for CI: "denied calls stay denied").
    #[command(after_help = "\
Examples:
  secure-channel policy explain policy.toml --caller spiffe://example.org/web --method GET --path /orders/1
  secure-channel policy explain policy.toml --caller spiffe://example.org/web \\
      --method POST --path /orders --scope orders.write --json")]
    Explain(PolicyExplain),
}

/// `policy check`
#[derive(Debug, Args)]
pub(crate) struct PolicyCheck {
    /// The policy file (TOML).
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `policy explain`
#[derive(Debug, Args)]
pub(crate) struct PolicyExplain {
    /// The policy file (TOML).
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The caller's SPIFFE ID.
    #[arg(long, value_name = "ID", value_parser = parse_spiffe_id)]
    pub(crate) caller: SpiffeId,
    /// The request method (GET, POST, ...).
    #[arg(long, value_name = "M", value_parser = parse_method)]
    pub(crate) method: http::Method,
    /// The request path as sent (it is normalized as the proxy would).
    #[arg(long, value_name = "P")]
    pub(crate) path: String,
    /// A scope of a validated token (repeatable): decides rules with `when.scopes`.
    #[arg(long = "scope", value_name = "S")]
    pub(crate) scopes: Vec<String>,
    /// A claim of a validated token, NAME=VALUE (repeatable; VALUE is read as JSON when it is
    /// JSON, else as a string): decides rules with `when.claims`.
    #[arg(long = "claim", value_name = "NAME=VALUE", value_parser = parse_claim)]
    pub(crate) claims: Vec<(String, serde_json::Value)>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `dev-ca ...`
#[derive(Debug, Subcommand)]
pub(crate) enum DevCaCommand {
    /// Create a development CA in DIR: ca.pem (the bundle) and ca.key. NOT FOR PRODUCTION.
    #[command(after_help = "\
Example:
  secure-channel dev-ca init ./pki --trust-domain example.org")]
    Init(DevCaInit),
    /// Mint an SVID with the CA in DIR: NAME.pem (chain) and NAME.key. NOT FOR PRODUCTION.
    #[command(after_help = "\
Examples:
  secure-channel dev-ca issue ./pki spiffe://example.org/api      # ./pki/api.pem, ./pki/api.key
  secure-channel dev-ca issue ./pki spiffe://example.org/billing/web --name web --ttl 3600")]
    Issue(DevCaIssue),
}

/// `dev-ca init`
#[derive(Debug, Args)]
pub(crate) struct DevCaInit {
    /// The directory to write ca.pem and ca.key to (created if missing).
    #[arg(value_name = "DIR")]
    pub(crate) dir: PathBuf,
    /// The CA's trust domain.
    #[arg(long, value_name = "TD", default_value = "example.org")]
    pub(crate) trust_domain: String,
    /// Replace a CA already in DIR.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `dev-ca issue`
#[derive(Debug, Args)]
pub(crate) struct DevCaIssue {
    /// The directory holding the CA (from `dev-ca init`); the SVID is written there.
    #[arg(value_name = "DIR")]
    pub(crate) dir: PathBuf,
    /// The SVID's SPIFFE ID, in the CA's trust domain.
    #[arg(value_name = "SPIFFE_ID", value_parser = parse_spiffe_id)]
    pub(crate) id: SpiffeId,
    /// The files' name (default: the ID's path, `/` as `-`).
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub(crate) ttl: u64,
    /// Also put this DNS name in the certificate (for clients such as curl that check host
    /// names; never used as identity).
    #[arg(long = "dns", value_name = "NAME")]
    pub(crate) dns_names: Vec<String>,
}

/// A SPIFFE ID flag.
pub(crate) fn parse_spiffe_id(text: &str) -> Result<SpiffeId, String> {
    SpiffeId::new(text).map_err(|e| format!("not a SPIFFE ID: {e}"))
}

fn parse_method(text: &str) -> Result<http::Method, String> {
    http::Method::from_bytes(text.as_bytes()).map_err(|e| format!("not an HTTP method: {e}"))
}

fn parse_claim(text: &str) -> Result<(String, serde_json::Value), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| "expected NAME=VALUE".to_owned())?;
    if name.is_empty() {
        return Err("the claim's NAME is empty".into());
    }
    let value =
        serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}
