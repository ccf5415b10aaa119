//! An HTTP client over SPIFFE mutual TLS, for interoperability tests.
//!
//! Usage:
//!   cargo run --example echo_client -- --url https://127.0.0.1:8443/whoami \
//!     --cert svid.pem --key svid.key --bundle bundle.pem \
//!     --expect-server spiffe://example.org/server [--expect-server ...] \
//!     [--federated-bundle other.org=other.pem ...] [--http2] [--token token.jwt]
//!
//! Flags:
//!   --url URL                         what to GET
//!   --cert PATH, --key PATH           the client's SVID (PEM chain, leaf first) and key
//!   --bundle PATH                     PEM CA certificates of the client's own trust domain
//!   --federated-bundle TD=PATH        PEM CA certificates of another trust domain (repeatable)
//!   --expect-server X                 server IDs accepted (repeatable, at least one): spiffe://td/path,
//!                                     spiffe://td, or spiffe://td/path/*
//!   --http2                           force HTTP/2 (default: as ALPN decides)
//!   --token PATH                      send the token in PATH (surrounding whitespace trimmed) as
//!                                     `Authorization: Bearer`, only to a server whose identity
//!                                     was verified
//!
//! Prints the response body to stdout and exits 0 on a 2xx answer; otherwise exits non-zero with
//! the error on stderr (a wrong server identity names the expected and the presented IDs).

use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secure_channel::jwt::BearerToken;
use secure_channel::layer::client_token::ClientTokenLayer;
use secure_channel::{CredentialSource, SecureChannel, TrustDomain};
use tower::{ServiceBuilder, ServiceExt};

#[derive(Debug, Default)]
struct Args {
    url: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    bundle: Option<String>,
    federated: Vec<(String, String)>,
    expect: Vec<String>,
    http2: bool,
    token: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = Some(value()?),
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
            "--expect-server" => args.expect.push(value()?),
            "--http2" => args.http2 = true,
            "--token" => args.token = Some(value()?),
            "-h" | "--help" => {
                return Err("see the usage at the top of examples/echo_client.rs".into());
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// The error and its causes, outermost first.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

async fn run(args: Args) -> Result<String, String> {
    let url: http::Uri = args
        .url
        .ok_or("--url is required")?
        .parse()
        .map_err(|e| format!("--url: {e}"))?;
    let cert = args.cert.ok_or("--cert is required")?;
    let key = args.key.ok_or("--key is required")?;
    let bundle = args.bundle.ok_or("--bundle is required")?;
    if args.expect.is_empty() {
        return Err("at least one --expect-server is required".into());
    }
    let mut files = CredentialSource::from_files(&cert, &key).own_bundle(&bundle);
    for (td, path) in &args.federated {
        let td = TrustDomain::new(td).map_err(|e| format!("--federated-bundle {td}: {e}"))?;
        files = files.bundle(td, path);
    }
    let source = files.start().map_err(|e| e.to_string())?;
    let mut builder = SecureChannel::builder(source);
    for expected in &args.expect {
        builder = builder.expect_server(expected.as_str());
    }
    let channel = builder.build().map_err(|e| e.to_string())?;

    let mut connector = channel.connector();
    let mut client = Client::builder(TokioExecutor::new());
    if args.http2 {
        connector = connector.http2_only();
        client.http2_only(true);
    }
    let client = client.build::<_, Empty<Bytes>>(connector);
    // The token goes into the request only; the connector verifies the server's identity in
    // the TLS handshake before any byte of the request is sent.
    let token = match &args.token {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("--token {path}: {e}"))?;
            Some(BearerToken::new(text.trim()).map_err(|e| format!("--token {path}: {e}"))?)
        }
        None => None,
    };
    let request = http::Request::get(url)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let call = async {
        match token {
            Some(token) => ServiceBuilder::new()
                .layer(ClientTokenLayer::new(token))
                .service(client)
                .oneshot(request)
                .await
                .map_err(|e| chain(e.as_ref())),
            None => client.request(request).await.map_err(|e| chain(&e)),
        }
    };
    let response = tokio::time::timeout(std::time::Duration::from_secs(30), call)
        .await
        .map_err(|_| "request timed out".to_owned())??;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| chain(&e))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("server answered {status}: {body}"))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match parse_args() {
        Ok(args) => run(args).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("echo_client: error: {error}");
            ExitCode::from(1)
        }
    }
}
