//! The policy the benchmarks authorize against, shared by `authz`, `layers` and `loadgen`
//! (each includes this file as a module).

use http::Method;
use secure_channel::authz::{Policy, Rule};

/// `n` rules shaped like a real deployment: one allow rule per calling service (its own REST
/// prefix and gRPC service), a few trust-domain-wide and deny rules.
#[expect(clippy::expect_used, reason = "a constant, valid policy")]
pub(crate) fn policy(n: usize) -> Policy {
    let mut builder = Policy::builder()
        .rule(
            Rule::deny("no-admin")
                .any_authenticated_peer()
                .route_any_method("/admin/*"),
        )
        .rule(
            Rule::allow("health")
                .principal("spiffe://example.org")
                .route_methods([Method::GET, Method::HEAD], "/health"),
        );
    for i in 0..n.saturating_sub(2) {
        builder = builder.rule(service_rule(i));
    }
    builder.build().expect("benchmark policy is valid")
}

/// The allow rule of calling service `i`: its own SPIFFE ID and batch jobs, its REST prefix
/// and gRPC service.
pub(crate) fn service_rule(i: usize) -> Rule {
    Rule::allow(format!("svc-{i}"))
        .principal(format!("spiffe://example.org/ns/prod/svc-{i}"))
        .principal(format!("spiffe://example.org/ns/batch-{i}/*"))
        .route_methods([Method::GET, Method::POST], format!("/api/v1/svc-{i}/*"))
        .route_any_method(format!("/svc{i}.v1.Service/*"))
}
