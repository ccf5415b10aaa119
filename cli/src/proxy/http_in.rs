//! The inbound proxy's HTTP service: the crate's token and authorization layers in front of a
//! handler that forwards every admitted request to the backend, with the caller's identity in
//! a header the caller cannot forge.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use secure_channel::AllowList;
use secure_channel::authz::PolicySource;
use secure_channel::integration::axum::{LayeredRouter, layer_before_routing};
use secure_channel::jwt::{JwtValidator, VerifiedClaims};
use secure_channel::layer::authorize::AuthorizeLayer;
use secure_channel::layer::jwt::{Jwt, JwtLayer};
use secure_channel::layer::rate_limit::{RateLimit, RateLimitLayer};
use tower::{Layer, ServiceExt};

use crate::proxy::admin::BACKEND_ERRORS;
use crate::proxy::answer_timeout::{Stalled, answer_within, bound_pauses, watch_progress};
use crate::proxy::local::{BackendConnector, LocalAddr};
use crate::proxy::upstream::Upstream;
use crate::proxy::{retarget, stalled};

/// What the service is built from (validated already).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) backend: LocalAddr,
    pub(crate) identity_header: HeaderName,
    pub(crate) token_subject_header: HeaderName,
    /// Callers allowed on every route (`--allow`).
    pub(crate) allow: AllowList,
    /// Decides every other caller, per route (`--policy`).
    pub(crate) policy: Option<PolicySource>,
    /// Tokens required on every request (`--jwks`).
    pub(crate) validator: Option<JwtValidator>,
    /// Per-caller limits (`--rate-limit`, `--limit-for`, ...).
    pub(crate) limits: Option<RateLimitLayer>,
    /// The bound on the backend's answer and on pauses in the bodies either way
    /// (`--backend-timeout`; see `answer_timeout`).
    pub(crate) backend_timeout: Duration,
}

/// The layers in front of the routes: limits, then tokens.
type Front = tower::util::Either<RateLimit<Tokens>, Tokens>;
type Tokens = tower::util::Either<Jwt<Router>, Router>;

/// The service `integration::hyper::serve` runs: the per-caller limits (first: they need only
/// the verified identity, and spare the token and policy checks a flood), the JWT layer, then
/// `--allow` or the policy (as echo_server decides), then the forwarding handler. The layers are
/// the crate's own, so a request is admitted exactly as in-process.
pub(crate) fn service(config: Config) -> LayeredRouter<Front> {
    let authority = config.backend.authority();
    let forwarder = Arc::new(Forwarder {
        client: Client::builder(TokioExecutor::new())
            .build(BackendConnector::new(config.backend.clone())),
        // The authority is an address or `localhost`, always a valid header value.
        host: HeaderValue::from_str(&authority).unwrap_or(HeaderValue::from_static("localhost")),
        backend: config.backend,
        authority,
        identity_header: config.identity_header,
        token_subject_header: config.token_subject_header,
        backend_timeout: config.backend_timeout,
    });
    let routes = Router::new().fallback(forward).with_state(forwarder);
    let routes = match config.policy {
        None => routes,
        Some(policy) => {
            let gate = Arc::new(Gate {
                authorized: AuthorizeLayer::new(policy).layer(routes.clone()),
                everywhere: routes,
                allow: config.allow,
            });
            Router::new().fallback(decide).with_state(gate)
        }
    };
    layer_before_routing(
        routes,
        tower::ServiceBuilder::new()
            .option_layer(config.limits)
            .option_layer(config.validator.map(JwtLayer::new)),
    )
}

/// Binds `count` listening sockets to `addr` (the first one's port for the others when `addr`
/// has port 0), with SO_REUSEPORT when there are several, so that the kernel spreads new
/// connections over them. Bound from within a runtime, handed over unregistered.
pub(crate) fn bind_shards(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let count = count.max(1);
    let mut addr = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if count > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(addr)?;
        let listener = socket.listen(1024)?.into_std()?;
        addr = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// Serves `config`'s service on every socket, each on its own thread with a single-threaded
/// runtime, its own TLS listener and its own backend connections: a request, its handshake
/// and its backend connection stay on one thread, as in nginx's workers, instead of handing
/// each request between tasks on different threads (which is what cost the proxy its CPU
/// time: wake-ups and context switches). Until `stop`; then every worker stops accepting and
/// lets its requests in flight finish. A worker that fails stops them all.
pub(crate) async fn serve_sharded(
    channel: secure_channel::SecureChannel,
    sockets: Vec<std::net::TcpListener>,
    config: Config,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let (finished, finish) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        let (channel, config, mut stopped) = (channel.clone(), config.clone(), stopped.clone());
        std::thread::Builder::new()
            .name(format!("proxy-worker-{i}"))
            .spawn(move || {
                let run = || -> std::io::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    runtime.block_on(async move {
                        let listener =
                            channel.listener(tokio::net::TcpListener::from_std(socket)?)?;
                        secure_channel::integration::hyper::serve(listener, service(config))
                            .connection_extension(Upstream::default)
                            .with_graceful_shutdown(async move {
                                let _ = stopped.wait_for(|stop| *stop).await;
                            })
                            .await
                    })
                };
                let _ = finished.send(run());
            })?;
        workers.spawn(async move {
            finish.await.unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "a worker thread ended without a result",
                ))
            })
        });
    }
    let early = tokio::select! {
        _ = stop => None,
        Some(ended) = workers.join_next() => Some(ended),
    };
    let _ = stopping.send(true);
    if let Some(ended) = early {
        let result = ended.map_err(std::io::Error::other)?;
        result?;
        return Err(std::io::Error::other("a worker stopped serving"));
    }
    while let Some(ended) = workers.join_next().await {
        ended.map_err(std::io::Error::other)??;
    }
    Ok(())
}

/// `--allow` callers pass on every route; every other caller is judged by the policy.
struct Gate {
    everywhere: Router,
    authorized: secure_channel::layer::authorize::Authorize<Router>,
    allow: AllowList,
}

async fn decide(State(gate): State<Arc<Gate>>, request: Request) -> Response {
    let everywhere = secure_channel::layer::peer_identity(request.extensions())
        .is_some_and(|peer| gate.allow.allows(peer.spiffe_id()));
    if everywhere {
        gate.everywhere
            .clone()
            .oneshot(request)
            .await
            .into_response()
    } else {
        match gate.authorized.clone().oneshot(request).await {
            Ok(response) => response.into_response(),
            Err(never) => match never {},
        }
    }
}

struct Forwarder {
    /// For CONNECT (and any request without its connection's [`Upstream`]).
    client: Client<BackendConnector, Body>,
    backend: LocalAddr,
    /// The `Host` of a request that names no authority (as hyper-util's client puts in).
    host: HeaderValue,
    /// The authority of the URIs sent to the backend.
    authority: String,
    identity_header: HeaderName,
    token_subject_header: HeaderName,
    backend_timeout: Duration,
}

/// Headers that describe one hop's connection and never travel further (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Headers about the client that only this proxy may say: removed from what callers send.
const FORWARDING: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
];

/// Whether `name` is a hop-by-hop header (never forwarded, so never an identity header).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || name == header::UPGRADE
}

/// Removes the hop-by-hop headers, and those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none: one look at each name present instead of a lookup of each name
    // of the list (a `Connection` header that names others is itself hop-by-hop).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

async fn forward(State(forwarder): State<Arc<Forwarder>>, request: Request) -> Response {
    let Some(peer) = secure_channel::layer::peer_identity(request.extensions()).cloned() else {
        // Only the secure server puts an identity in; without one nothing is forwarded.
        return (StatusCode::UNAUTHORIZED, "no verified peer identity\n").into_response();
    };
    let subject = request
        .extensions()
        .get::<VerifiedClaims>()
        .and_then(|claims| claims.subject().map(str::to_owned));
    let remote = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let (mut parts, body) = request.into_parts();

    // Anti-spoofing: whatever the caller sent under these names is gone before we set them.
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    let ours = |name: &HeaderName| {
        *name == forwarder.identity_header
            || *name == forwarder.token_subject_header
            || FORWARDING.contains(&name.as_str())
    };
    if headers.keys().any(ours) {
        headers.remove(&forwarder.identity_header);
        headers.remove(&forwarder.token_subject_header);
        for name in FORWARDING {
            headers.remove(name);
        }
    }
    if let Ok(value) = header_value(peer.spiffe_id().to_string()) {
        headers.insert(forwarder.identity_header.clone(), value);
    }
    if let Some(subject) = subject {
        match HeaderValue::from_str(&subject) {
            Ok(value) => {
                headers.insert(forwarder.token_subject_header.clone(), value);
            }
            Err(_) => {
                tracing::warn!("the token's subject cannot be a header value; not forwarded");
            }
        }
    }
    if let Some(remote) = remote
        && let Ok(value) = header_value(remote.ip().to_string())
    {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    // HTTP/2 callers name the authority in the URI: HTTP/1.1 backends want it in Host.
    if !headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, value);
    }
    // The caller's connection's own backend connections; CONNECT: the pooled client.
    let upstream = match parts.method {
        Method::CONNECT => None,
        _ => parts.extensions.remove::<Upstream>(),
    };
    let one_at_a_time = parts.version <= Version::HTTP_11;
    parts.version = Version::HTTP_11;
    let timeout = forwarder.backend_timeout;
    let (body, sent) = watch_progress(body);
    let answer = match upstream {
        Some(upstream) => {
            set_host_if_missing(&mut parts.headers, &forwarder.host);
            parts.uri = origin_form(&parts.uri);
            let request = http::Request::from_parts(parts, body);
            // On time-out the send is dropped, and with it the backend connection it holds:
            // a response that comes later has nowhere to go.
            let send = upstream.send(&forwarder.backend, request, one_at_a_time);
            answer_within(timeout, sent, send).await
        }
        None => {
            parts.uri = match retarget(&parts.uri, "http", &forwarder.authority) {
                Ok(uri) => uri,
                Err(error) => {
                    tracing::debug!(%error, "request target cannot be forwarded");
                    return (StatusCode::BAD_REQUEST, "bad request target\n").into_response();
                }
            };
            let request = forwarder
                .client
                .request(http::Request::from_parts(parts, body));
            answer_within(timeout, sent, async { request.await.map_err(Into::into) }).await
        }
    };
    match answer {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, bound_pauses(body, timeout))
        }
        Ok(Err(error)) => {
            let error = crate::text::error_chain(&*error);
            tracing::warn!(peer = %peer.spiffe_id(), %error, "backend unreachable: 502");
            metrics::counter!(BACKEND_ERRORS, "mode" => "http").increment(1);
            (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "text/plain")],
                "bad gateway: the backend did not answer\n",
            )
                .into_response()
        }
        Err(Stalled::NextHop) => {
            tracing::warn!(peer = %peer.spiffe_id(), ?timeout, "backend did not answer in time: 504");
            metrics::counter!(BACKEND_ERRORS, "mode" => "http").increment(1);
            stalled(Stalled::NextHop, "backend", timeout)
        }
        Err(Stalled::Caller) => {
            tracing::info!(peer = %peer.spiffe_id(), ?timeout, "the caller's request body stalled: 408");
            stalled(Stalled::Caller, "backend", timeout)
        }
    }
}

/// `text` as a header value, without copying it.
fn header_value(text: String) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
}

/// Adds `host` as the `Host` header when there is none (as hyper-util's client does).
fn set_host_if_missing(headers: &mut HeaderMap, host: &HeaderValue) {
    if !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, host.clone());
    }
}

/// `uri`'s path and query alone, the request target an HTTP/1.1 origin server is sent.
fn origin_form(uri: &Uri) -> Uri {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return uri.clone();
    }
    uri.path_and_query()
        .cloned()
        .map_or_else(|| Uri::from_static("/"), Uri::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }
}
