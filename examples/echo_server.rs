//! An HTTP echo server over SPIFFE mutual TLS, for interoperability tests.
//!
//! Usage:
//!   cargo run --example echo_server -- \
//!     --cert svid.pem --key svid.key --bundle bundle.pem \
//!     --allow spiffe://example.org/client [--allow ...] [--policy policy.toml] \
//!     [--jwks jwks.json --audience api [--issuer https://issuer] [--require-bound-token]] \
//!     [--listen 127.0.0.1:8443] [--federated-bundle other.org=other.pem ...] [--tls12] \
//!     [--crl ca.crl ...] [--deny-list denied.txt] [--max-connection-age 3600]
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
//!   --policy PATH                     an authorization policy file (TOML), watched for changes;
//!                                     --allow callers stay allowed on every route
//!   --jwks PATH --audience AUD        require a valid bearer token on every request, verified
//!                                     with the JWK set in PATH (watched) for audience AUD
//!   --issuer ISS                      ...issued by ISS (default: any issuer of that JWK set)
//!   --require-bound-token             ...bound to the caller's certificate (RFC 8705)
//!   --crl PATH                        an X.509 CRL (PEM or DER) checked in every handshake
//!                                     (repeatable, watched; past its nextUpdate it refuses
//!                                     every chain through its issuer)
//!   --deny-list PATH                  callers refused even though their chain validates: one
//!                                     SPIFFE ID or `sha256:<hex of the leaf DER>` per line,
//!                                     `#` comments (watched)
//!   --max-connection-age SECS         close every connection this long after its handshake
//!
//! The certificate, key, bundle, policy, CRL and deny-list files are watched: replacing them
//! changes what new handshakes use within seconds, without a restart, and open connections whose
//! caller is no longer trusted (its CA gone from the bundle, revoked, denied, no longer allowed,
//! or its certificate expired) are answered `Connection: close` (HTTP/1.1) or GOAWAY (HTTP/2) and
//! closed, hard after 10 seconds. When ready, prints `listening on ADDR`.
//! `GET /whoami` answers `{"spiffe_id": "<caller>", "token_subject": <the token's sub or null>}`.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use secure_channel::authz::PolicySource;
use secure_channel::integration::axum::{LayeredRouter, layer_before_routing};
use secure_channel::jwt::{JwtValidator, KeySource, VerifiedClaims};
use secure_channel::layer::authorize::AuthorizeLayer;
use secure_channel::layer::jwt::{Jwt, JwtLayer};
use secure_channel::revocation::{DenyList, RevocationLists};
use secure_channel::{
    AllowList, CredentialSource, IdMatcher, PeerIdentity, SecureChannel, TrustDomain,
};
use tower::{Layer, ServiceExt};

#[derive(Debug, Default)]
struct Args {
    listen: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    bundle: Option<String>,
    federated: Vec<(String, String)>,
    allow: Vec<String>,
    tls12: bool,
    policy: Option<String>,
    jwks: Option<String>,
    audience: Option<String>,
    issuer: Option<String>,
    require_bound_token: bool,
    crls: Vec<String>,
    deny_list: Option<String>,
    max_connection_age: Option<u64>,
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
            "--policy" => args.policy = Some(value()?),
            "--jwks" => args.jwks = Some(value()?),
            "--audience" => args.audience = Some(value()?),
            "--issuer" => args.issuer = Some(value()?),
            "--require-bound-token" => args.require_bound_token = true,
            "--crl" => args.crls.push(value()?),
            "--deny-list" => args.deny_list = Some(value()?),
            "--max-connection-age" => {
                let v = value()?;
                let secs = v
                    .parse::<u64>()
                    .ok()
                    .filter(|secs| *secs > 0)
                    .ok_or_else(|| {
                        format!(
                            "--max-connection-age {v}: expected a whole number of seconds above 0"
                        )
                    })?;
                args.max_connection_age = Some(secs);
            }
            "-h" | "--help" => {
                return Err("see the usage at the top of examples/echo_server.rs".into());
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

async fn whoami(peer: PeerIdentity, request: axum::extract::Request) -> impl IntoResponse {
    let subject = request
        .extensions()
        .get::<VerifiedClaims>()
        .and_then(|c| c.subject().map(str::to_owned));
    let body =
        serde_json::json!({ "spiffe_id": peer.spiffe_id().to_string(), "token_subject": subject });
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

/// The token validator of `--jwks`, `--audience`, `--issuer`, `--require-bound-token`.
fn token_validator(args: &Args) -> Result<Option<JwtValidator>, String> {
    let (jwks, audience) =
        match (&args.jwks, &args.audience) {
            (None, None) if args.issuer.is_none() && !args.require_bound_token => return Ok(None),
            (Some(jwks), Some(audience)) => (jwks, audience),
            _ => return Err(
                "--jwks and --audience go together (and --issuer, --require-bound-token need them)"
                    .into(),
            ),
        };
    let keys = KeySource::jwks_file(jwks)
        .start()
        .map_err(|e| e.to_string())?;
    let mut builder = JwtValidator::access_tokens(audience.as_str()).key_source(keys);
    builder = match &args.issuer {
        Some(issuer) => builder.issuer(issuer.as_str()),
        None => builder.any_issuer(),
    };
    if args.require_bound_token {
        builder = builder.require_certificate_binding();
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| format!("--jwks {jwks}: {e}"))
}

/// The routes behind the optional token and policy checks. Callers named by `--allow` pass the
/// policy on every route; everyone else is judged by it.
fn app(
    routes: Router,
    validator: Option<JwtValidator>,
    policy: Option<PolicySource>,
    allow: AllowList,
) -> LayeredRouter<tower::util::Either<Jwt<Router>, Router>> {
    let routes = match policy {
        None => routes,
        Some(policy) => {
            let authorized = AuthorizeLayer::new(policy).layer(routes.clone());
            Router::new().fallback(move |request: axum::extract::Request| {
                let (routes, authorized, allow) =
                    (routes.clone(), authorized.clone(), allow.clone());
                async move {
                    let everywhere = secure_channel::layer::peer_identity(request.extensions())
                        .is_some_and(|peer| allow.allows(peer.spiffe_id()));
                    if everywhere {
                        routes.oneshot(request).await.into_response()
                    } else {
                        match authorized.oneshot(request).await {
                            Ok(response) => response.into_response(),
                            Err(never) => match never {},
                        }
                    }
                }
            })
        }
    };
    layer_before_routing(
        routes,
        tower::util::option_layer(validator.map(JwtLayer::new)),
    )
}

async fn run(args: Args) -> Result<(), String> {
    let cert = args.cert.clone().ok_or("--cert is required")?;
    let key = args.key.clone().ok_or("--key is required")?;
    let bundle = args.bundle.clone().ok_or("--bundle is required")?;
    if args.allow.is_empty() && args.policy.is_none() {
        return Err(
            "at least one --allow (or a --policy) is required: nobody is allowed by default".into(),
        );
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
    let validator = token_validator(&args)?;
    let policy = match &args.policy {
        Some(path) => Some(
            PolicySource::from_file(path)
                .start()
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };

    let mut builder = SecureChannel::builder(source);
    let mut allow = AllowList::deny_all();
    for allowed in &args.allow {
        let matcher = IdMatcher::parse(allowed).map_err(|e| format!("--allow: {e}"))?;
        allow.push(matcher.clone());
        builder = builder.allow_client(matcher);
    }
    if let Some(policy) = &policy {
        builder = builder.allow_clients_by_policy(policy);
    }
    if args.tls12 {
        builder = builder.allow_tls12();
    }
    // The lists' errors name their file already.
    if !args.crls.is_empty() {
        let lists = RevocationLists::from_files(&args.crls)
            .start()
            .map_err(|e| format!("--crl: {e}"))?;
        builder = builder.revocation_lists(&lists);
    }
    if let Some(path) = &args.deny_list {
        let denied = DenyList::from_file(path)
            .start()
            .map_err(|e| format!("--deny-list: {e}"))?;
        builder = builder.deny_list(&denied);
    }
    if let Some(secs) = args.max_connection_age {
        builder = builder.max_connection_age(std::time::Duration::from_secs(secs));
    }
    let channel = builder.build().map_err(|e| e.to_string())?;

    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("--listen {listen}: {e}"))?;
    let listener = channel.listener(tcp).map_err(|e| e.to_string())?;
    println!("listening on {}", listener.local_addr());

    let app = app(
        Router::new().route("/whoami", get(whoami)),
        validator,
        policy,
        allow,
    );
    // The allow-list-or-policy routing above is this example's own; its layers are already in
    // the right order (layer_before_routing), so the plain hyper server serves it.
    secure_channel::integration::hyper::serve(listener, app)
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
