//! `proxy outbound`: a plaintext listener on this machine (loopback or a unix socket) for a
//! service that cannot link the crate, forwarding to one target over mutual TLS, the target
//! authenticated by SPIFFE ID, with a bearer token attached.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::body::Body;
use clap::Args;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use secure_channel::integration::hyper::EvictCutOffLayer;
use secure_channel::jwt::CachedTokenProvider;
use secure_channel::layer::client_token::ClientTokenLayer;
use secure_channel::{IdMatcher, SecureChannel};
use tokio::io::copy_bidirectional;
use tokio::sync::oneshot;
use tower::{Layer, ServiceExt};

use crate::failure::{Failure, Outcome};
use crate::proxy::admin::{self, BACKEND_ERRORS};
use crate::proxy::answer_timeout::{Stalled, answer_within, bound_pauses, watch_progress};
use crate::proxy::flags::{TrustFlags, parse_matcher};
use crate::proxy::inbound::Mode;
use crate::proxy::local::{LocalAddr, LocalListener, LocalStream};
use crate::proxy::token_file::FileToken;
use crate::proxy::{Tracked, retarget, serve_until_terminated, strip_hop_by_hop, trust};

/// `proxy outbound`
#[derive(Debug, Args)]
pub(crate) struct OutboundArgs {
    /// Where the local service connects, in plaintext: a loopback IP:PORT, localhost:PORT or
    /// unix:PATH (anything else is refused).
    #[arg(long, value_name = "ADDR|unix:PATH", default_value = "127.0.0.1:15001", value_parser = LocalAddr::parse)]
    pub(crate) listen: LocalAddr,
    /// The server to call over mutual TLS, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_target)]
    pub(crate) target: String,
    /// The SPIFFE IDs the target may prove (repeatable, at least one): an exact ID, a trust
    /// domain spiffe://td, or a prefix spiffe://td/path/*. Host names are never identity.
    #[arg(long = "expect-server", value_name = "MATCHER", required = true, value_parser = parse_matcher)]
    pub(crate) expect_server: Vec<IdMatcher>,
    /// http: requests, with a token attached; tcp: a byte stream.
    #[arg(long, value_enum, default_value_t = Mode::Http)]
    pub(crate) mode: Mode,
    #[command(flatten)]
    pub(crate) trust: TrustFlags,
    /// Attach `Authorization: Bearer <the file's content>` to every request (read again when
    /// the file changes).
    #[arg(long, value_name = "PATH", conflicts_with = "token_audience")]
    pub(crate) token_file: Option<PathBuf>,
    /// Attach a JWT-SVID for this audience from the Workload API (needs --workload-api),
    /// refreshed before it expires.
    #[arg(long, value_name = "AUD", requires = "workload_api")]
    pub(crate) token_audience: Option<String>,
    /// A plaintext admin listener on loopback: /healthz, /ready, /metrics, /status.
    #[arg(long, value_name = "ADDR", value_parser = admin::parse_admin)]
    pub(crate) admin: Option<std::net::SocketAddr>,
    /// http mode: how long the target has to answer (status and headers) once a request has
    /// been sent whole, and the longest pause while a body is sent either way; then the local
    /// caller gets 504 (408 when its body stalled; an answer already started is cut short) and
    /// the request is abandoned there [default: 60].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) target_timeout: Option<u64>,
    /// On SIGTERM: stop accepting, and give requests in flight this long to finish.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub(crate) drain_timeout: u64,
    /// Threads serving connections (default: one per CPU).
    #[arg(long, value_name = "N", value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=1024), usize::from))]
    pub(crate) worker_threads: Option<usize>,
}

fn parse_target(text: &str) -> Result<String, String> {
    let authority: http::uri::Authority = text
        .parse()
        .map_err(|e| format!("expected HOST:PORT: {e}"))?;
    if authority.port_u16().is_none() || authority.host().is_empty() || text.contains('@') {
        return Err("expected HOST:PORT".into());
    }
    Ok(text.to_owned())
}

/// Runs the outbound proxy until SIGTERM.
pub(crate) async fn run(args: OutboundArgs) -> Outcome {
    if args.mode == Mode::Tcp && (args.token_file.is_some() || args.token_audience.is_some()) {
        return Err(Failure::Usage(
            "tokens are attached to HTTP requests: --token-file and --token-audience need --mode http"
                .into(),
        ));
    }
    if args.mode == Mode::Tcp && args.target_timeout.is_some() {
        return Err(Failure::Usage(
            "--target-timeout bounds the wait for a response: it needs --mode http".into(),
        ));
    }
    let metrics = args.admin.map(|_| admin::install_recorder()).transpose()?;
    let (source, jwt_svids) = trust::credentials(&args.trust).await?;
    let mut builder = SecureChannel::builder(source);
    for matcher in &args.expect_server {
        builder = builder.expect_server(matcher.clone());
    }
    let channel = trust::apply(&args.trust, builder)?
        .build()
        .map_err(|e| Failure::Invalid(e.to_string()))?;
    let tokens = match (&args.token_file, &args.token_audience, jwt_svids) {
        (Some(path), _, _) => Some(ClientTokenLayer::provider(FileToken::start(path)?)),
        (None, Some(audience), Some(jwt)) => Some(ClientTokenLayer::provider(
            CachedTokenProvider::new(jwt.token_provider(audience.as_str())),
        )),
        (None, Some(_), None) => {
            return Err(Failure::Usage(
                "--token-audience needs --workload-api".into(),
            ));
        }
        (None, None, _) => None,
    };

    let listener = LocalListener::bind(&args.listen)
        .await
        .map_err(|e| Failure::invalid(format!("--listen {}", args.listen), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::invalid(format!("--listen {}", args.listen), e))?;
    let draining = Arc::new(AtomicBool::new(false));
    let role = match args.mode {
        Mode::Http => "outbound http",
        Mode::Tcp => "outbound tcp",
    };
    if let (Some(addr), Some(metrics)) = (args.admin, metrics) {
        let state = admin::Admin {
            channel: channel.clone(),
            policy: None,
            metrics,
            draining: draining.clone(),
            role,
            listen: local.to_string(),
            upstream: args.target.clone(),
        };
        let admin_addr = admin::start(addr, state).await?;
        println!("admin listening on {admin_addr}");
    }
    tracing::info!(listen = %local, target = %args.target, mode = role, "outbound proxy ready");
    println!("listening on {local}");
    let grace = Duration::from_secs(args.drain_timeout);
    let target = args.target.clone();
    match args.mode {
        Mode::Tcp => {
            serve_until_terminated(grace, &draining, move |stop| {
                serve_tcp(listener, channel, target, stop)
            })
            .await
        }
        Mode::Http => {
            let client =
                Client::builder(TokioExecutor::new()).build::<_, Body>(channel.connector());
            // One error type on both sides of the optional token layer (it boxes its own).
            let client =
                ServiceExt::<Request<Body>>::map_err(client, |e| -> BoxError { Box::new(e) });
            let client =
                EvictCutOffLayer::new().layer(tower::util::option_layer(tokens).layer(client));
            let forward = Arc::new(Forward {
                client: tower::util::BoxCloneSyncService::new(client),
                target,
                timeout: Duration::from_secs(
                    args.target_timeout
                        .unwrap_or(super::DEFAULT_RESPONSE_TIMEOUT),
                ),
            });
            serve_until_terminated(grace, &draining, move |stop| {
                serve_http(listener, forward, stop)
            })
            .await
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What each request goes through: the token layer (when configured), the pooled client over
/// the channel's connector, the pool eviction of cut-off connections.
struct Forward {
    client: tower::util::BoxCloneSyncService<Request<Body>, Response<Incoming>, BoxError>,
    target: String,
    /// The bound on the target's answer and on pauses in the bodies either way
    /// (`--target-timeout`; see `answer_timeout`).
    timeout: Duration,
}

async fn serve_http(
    listener: LocalListener,
    forward: Arc<Forward>,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = accept(&listener) => {
                let Some(stream) = accepted else { continue };
                let forward = forward.clone();
                let service = hyper::service::service_fn(move |request| {
                    let forward = forward.clone();
                    async move { Ok::<_, std::convert::Infallible>(forward_request(&forward, request).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "local connection ended with an error");
                    }
                });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn forward_request(forward: &Forward, request: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.uri = match retarget(&parts.uri, "https", &forward.target) {
        Ok(uri) => uri,
        Err(_) => return plain(StatusCode::BAD_REQUEST, "bad request target\n".into()),
    };
    // The target sees its own name, not the local listener's.
    if let Ok(host) = HeaderValue::from_str(&forward.target) {
        parts.headers.insert(header::HOST, host);
    }
    parts.version = http::Version::HTTP_11;
    let (body, sent) = watch_progress(Body::new(body));
    let request = Request::from_parts(parts, body);
    // On time-out the call is dropped, and with it the pooled connection it was on.
    let call = forward.client.clone().oneshot(request);
    let answer = match answer_within(forward.timeout, sent, call).await {
        Ok(answer) => answer,
        Err(stalled) => {
            if stalled == Stalled::NextHop {
                tracing::warn!(target = %forward.target, timeout = ?forward.timeout, "target did not answer in time: 504");
                metrics::counter!(BACKEND_ERRORS, "mode" => "http").increment(1);
            }
            return super::stalled(stalled, "target", forward.timeout);
        }
    };
    match answer {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, bound_pauses(body, forward.timeout))
        }
        Err(error) => {
            let error = crate::text::error_chain(error.as_ref());
            tracing::warn!(target = %forward.target, %error, "call failed: 502");
            metrics::counter!(BACKEND_ERRORS, "mode" => "http").increment(1);
            // The caller is local and trusted with the reason (a refused identity, say).
            plain(StatusCode::BAD_GATEWAY, format!("bad gateway: {error}\n"))
        }
    }
}

fn plain(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

async fn serve_tcp(
    listener: LocalListener,
    channel: SecureChannel,
    target: String,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let connections = Tracked::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = accept(&listener) => {
                let Some(stream) = accepted else { continue };
                let (channel, target) = (channel.clone(), target.clone());
                connections.spawn(async move { relay(stream, &channel, &target).await });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    connections.drained().await;
    Ok(())
}

/// The next local connection; `None` after a failed accept (logged, and paced: a full file
/// table must not turn the loop into a busy one).
async fn accept(listener: &LocalListener) -> Option<LocalStream> {
    match listener.accept().await {
        Ok((stream, _)) => Some(stream),
        Err(error) => {
            tracing::warn!(%error, "accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// One local connection relayed to the target over mutual TLS; a target that cannot be
/// reached (or is not who it must be) closes the local connection.
async fn relay(mut local: LocalStream, channel: &SecureChannel, target: &str) {
    let addrs = match tokio::net::lookup_host(target).await {
        Ok(addrs) => addrs.collect::<Vec<_>>(),
        Err(error) => {
            tracing::warn!(%target, %error, "cannot resolve the target");
            metrics::counter!(BACKEND_ERRORS, "mode" => "tcp").increment(1);
            return;
        }
    };
    let mut last_error = None;
    let mut connected = None;
    for addr in addrs {
        match channel.connect_tcp(addr).await {
            Ok(stream) => {
                connected = Some(stream);
                break;
            }
            Err(error) => last_error = Some(error),
        }
    }
    let Some(mut remote) = connected else {
        let error = last_error.map_or_else(|| "no address".to_owned(), |e| e.to_string());
        tracing::warn!(%target, %error, "call failed: closing the local connection");
        metrics::counter!(BACKEND_ERRORS, "mode" => "tcp").increment(1);
        return;
    };
    let server = remote.peer_identity().spiffe_id().clone();
    let cut_off = remote.cut_off_signal();
    tokio::select! {
        result = copy_bidirectional(&mut local, &mut remote) => match result {
            Ok((up, down)) => tracing::debug!(%server, up, down, "connection closed"),
            Err(error) => tracing::debug!(%server, %error, "connection ended with an error"),
        },
        cut = cut_off.cut_off() => tracing::info!(%server, %cut, "connection cut off"),
    }
}
