//! Per-request overhead of the Tower layers, against the bare service, through
//! `tower::ServiceExt::oneshot` on the layered service.
//!
//! Every request is built per iteration, as hyper would hand it over: method, URI, an
//! `Authorization: Bearer` header where a token layer runs, and the caller's identity as axum's
//! `ConnectInfo<PeerIdentity>` (the identity comes from a real in-memory mTLS handshake through
//! the testkit's CA). The stacks, outermost first:
//!
//! - `bare`: the service alone (no identity, no layers);
//! - `identity`: the request carries the caller's `PeerIdentity`, the handler reads it;
//! - `authorize/{10,1000}-rules`: `AuthorizeLayer` with a policy of that size;
//! - `jwt-cached/{alg}+authorize/1000-rules`: `JwtLayer` (certificate-bound token, cache warm)
//!   then `AuthorizeLayer`: the budget's "identity + authorization + cached JWT";
//! - `jwt-uncached/{alg}+authorize/1000-rules`: the same with the token cache off (signature
//!   and claims checked on every request).
//!
//! Run with `cargo bench --features testkit,axum --bench layers`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::extract::ConnectInfo;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use rustls_pki_types::ServerName;
use secure_channel::PeerIdentity;
use secure_channel::authz::PolicySource;
use secure_channel::jwt::{Algorithm, JwtValidator, KeySource};
use secure_channel::layer::authorize::AuthorizeLayer;
use secure_channel::layer::jwt::JwtLayer;
use secure_channel::testkit::{DevCa, IssuedSvid, TokenIssuer};
use tokio::io::duplex;
use tower::Layer;

#[path = "support/policy.rs"]
mod bench_policy;
#[path = "support/channels.rs"]
mod channels;
#[path = "support/handler.rs"]
mod handler;

use bench_policy::policy;
use handler::{Body, Handler, oneshot};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "https://api.test";
const SERVER_ID: &str = "spiffe://example.org/api";

/// The caller's identity as the listener sees it, from one in-memory mTLS handshake.
fn peer_identity_of(ca: &DevCa, svid: &IssuedSvid, id: &str) -> PeerIdentity {
    let pair = channels::pair(ca, SERVER_ID, svid, id);
    let (server, client) = (&pair.server, &pair.client);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (a, b) = duplex(64 * 1024);
        let name = ServerName::try_from("localhost").unwrap();
        let (server, client) = tokio::join!(server.accept(a), client.connect(name, b));
        drop(client.unwrap());
        server.unwrap().peer_identity().clone()
    })
}

struct Caller {
    id: String,
    path: String,
    peer: PeerIdentity,
    svid: IssuedSvid,
}

/// A request as hyper hands it over; `authorization` is the parsed header value, as hyper
/// would have it (every stack gets one, the bare service included).
fn request(caller: Option<&Caller>, authorization: &HeaderValue) -> Request<Body> {
    let path = caller.map_or("/api/v1/svc-0/orders/42", |c| c.path.as_str());
    let builder = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(http::header::AUTHORIZATION, authorization.clone());
    let mut request = builder.body(Full::new(Bytes::new())).unwrap();
    if let Some(caller) = caller {
        request
            .extensions_mut()
            .insert(ConnectInfo(caller.peer.clone()));
    }
    request
}

fn bench(c: &mut Criterion) {
    let ca = DevCa::new("example.org").unwrap();
    let callers: Vec<(usize, Caller)> = [10usize, 1_000]
        .into_iter()
        .map(|n| {
            let k = n / 2;
            let id = format!("spiffe://example.org/ns/prod/svc-{k}");
            let svid = ca.svid(&id).issue().unwrap();
            let peer = peer_identity_of(&ca, &svid, &id);
            let path = format!("/api/v1/svc-{k}/orders/42");
            (
                n,
                Caller {
                    id,
                    path,
                    peer,
                    svid,
                },
            )
        })
        .collect();

    // A token of the same size as the signed ones below, for the stacks without a token layer.
    let unchecked = HeaderValue::from_str(&format!("Bearer {}", "x".repeat(600))).unwrap();
    let mut group = c.benchmark_group("layers");
    group.bench_function("bare", |b| {
        b.iter(|| oneshot(&Handler, request(None, &unchecked)))
    });
    let (_, small) = &callers[0];
    group.bench_function("identity", |b| {
        b.iter(|| oneshot(&Handler, request(Some(small), &unchecked)))
    });

    for (n, caller) in &callers {
        let authorize = AuthorizeLayer::new(PolicySource::new(policy(*n))).layer(Handler);
        assert_eq!(
            oneshot(&authorize, request(Some(caller), &unchecked)).status(),
            200,
            "{}",
            caller.id
        );
        group.bench_function(format!("authorize/{n}-rules"), |b| {
            b.iter(|| oneshot(&authorize, request(Some(caller), &unchecked)))
        });
    }

    let (n, caller) = &callers[1];
    let authorize = AuthorizeLayer::new(PolicySource::new(policy(*n)));
    for (name, alg) in [
        ("ES256", Algorithm::ES256),
        ("EdDSA", Algorithm::EdDSA),
        ("RS256", Algorithm::RS256),
    ] {
        let issuer = TokenIssuer::new(ISSUER, "k1", alg).unwrap();
        let token = issuer
            .token()
            .audience(AUDIENCE)
            .subject("alice")
            .scope("orders:read orders:write")
            .bound_to_svid(&caller.svid)
            .sign()
            .unwrap();
        let token = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        let keys = KeySource::from_jwks(issuer.jwks()).unwrap();
        for (cache, capacity) in [("cached", 10_000), ("uncached", 0)] {
            let validator = JwtValidator::access_tokens(AUDIENCE)
                .issuer(ISSUER)
                .key_source(keys.clone())
                .require_certificate_binding()
                .cache_capacity(capacity)
                .build()
                .unwrap();
            let service = JwtLayer::new(validator)
                .require_scope("orders:read")
                .layer(authorize.layer(Handler));
            assert_eq!(
                oneshot(&service, request(Some(caller), &token)).status(),
                200
            );
            group.bench_function(format!("jwt-{cache}/{name}+authorize/{n}-rules"), |b| {
                b.iter(|| oneshot(&service, request(Some(caller), &token)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
