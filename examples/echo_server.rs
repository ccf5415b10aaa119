//! An HTTP echo server over SPIFFE mutual TLS, for interoperability tests.
//!
//! Usage:
//!   cargo run --example echo_server -- \
//!     --cert svid.pem --key svid.key --bundle bundle.pem \
//!     --allow spiffe://example.org/client [--allow ...] \
//!     [--listen 127.0.0.1:8443] [--federated-bundle other.org=other.pem ...] [--tls12]
//!
//! Flags:
//!   --listen ADDR                     address to listen on (default 127.0.0.1:8443)
//!   --cert PATH                       PEM certificate chain of the server's SVID, leaf first
//!   --key PATH                        PEM private key (PKCS#8, SEC1 or PKCS#1)
//!   --bundle PATH                     PEM CA certificates of the server's own trust domain
//!   --federated-bundle TD=PATH        PEM CA certificates of another trust domain (repeatable)
//!   --allow X                         callers allowed (repeatable, at least one): an exact ID
//!                                     spiffe://td/path, a trust domain spiffe://td, or a prefix
//!                                     spiffe://td/path/*
//!   --tls12                           also accept TLS 1.2 (default: TLS 1.3 only)
//!
//! The certificate, key and bundle files are watched: replacing them changes what new handshakes
//! use within seconds, without a restart. When ready, prints `listening on ADDR`.
//! `GET /whoami` answers `{"spiffe_id": "<caller>", "token_subject": null}`.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use secure_channel::{CredentialSource, PeerIdentity, SecureChannel, TrustDomain};

#[derive(Debug, Default)]
struct Args {
    listen: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    bundle: Option<String>,
    federated: Vec<(String, String)>,
    allow: Vec<String>,
    tls12: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = Some(value()?),
            "--cert" => args.cert = Some(value()?),
            "--key" => args.key = Some(value()?),
            "--bundle" => args.bundle = Some(value()?),
            "--federated-bundle" => {
                let v = value()?;
                let (td, path) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--federated-bundle {v}: expected TRUST_DOMAIN=PATH"))?;
                args.federated.push((td.to_owned(), path.to_owned()));
            }
            "--allow" => args.allow.push(value()?),
            "--tls12" => args.tls12 = true,
            "-h" | "--help" => {
                return Err("see the usage at the top of examples/echo_server.rs".into());
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

async fn whoami(peer: PeerIdentity) -> impl IntoResponse {
    let body =
        serde_json::json!({ "spiffe_id": peer.spiffe_id().to_string(), "token_subject": null });
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn run(args: Args) -> Result<(), String> {
    let cert = args.cert.ok_or("--cert is required")?;
    let key = args.key.ok_or("--key is required")?;
    let bundle = args.bundle.ok_or("--bundle is required")?;
    if args.allow.is_empty() {
        return Err("at least one --allow is required (nobody is allowed by default)".into());
    }
    let listen: SocketAddr = args
        .listen
        .as_deref()
        .unwrap_or("127.0.0.1:8443")
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;

    let mut files = CredentialSource::from_files(&cert, &key).own_bundle(&bundle);
    for (td, path) in &args.federated {
        let td = TrustDomain::new(td).map_err(|e| format!("--federated-bundle {td}: {e}"))?;
        files = files.bundle(td, path);
    }
    let source = files.start().map_err(|e| e.to_string())?;

    let mut builder = SecureChannel::builder(source);
    for allowed in &args.allow {
        builder = builder.allow_client(allowed.as_str());
    }
    if args.tls12 {
        builder = builder.allow_tls12();
    }
    let channel = builder.build().map_err(|e| e.to_string())?;

    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("--listen {listen}: {e}"))?;
    let listener = channel.listener(tcp).map_err(|e| e.to_string())?;
    println!("listening on {}", listener.local_addr());

    let app = Router::new().route("/whoami", get(whoami));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerIdentity>(),
    )
    .await
    .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "secure_channel=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match parse_args() {
        Ok(args) => run(args).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo_server: error: {error}");
            ExitCode::from(2)
        }
    }
}
