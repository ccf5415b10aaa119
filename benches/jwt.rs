//! Token validation: uncached (signature and claims) for ES256, EdDSA and RS256, and a cached
//! re-validation of the same token on the same connection.
//!
//! Run with `cargo bench --features testkit --bench jwt`. The cached check is expected well
//! under 2 µs (a SHA-256 of the token and a map lookup).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use rustls_pki_types::ServerName;
use secure_channel::PeerIdentity;
use secure_channel::jwt::{Algorithm, JwtValidator, KeySource, TokenError, VerifiedClaims};
use secure_channel::testkit::{DevCa, TokenIssuer};
use tokio::io::duplex;

#[path = "support/channels.rs"]
mod channels;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "https://api.test";
const CLIENT_ID: &str = "spiffe://example.org/web";
const SERVER_ID: &str = "spiffe://example.org/api";

/// The caller's identity as the listener sees it, from one in-memory mTLS handshake.
fn peer_identity() -> (PeerIdentity, secure_channel::testkit::IssuedSvid) {
    let ca = DevCa::new("example.org").unwrap();
    let client_svid = ca.svid(CLIENT_ID).issue().unwrap();
    let pair = channels::pair(&ca, SERVER_ID, &client_svid, CLIENT_ID);
    let (server, client) = (&pair.server, &pair.client);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let peer = rt.block_on(async {
        let (a, b) = duplex(64 * 1024);
        let name = ServerName::try_from("localhost").unwrap();
        let (server, client) = tokio::join!(server.accept(a), client.connect(name, b));
        drop(client.unwrap());
        server.unwrap().peer_identity().clone()
    });
    (peer, client_svid)
}

/// Validation with static keys never waits: poll it once.
fn now<F: Future<Output = Result<VerifiedClaims, TokenError>>>(fut: F) -> VerifiedClaims {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result.unwrap(),
        Poll::Pending => panic!("validation with static keys waited"),
    }
}

fn validation(c: &mut Criterion) {
    let (peer, svid) = peer_identity();
    let mut group = c.benchmark_group("jwt");
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
            .bound_to_svid(&svid)
            .sign()
            .unwrap();
        let keys = KeySource::from_jwks(issuer.jwks()).unwrap();
        let build = |capacity| {
            JwtValidator::access_tokens(AUDIENCE)
                .issuer(ISSUER)
                .key_source(keys.clone())
                .require_certificate_binding()
                .cache_capacity(capacity)
                .build()
                .unwrap()
        };
        let uncached = build(0);
        group.bench_function(format!("uncached/{name}"), |b| {
            b.iter(|| now(uncached.validate(&token, &peer)))
        });
        let cached = build(10_000);
        now(cached.validate(&token, &peer));
        group.bench_function(format!("cached/{name}"), |b| {
            b.iter(|| now(cached.validate(&token, &peer)))
        });
    }
    group.finish();
}

criterion_group!(benches, validation);
criterion_main!(benches);
