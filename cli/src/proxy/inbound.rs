//! `proxy inbound`: flags, the channel, the listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Args;
use secure_channel::authz::PolicySource;
use secure_channel::jwt::{JwtValidator, KeySource};
use secure_channel::{AllowList, IdMatcher, SecureChannel};

use crate::failure::{Failure, Outcome};
use crate::proxy::flags::{TrustFlags, parse_listen, parse_matcher};
use crate::proxy::limits::LimitFlags;
use crate::proxy::local::LocalAddr;
use crate::proxy::{admin, http_in, serve_until_terminated, tcp_in, trust};

/// `proxy inbound`
#[derive(Debug, Args)]
pub(crate) struct InboundArgs {
    /// Address to accept mutual TLS on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443", value_parser = parse_listen)]
    pub(crate) listen: SocketAddr,
    /// The plaintext service: a loopback IP:PORT, localhost:PORT, or unix:PATH.
    #[arg(long, value_name = "ADDR|unix:PATH", value_parser = LocalAddr::parse)]
    pub(crate) backend: LocalAddr,
    /// http: per-route policy, tokens, identity headers; tcp: bytes both ways, callers
    /// admitted by --allow only.
    #[arg(long, value_enum, default_value_t = Mode::Http)]
    pub(crate) mode: Mode,
    /// tcp mode: send the backend a PROXY protocol v2 header first, with the caller's address,
    /// its SPIFFE ID (TLV 0xE0) and its leaf certificate's SHA-256 (TLV 0xE1).
    #[arg(long)]
    pub(crate) proxy_protocol: bool,
    #[command(flatten)]
    pub(crate) trust: TrustFlags,
    #[command(flatten)]
    pub(crate) limits: LimitFlags,
    /// Callers allowed on every route (repeatable): an exact ID spiffe://td/path, a trust
    /// domain spiffe://td, or a prefix spiffe://td/path/*.
    #[arg(long, value_name = "MATCHER", value_parser = parse_matcher)]
    pub(crate) allow: Vec<IdMatcher>,
    /// An authorization policy (TOML, watched): decides every caller not named by --allow,
    /// per route.
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
    /// Require a valid bearer token on every request, verified with this JWK set (watched).
    #[arg(long, value_name = "FILE", requires = "audience")]
    pub(crate) jwks: Option<PathBuf>,
    /// The audience the tokens must be for.
    #[arg(long, value_name = "AUD", requires = "jwks")]
    pub(crate) audience: Option<String>,
    /// The issuer the tokens must come from (default: any issuer of the JWK set).
    #[arg(long, value_name = "ISS", requires = "jwks")]
    pub(crate) issuer: Option<String>,
    /// Tokens must be bound to the caller's certificate (RFC 8705 cnf.x5t#S256).
    #[arg(long, requires = "jwks")]
    pub(crate) require_bound_token: bool,
    /// The header that carries the caller's SPIFFE ID to the backend; always removed from
    /// incoming requests first.
    #[arg(long, value_name = "NAME", default_value = "x-spiffe-id", value_parser = parse_header_name)]
    pub(crate) identity_header: http::HeaderName,
    /// The header that carries a validated token's subject to the backend; always removed from
    /// incoming requests first.
    #[arg(long, value_name = "NAME", default_value = "x-spiffe-token-subject", value_parser = parse_header_name)]
    pub(crate) token_subject_header: http::HeaderName,
    /// A plaintext admin listener on loopback: /healthz, /ready, /metrics (Prometheus),
    /// /status (JSON).
    #[arg(long, value_name = "ADDR", value_parser = admin::parse_admin)]
    pub(crate) admin: Option<SocketAddr>,
    /// http mode: how long the backend has to answer (status and headers) once a request has
    /// been sent whole, and the longest pause while a body is sent either way; then the caller
    /// gets 504 (408 when the caller's body stalled; an answer already started is cut short)
    /// and that backend connection is closed [default: 60].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) backend_timeout: Option<u64>,
    /// On SIGTERM: stop accepting, and give requests in flight this long to finish.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub(crate) drain_timeout: u64,
    /// Threads serving connections (default: one per CPU). In http mode each has its own
    /// listening socket (SO_REUSEPORT) and its own backend connections, as nginx's workers do.
    #[arg(long, value_name = "N", value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=1024), usize::from))]
    pub(crate) worker_threads: Option<usize>,
}

/// What the proxy forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// HTTP/1.1 and HTTP/2 requests.
    Http,
    /// A byte stream.
    Tcp,
}

impl Mode {
    pub(crate) fn role(self) -> &'static str {
        match self {
            Self::Http => "inbound http",
            Self::Tcp => "inbound tcp",
        }
    }
}

/// Refuses flags that mean nothing in `mode` (rather than ignoring them).
fn check_mode(args: &InboundArgs) -> Result<(), Failure> {
    match args.mode {
        Mode::Http if args.proxy_protocol => {
            Err(Failure::Usage("--proxy-protocol is for --mode tcp".into()))
        }
        // A byte stream has no response to wait for: a quiet backend is an idle connection.
        Mode::Tcp if args.backend_timeout.is_some() => Err(Failure::Usage(
            "--backend-timeout bounds the wait for a response: it needs --mode http".into(),
        )),
        Mode::Tcp if args.policy.is_some() || args.jwks.is_some() => Err(Failure::Usage(
            "--mode tcp admits by --allow only: --policy and --jwks need --mode http".into(),
        )),
        Mode::Tcp if args.limits.any() => Err(Failure::Usage(
            "--rate-limit, --concurrency-limit, --total-rate-limit and --limit-for limit \
             requests: they need --mode http"
                .into(),
        )),
        Mode::Tcp if args.allow.is_empty() => Err(Failure::Usage(
            "--mode tcp needs at least one --allow: nobody is allowed by default".into(),
        )),
        _ => Ok(()),
    }
}

fn parse_header_name(text: &str) -> Result<http::HeaderName, String> {
    let name = http::HeaderName::from_bytes(text.as_bytes()).map_err(|e| e.to_string())?;
    let reserved = [
        http::header::HOST,
        http::header::AUTHORIZATION,
        http::header::CONNECTION,
        http::header::CONTENT_LENGTH,
        http::header::TRANSFER_ENCODING,
    ];
    if reserved.contains(&name)
        || http_in::is_hop_by_hop(&name)
        || name == "forwarded"
        || name.as_str().starts_with("x-forwarded-")
    {
        return Err(format!("{name} is a header the proxy reads or sets itself"));
    }
    Ok(name)
}

/// Runs the inbound proxy until SIGTERM.
pub(crate) async fn run(args: InboundArgs) -> Outcome {
    if args.allow.is_empty() && args.policy.is_none() {
        return Err(Failure::Usage(
            "at least one --allow or a --policy is required: nobody is allowed by default".into(),
        ));
    }
    check_mode(&args)?;
    if args.identity_header == args.token_subject_header {
        return Err(Failure::Usage(
            "--identity-header and --token-subject-header must differ".into(),
        ));
    }
    let metrics = args.admin.map(|_| admin::install_recorder()).transpose()?;
    let (source, _jwt_svids) = trust::credentials(&args.trust).await?;
    let validator = token_validator(&args)?;
    let limits = args.limits.layer()?;
    let policy = match &args.policy {
        // The error names the file and the line.
        Some(path) => Some(
            PolicySource::from_file(path)
                .start()
                .map_err(|e| Failure::Invalid(e.to_string()))?,
        ),
        None => None,
    };

    let mut builder = SecureChannel::builder(source);
    let mut allow = AllowList::deny_all();
    for matcher in &args.allow {
        allow.push(matcher.clone());
        builder = builder.allow_client(matcher.clone());
    }
    if let Some(policy) = &policy {
        builder = builder.allow_clients_by_policy(policy);
    }
    let builder = trust::apply(&args.trust, builder)?;
    let channel = builder
        .build()
        .map_err(|e| Failure::Invalid(e.to_string()))?;

    // http mode: one socket per worker thread (see `http_in::serve_sharded`); tcp mode: one.
    let workers = match args.mode {
        Mode::Http => args.worker_threads.unwrap_or_else(default_workers),
        Mode::Tcp => 1,
    };
    let sockets = http_in::bind_shards(args.listen, workers)
        .map_err(|e| Failure::invalid(format!("--listen {}", args.listen), e))?;
    let local = sockets[0]
        .local_addr()
        .map_err(|e| Failure::invalid(format!("--listen {}", args.listen), e))?;
    let draining = Arc::new(AtomicBool::new(false));
    if let (Some(addr), Some(metrics)) = (args.admin, metrics) {
        let state = admin::Admin {
            channel: channel.clone(),
            policy: policy.clone(),
            metrics,
            draining: draining.clone(),
            role: args.mode.role(),
            listen: local.to_string(),
            upstream: args.backend.to_string(),
        };
        let admin_addr = admin::start(addr, state).await?;
        println!("admin listening on {admin_addr}");
    }
    tracing::info!(
        listen = %local,
        backend = %args.backend,
        mode = args.mode.role(),
        "inbound proxy ready"
    );
    println!("listening on {local}");
    let grace = Duration::from_secs(args.drain_timeout);
    if args.mode == Mode::Tcp {
        let socket = sockets.into_iter().next().ok_or_else(|| {
            Failure::Invalid(format!("--listen {}: no socket was bound", args.listen))
        })?;
        let listener = tokio::net::TcpListener::from_std(socket)
            .and_then(|tcp| channel.listener(tcp))
            .map_err(|e| Failure::invalid(format!("--listen {}", args.listen), e))?;
        let (backend, proxy_protocol) = (args.backend.clone(), args.proxy_protocol);
        return serve_until_terminated(grace, &draining, move |stop| {
            tcp_in::serve(listener, backend, proxy_protocol, stop)
        })
        .await;
    }
    let config = http_in::Config {
        backend: args.backend.clone(),
        identity_header: args.identity_header.clone(),
        token_subject_header: args.token_subject_header.clone(),
        allow,
        policy,
        validator,
        limits,
        backend_timeout: Duration::from_secs(
            args.backend_timeout
                .unwrap_or(super::DEFAULT_RESPONSE_TIMEOUT),
        ),
    };
    serve_until_terminated(grace, &draining, move |stop| {
        http_in::serve_sharded(channel, sockets, config, stop)
    })
    .await
}

/// One worker per CPU.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The validator of `--jwks`, `--audience`, `--issuer`, `--require-bound-token`.
fn token_validator(args: &InboundArgs) -> Result<Option<JwtValidator>, Failure> {
    let (Some(jwks), Some(audience)) = (&args.jwks, &args.audience) else {
        return Ok(None);
    };
    let keys = KeySource::jwks_file(jwks)
        .start()
        .map_err(|e| Failure::invalid(format!("--jwks {}", jwks.display()), e))?;
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
        .map_err(|e| Failure::invalid(format!("--jwks {}", jwks.display()), e))
}
