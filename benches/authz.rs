//! Authorization decisions against policies of 10 and 1,000 rules.
//!
//! Run with `cargo bench --bench authz`. The budget is under 1 µs per decision at 1,000 rules.

#![expect(
    clippy::expect_used,
    reason = "benchmark setup with constant, valid inputs"
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use secure_channel::authz::AuthzRequest;
use secure_channel::{AllowList, IdMatcher, SpiffeId};

#[path = "support/policy.rs"]
mod bench_policy;

use bench_policy::policy;

fn bench(c: &mut Criterion) {
    for n in [10usize, 1_000] {
        let policy = policy(n);
        let k = n / 2;
        let caller = SpiffeId::new(format!("spiffe://example.org/ns/prod/svc-{k}")).expect("id");
        let stranger = SpiffeId::new("spiffe://example.org/ns/prod/stranger").expect("id");
        let allowed_path = format!("/api/v1/svc-{k}/orders/42");
        let grpc_path = format!("/svc{k}.v1.Service/Get");
        let mut group = c.benchmark_group(format!("authz/{n}-rules"));
        group.bench_function("allow", |b| {
            b.iter(|| {
                let request = AuthzRequest::new(&caller, &Method::GET, black_box(&allowed_path));
                let decision = policy.evaluate(black_box(&request));
                assert!(decision.is_allowed());
                decision
            })
        });
        group.bench_function("allow-grpc", |b| {
            b.iter(|| {
                policy.evaluate(&AuthzRequest::new(
                    &caller,
                    &Method::POST,
                    black_box(&grpc_path),
                ))
            })
        });
        group.bench_function("default-deny", |b| {
            b.iter(|| {
                policy.evaluate(&AuthzRequest::new(
                    &stranger,
                    &Method::GET,
                    black_box(&allowed_path),
                ))
            })
        });
        group.bench_function("deny-rule", |b| {
            b.iter(|| {
                policy.evaluate(&AuthzRequest::new(
                    &caller,
                    &Method::GET,
                    black_box("/admin/users"),
                ))
            })
        });
        group.bench_function("non-canonical-path", |b| {
            let path = format!("/api/v1/svc-{k}//orders/./42/");
            b.iter(|| policy.evaluate(&AuthzRequest::new(&caller, &Method::GET, black_box(&path))))
        });
        group.bench_function("explain", |b| {
            b.iter(|| policy.explain(&caller, &Method::GET, black_box(&allowed_path)))
        });
        group.finish();
    }
}

/// ID matchers alone, and an allow-list of 1,000 matchers as a channel's `allow_client` list
/// (checked once per handshake).
fn matchers(c: &mut Criterion) {
    let id = SpiffeId::new("spiffe://example.org/ns/prod/svc-500").expect("id");
    let mut group = c.benchmark_group("id_matcher");
    for (name, pattern) in [
        ("exact", "spiffe://example.org/ns/prod/svc-500"),
        ("trust-domain", "spiffe://example.org"),
        ("prefix", "spiffe://example.org/ns/prod/*"),
    ] {
        let matcher = IdMatcher::parse(pattern).expect("matcher");
        group.bench_function(name, |b| {
            b.iter(|| black_box(&matcher).matches(black_box(&id)))
        });
    }
    let list: AllowList = (0..1_000)
        .map(|i| {
            IdMatcher::parse(&format!("spiffe://example.org/ns/prod/svc-{i}")).expect("matcher")
        })
        .collect();
    group.bench_function("allow-list/1000-exact/middle", |b| {
        b.iter(|| black_box(&list).allows(black_box(&id)))
    });
    let stranger = SpiffeId::new("spiffe://example.org/ns/prod/stranger").expect("id");
    group.bench_function("allow-list/1000-exact/none", |b| {
        b.iter(|| black_box(&list).allows(black_box(&stranger)))
    });
    group.finish();
}

criterion_group!(benches, bench, matchers);
criterion_main!(benches);
