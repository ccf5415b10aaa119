//! X.509-SVID verification alone, without a handshake: the channel's verifier against
//! rustls-webpki's `EndEntityCert::verify_for_usage` on the same chain and trust anchors.
//!
//! - `webpki_verify_for_usage`: what rustls's stock `WebPkiClientVerifier` runs per handshake
//!   (chain building and signatures, validity, EKU), anchors prepared once;
//! - `secure_channel_uncached`: the channel's full check (SVID rules on the leaf: one URI SAN
//!   with a canonical SPIFFE ID, key usage, basic constraints; the bundle of the leaf's own trust
//!   domain; webpki; the allow-list) with the verified-chain cache bypassed: its cost per new
//!   chain;
//! - `secure_channel_cached`: the same chain seen before (a repeated peer, and the identity
//!   lookup after every handshake).
//!
//! Leaf directly under the root, and leaf under an intermediate. Uses a hidden testkit-only
//! hook (`secure_channel::tls::BenchVerifier`). Run with
//! `cargo bench --features testkit --bench svid`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rustls_pki_types::{CertificateDer, UnixTime};
use secure_channel::testkit::DevCa;
use secure_channel::tls::BenchVerifier;
use secure_channel::{CredentialSource, IdMatcher, MemorySource};

const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/web";

fn bench(c: &mut Criterion) {
    let root = DevCa::new("example.org").unwrap();
    let intermediate = root.intermediate().unwrap();
    let source = MemorySource::new(root.credentials(SERVER_ID).unwrap());
    let verifier = BenchVerifier::new(
        CredentialSource::from(&source),
        [IdMatcher::parse(CLIENT_ID).unwrap()].into_iter().collect(),
    )
    .unwrap();
    let algorithms = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let anchors = vec![
        webpki::anchor_from_trusted_cert(root.root_certificate())
            .unwrap()
            .to_owned(),
    ];
    let now = UnixTime::now();

    for (name, ca) in [
        ("leaf-root", &root),
        ("leaf-intermediate-root", &intermediate),
    ] {
        let svid = ca.svid(CLIENT_ID).issue().unwrap();
        let chain: Vec<CertificateDer<'static>> = svid.chain().to_vec();
        let (leaf, intermediates) = chain.split_first().unwrap();
        assert!(verifier.verify_uncached(&chain, now).is_ok());

        let mut group = c.benchmark_group(format!("svid_verify/{name}"));
        group.bench_function("webpki_verify_for_usage", |b| {
            b.iter(|| {
                let cert = webpki::EndEntityCert::try_from(black_box(leaf)).unwrap();
                cert.verify_for_usage(
                    algorithms,
                    &anchors,
                    intermediates,
                    now,
                    webpki::KeyUsage::client_auth(),
                    None,
                    None,
                )
                .map(|_| ())
                .unwrap()
            })
        });
        group.bench_function("secure_channel_uncached", |b| {
            b.iter(|| verifier.verify_uncached(black_box(&chain), now).unwrap())
        });
        group.bench_function("secure_channel_cached", |b| {
            b.iter(|| verifier.verify(black_box(&chain), now).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
