//! Unit tests of the authorization room: matchers, policy semantics, files, reload, audit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use serde_json::json;
use spiffe::SpiffeId;

use super::*;
use crate::jwt::VerifiedClaims;

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

fn claims(value: serde_json::Value) -> VerifiedClaims {
    match value {
        serde_json::Value::Object(map) => VerifiedClaims::new(map),
        _ => panic!("claims must be an object"),
    }
}

fn allowed(policy: &Policy, caller: &str, method: Method, path: &str) -> bool {
    policy.explain(&id(caller), &method, path).is_allowed()
}

#[test]
fn principal_table() {
    let cases: &[(&str, &str, bool)] = &[
        ("spiffe://example.org/web", "spiffe://example.org/web", true),
        (
            "spiffe://example.org/web",
            "spiffe://example.org/web2",
            false,
        ),
        (
            "spiffe://example.org/web",
            "spiffe://example.org/web/x",
            false,
        ),
        (
            "spiffe://example.org/web",
            "spiffe://example.org/Web",
            false,
        ),
        ("spiffe://example.org/web", "spiffe://other.org/web", false),
        (
            "spiffe://example.org/a/b",
            "spiffe://example.org/a/bc",
            false,
        ),
        (
            "spiffe://example.org/billing/*",
            "spiffe://example.org/billing/api",
            true,
        ),
        (
            "spiffe://example.org/billing/*",
            "spiffe://example.org/billing/api/v2",
            true,
        ),
        (
            "spiffe://example.org/billing/*",
            "spiffe://example.org/billing",
            false,
        ),
        (
            "spiffe://example.org/billing/*",
            "spiffe://example.org/billingx/api",
            false,
        ),
        (
            "spiffe://example.org/billing/*",
            "spiffe://other.org/billing/api",
            false,
        ),
        (
            "spiffe://example.org",
            "spiffe://example.org/anything/at/all",
            true,
        ),
        ("spiffe://example.org", "spiffe://example.org.evil/a", false),
        ("spiffe://example.org", "spiffe://other.org/a", false),
        ("spiffe://example.org/*", "spiffe://example.org/a", true),
        ("*", "spiffe://anything.example/a", true),
    ];
    for (principal, caller, expected) in cases {
        let policy = Policy::builder()
            .rule(
                Rule::allow("r")
                    .principal(*principal)
                    .route_any_method("/*"),
            )
            .build()
            .unwrap();
        assert_eq!(
            allowed(&policy, caller, Method::GET, "/x"),
            *expected,
            "{principal} vs {caller}"
        );
        // Whatever the principal, the handshake pre-check agrees with the decision.
        assert_eq!(
            policy.could_ever_allow(&id(caller)),
            *expected,
            "{principal} vs {caller}"
        );
    }
}

#[test]
fn route_table() {
    // (methods or None for any, route path, request method, request path, expected)
    type Case<'a> = (Option<&'a [Method]>, &'a str, Method, &'a str, bool);
    let cases: &[Case<'_>] = &[
        (Some(&[Method::GET]), "/a/b", Method::GET, "/a/b", true),
        (Some(&[Method::GET]), "/a/b", Method::GET, "/a/bc", false),
        (Some(&[Method::GET]), "/a/b", Method::GET, "/a/b/c", false),
        (Some(&[Method::GET]), "/a/b", Method::GET, "/a", false),
        (Some(&[Method::GET]), "/a/b", Method::GET, "/A/b", false),
        (Some(&[Method::GET]), "/a/b", Method::POST, "/a/b", false),
        (Some(&[Method::GET]), "/a/b", Method::HEAD, "/a/b", false),
        (
            Some(&[Method::GET, Method::PUT]),
            "/a/b",
            Method::PUT,
            "/a/b",
            true,
        ),
        (None, "/a/b", Method::DELETE, "/a/b", true),
        (None, "/a/b/*", Method::GET, "/a/b/c", true),
        (None, "/a/b/*", Method::GET, "/a/b/c/d", true),
        (None, "/a/b/*", Method::GET, "/a/b", false),
        (None, "/a/b/*", Method::GET, "/a/bc", false),
        (None, "/a/b/*", Method::GET, "/a/bc/d", false),
        (None, "/a/b/*", Method::GET, "/a", false),
        (None, "/*", Method::GET, "/", true),
        (None, "/*", Method::GET, "/x/y/z", true),
        (None, "/", Method::GET, "/", true),
        (None, "/", Method::GET, "/x", false),
        // Trailing slash: `/a/` is `/a`.
        (None, "/a/b", Method::GET, "/a/b/", true),
        (None, "/a/b/*", Method::GET, "/a/b/", false),
        // gRPC.
        (None, "/pkg.Svc/Get", Method::POST, "/pkg.Svc/Get", true),
        (None, "/pkg.Svc/Get", Method::POST, "/pkg.Svc/GetAll", false),
        (None, "/pkg.Svc/*", Method::POST, "/pkg.Svc/Put", true),
        (None, "/pkg.Svc/*", Method::POST, "/pkg.SvcAdmin/Put", false),
        (None, "/pkg.Svc/*", Method::POST, "/pkg.Svc", false),
        // Encoded and dot-segment paths.
        (None, "/a/b", Method::GET, "/a/%62", true),
        (None, "/a/b", Method::GET, "/a//b", true),
        (None, "/a/b", Method::GET, "/a/./b", true),
        (None, "/a/b", Method::GET, "/a/x/../b", true),
        (None, "/a/b/*", Method::GET, "/a/b/../c", false),
        (None, "/a/b/*", Method::GET, "/a/b/%2e%2e/c", false),
        (None, "/a/b/*", Method::GET, "/a/b/..%2Fc", false),
        (None, "/a/b/*", Method::GET, "/a/b%2Fc", false),
        (None, "/a/b/*", Method::GET, "/a/b/c%00", false),
        (None, "/a/b/*", Method::GET, "/a/b/c\\..\\..\\x", false),
        (None, "/a/b/*", Method::GET, "/a/b/c/../../../x", false),
    ];
    for (methods, route, method, path, expected) in cases {
        let rule = Rule::allow("r").principal("spiffe://example.org/web");
        let rule = match methods {
            Some(methods) => rule.route_methods(methods.iter().cloned(), *route),
            None => rule.route_any_method(*route),
        };
        let policy = Policy::builder().rule(rule).build().unwrap();
        assert_eq!(
            allowed(&policy, "spiffe://example.org/web", method.clone(), path),
            *expected,
            "{methods:?} {route} vs {method} {path}"
        );
    }
}

#[test]
fn extension_methods_from_code() {
    let propfind = Method::from_bytes(b"PROPFIND").unwrap();
    let policy = Policy::builder()
        .rule(
            Rule::allow("dav")
                .principal("spiffe://example.org/web")
                .route(propfind.clone(), "/dav/*"),
        )
        .build()
        .unwrap();
    assert!(allowed(
        &policy,
        "spiffe://example.org/web",
        propfind,
        "/dav/x"
    ));
    assert!(!allowed(
        &policy,
        "spiffe://example.org/web",
        Method::GET,
        "/dav/x"
    ));
    let lower = Method::from_bytes(b"propfind").unwrap();
    assert!(!allowed(
        &policy,
        "spiffe://example.org/web",
        lower,
        "/dav/x"
    ));
}

#[test]
fn empty_policy_denies_everything() {
    for policy in [Policy::deny_all(), Policy::builder().build().unwrap()] {
        let d = policy.explain(&id("spiffe://example.org/a"), &Method::GET, "/");
        assert!(!d.is_allowed());
        assert!(!d.passes());
        assert_eq!(d.deny_reason(), Some(DenyReason::NoMatchingRule));
        assert!(d.rule().is_none());
        assert!(!policy.could_ever_allow(&id("spiffe://example.org/a")));
        assert_eq!(policy.principals().map(|l| l.is_empty()), Some(true));
    }
}

#[test]
fn invalid_paths_are_denied_with_their_own_reason() {
    let policy = Policy::builder()
        .rule(
            Rule::allow("all")
                .any_authenticated_peer()
                .route_any_method("/*"),
        )
        .build()
        .unwrap();
    for (path, reason) in [
        ("/a%2Fb", PathError::EncodedSeparator),
        ("/a%5Cb", PathError::EncodedSeparator),
        ("/a\\b", PathError::Backslash),
        ("/a%00", PathError::ControlCharacter),
        ("/a%FF", PathError::InvalidUtf8),
        ("/a%zz", PathError::MalformedEscape),
        ("/..", PathError::EscapesRoot),
        ("*", PathError::NotAbsolute),
    ] {
        let d = policy.explain(&id("spiffe://example.org/a"), &Method::GET, path);
        assert!(!d.is_allowed(), "{path}");
        assert_eq!(
            d.deny_reason(),
            Some(DenyReason::InvalidPath(reason)),
            "{path}"
        );
    }
    assert!(allowed(
        &policy,
        "spiffe://example.org/a",
        Method::GET,
        "/a/b"
    ));
}

#[test]
fn deny_wins_over_allow_in_any_order() {
    let allow = Rule::allow("allow-api")
        .principal("spiffe://example.org")
        .route_any_method("/api/*");
    let deny = Rule::deny("deny-admin")
        .principal("spiffe://example.org/web")
        .route_any_method("/api/admin/*");
    for rules in [vec![allow.clone(), deny.clone()], vec![deny, allow]] {
        let policy = Policy::builder().rules(rules).build().unwrap();
        let d = policy.explain(
            &id("spiffe://example.org/web"),
            &Method::GET,
            "/api/admin/x",
        );
        assert!(!d.is_allowed());
        assert_eq!(d.deny_reason(), Some(DenyReason::DenyRule));
        assert_eq!(d.rule_name(), Some("deny-admin"));
        assert_eq!(d.rule().map(|r| r.effect()), Some(Effect::Deny));
        // Encoded and dot-segment detours do not get around a deny rule.
        for detour in [
            "/api/%61dmin/x",
            "/api/x/../admin/x",
            "/api//admin/x/",
            "/api/./admin/x",
        ] {
            let d = policy.explain(&id("spiffe://example.org/web"), &Method::GET, detour);
            assert_eq!(d.rule_name(), Some("deny-admin"), "{detour}");
        }
        // Other callers and routes are still allowed.
        let d = policy.explain(
            &id("spiffe://example.org/batch"),
            &Method::GET,
            "/api/admin/x",
        );
        assert_eq!(d.rule_name(), Some("allow-api"));
        assert!(allowed(
            &policy,
            "spiffe://example.org/web",
            Method::GET,
            "/api/users"
        ));
    }
}

#[test]
fn the_first_matching_allow_rule_is_reported() {
    let policy = Policy::builder()
        .rule(
            Rule::allow("narrow")
                .principal("spiffe://example.org/web")
                .route(Method::GET, "/a/b"),
        )
        .rule(
            Rule::allow("broad")
                .principal("spiffe://example.org")
                .route_any_method("/a/*"),
        )
        .build()
        .unwrap();
    let d = policy.explain(&id("spiffe://example.org/web"), &Method::GET, "/a/b");
    assert_eq!(d.rule_name(), Some("narrow"));
    assert_eq!(d.rule().map(RuleRef::index), Some(0));
    let d = policy.explain(&id("spiffe://example.org/web"), &Method::POST, "/a/b");
    assert_eq!(d.rule_name(), Some("broad"));
    assert_eq!(d.rule().map(RuleRef::index), Some(1));
}

#[test]
fn shadow_rules_are_evaluated_but_do_not_decide() {
    let policy = Policy::builder()
        .rule(
            Rule::allow("api")
                .principal("spiffe://example.org")
                .route_any_method("/api/*"),
        )
        .rule(
            Rule::deny("lockdown")
                .principal("spiffe://example.org/web")
                .route_any_method("/api/*")
                .shadow(),
        )
        .rule(
            Rule::allow("partner")
                .principal("spiffe://partner.org")
                .route_any_method("/api/*")
                .shadow(),
        )
        .build()
        .unwrap();

    // A shadow deny does not deny; it says it would.
    let d = policy.explain(&id("spiffe://example.org/web"), &Method::GET, "/api/x");
    assert!(d.is_allowed());
    assert_eq!(d.rule_name(), Some("api"));
    let shadow = d.shadow().unwrap();
    assert!(!shadow.would_allow());
    assert_eq!(shadow.rule().map(RuleRef::name), Some("lockdown"));
    assert_eq!(shadow.rule().map(RuleRef::is_shadow), Some(true));

    // A shadow allow does not allow; it says it would.
    let d = policy.explain(&id("spiffe://partner.org/x"), &Method::GET, "/api/x");
    assert!(!d.is_allowed());
    assert_eq!(d.deny_reason(), Some(DenyReason::NoMatchingRule));
    let shadow = d.shadow().unwrap();
    assert!(shadow.would_allow());
    assert_eq!(shadow.rule().map(RuleRef::name), Some("partner"));

    // No shadow rule matched: no shadow verdict.
    let d = policy.explain(&id("spiffe://example.org/batch"), &Method::GET, "/api/x");
    assert!(d.is_allowed());
    assert!(d.shadow().is_none());

    // The handshake pre-check ignores shadow allow rules.
    assert!(!policy.could_ever_allow(&id("spiffe://partner.org/x")));

    // Counted as would-allow / would-deny per shadow rule.
    let caller = id("spiffe://example.org/web");
    policy.authorize(&AuthzRequest::new(&caller, &Method::GET, "/api/x"));
    let partner = id("spiffe://partner.org/x");
    policy.authorize(&AuthzRequest::new(&partner, &Method::GET, "/api/x"));
    let stats = policy.stats();
    assert_eq!(stats.rule("lockdown").map(RuleStats::would_deny), Some(1));
    assert_eq!(stats.rule("lockdown").map(RuleStats::denied), Some(0));
    assert_eq!(stats.rule("partner").map(RuleStats::would_allow), Some(1));
    assert_eq!(stats.rule("partner").map(RuleStats::allowed), Some(0));
    assert_eq!(stats.rule("api").map(RuleStats::allowed), Some(1));
}

#[test]
fn dry_run_decides_but_lets_everything_pass() {
    let policy = Policy::builder()
        .rule(
            Rule::allow("web")
                .principal("spiffe://example.org/web")
                .route(Method::GET, "/a"),
        )
        .dry_run()
        .build()
        .unwrap();
    assert_eq!(policy.mode(), Mode::DryRun);
    let d = policy.explain(&id("spiffe://example.org/other"), &Method::GET, "/a");
    assert!(!d.is_allowed());
    assert!(d.is_dry_run());
    assert!(d.passes());
    assert_eq!(d.deny_reason(), Some(DenyReason::NoMatchingRule));
    let d = policy.explain(&id("spiffe://example.org/web"), &Method::GET, "/a");
    assert!(d.is_allowed() && d.passes());
    // Any peer may pass a dry-run policy, so the handshake must not refuse anyone.
    assert!(policy.could_ever_allow(&id("spiffe://other.org/x")));
    assert!(policy.principals().is_none());

    let enforced = Policy::builder()
        .rule(
            Rule::allow("web")
                .principal("spiffe://example.org/web")
                .route(Method::GET, "/a"),
        )
        .build()
        .unwrap();
    let d = enforced.explain(&id("spiffe://example.org/other"), &Method::GET, "/a");
    assert!(!d.passes());
}

#[test]
fn conditions_on_claims() {
    let policy = Policy::builder()
        .rule(
            Rule::allow("writer")
                .principal("spiffe://example.org/web")
                .route(Method::POST, "/orders")
                .require_scope("orders.write")
                .require_claim("tenant", "acme")
                .require_claim("level", 3)
                .require_claim("admin", false),
        )
        .build()
        .unwrap();
    let web = id("spiffe://example.org/web");
    let check = |c: Option<&VerifiedClaims>| {
        policy
            .evaluate(&AuthzRequest::new(&web, &Method::POST, "/orders").with_claims(c))
            .is_allowed()
    };
    let good = claims(
        json!({"scope": "orders.read orders.write", "tenant": "acme", "level": 3, "admin": false}),
    );
    assert!(check(Some(&good)));
    assert!(
        policy
            .explain_with_claims(&web, &Method::POST, "/orders", &good)
            .is_allowed()
    );
    let scp =
        claims(json!({"scp": ["orders.write"], "tenant": "acme", "level": 3, "admin": false}));
    assert!(check(Some(&scp)));
    // No claims at all: a rule with conditions never matches.
    assert!(!check(None));
    for bad in [
        json!({"scope": "orders.read", "tenant": "acme", "level": 3, "admin": false}),
        json!({"scope": "orders.writer", "tenant": "acme", "level": 3, "admin": false}),
        json!({"scope": "orders.write", "tenant": "Acme", "level": 3, "admin": false}),
        json!({"scope": "orders.write", "level": 3, "admin": false}),
        json!({"scope": "orders.write", "tenant": "acme", "level": "3", "admin": false}),
        json!({"scope": "orders.write", "tenant": "acme", "level": 3, "admin": true}),
        json!({"scope": "orders.write", "tenant": ["acme"], "level": 3, "admin": false}),
    ] {
        assert!(!check(Some(&claims(bad.clone()))), "{bad}");
    }
    // Conditions do not bypass principals and routes.
    let other = id("spiffe://example.org/other");
    assert!(
        !policy
            .explain_with_claims(&other, &Method::POST, "/orders", &good)
            .is_allowed()
    );
}

#[test]
fn deny_rules_with_conditions_only_apply_with_matching_claims() {
    let policy = Policy::builder()
        .rule(
            Rule::allow("all")
                .principal("spiffe://example.org")
                .route_any_method("/*"),
        )
        .rule(
            Rule::deny("no-guests")
                .principal("spiffe://example.org")
                .route_any_method("/*")
                .require_claim("role", "guest"),
        )
        .build()
        .unwrap();
    let web = id("spiffe://example.org/web");
    let guest = claims(json!({"role": "guest"}));
    assert!(
        !policy
            .explain_with_claims(&web, &Method::GET, "/x", &guest)
            .is_allowed()
    );
    assert!(policy.explain(&web, &Method::GET, "/x").is_allowed());
}

#[test]
fn handshake_principals() {
    let policy = Policy::builder()
        .rule(
            Rule::allow("a")
                .principal("spiffe://example.org/a")
                .route_any_method("/*"),
        )
        .rule(
            Rule::allow("b")
                .principal("spiffe://example.org/b/*")
                .route_any_method("/*"),
        )
        .rule(
            Rule::deny("d")
                .principal("spiffe://other.org")
                .route_any_method("/*"),
        )
        .build()
        .unwrap();
    let list = policy.principals().unwrap();
    assert_eq!(
        list.to_string(),
        "[spiffe://example.org/a, spiffe://example.org/b/*]"
    );
    assert!(policy.could_ever_allow(&id("spiffe://example.org/b/x")));
    assert!(!policy.could_ever_allow(&id("spiffe://example.org/b")));
    assert!(!policy.could_ever_allow(&id("spiffe://other.org/a")));

    let any = Policy::builder()
        .rule(
            Rule::allow("any")
                .any_authenticated_peer()
                .route(Method::GET, "/health"),
        )
        .build()
        .unwrap();
    assert!(any.principals().is_none());
    assert!(any.could_ever_allow(&id("spiffe://other.org/a")));
}

#[test]
fn builder_refuses_unsafe_or_invalid_rules() {
    let base = || {
        Rule::allow("r")
            .principal("spiffe://example.org/a")
            .route_any_method("/a")
    };
    let cases: Vec<(Rule, &str)> = vec![
        (
            Rule::allow("r")
                .principal("spiffe://example.org/bill*")
                .route_any_method("/a"),
            "principals",
        ),
        (
            Rule::allow("r")
                .principal("spiffe://Example.org/a")
                .route_any_method("/a"),
            "principals",
        ),
        (
            Rule::allow("r")
                .principal("example.org/a")
                .route_any_method("/a"),
            "principals",
        ),
        (
            Rule::allow("r").principal("**").route_any_method("/a"),
            "principals",
        ),
        (Rule::allow("r").route_any_method("/a"), "principals"),
        (
            Rule::allow("r").principal("spiffe://example.org/a"),
            "routes",
        ),
        (
            Rule::allow("r")
                .principal("spiffe://example.org/a")
                .route_methods([], "/a"),
            "methods",
        ),
        (base().route_any_method("/a/"), "path"),
        (base().route_any_method("/a//b"), "path"),
        (base().route_any_method("/a/../b"), "path"),
        (base().route_any_method("/a*"), "path"),
        (base().route_any_method("/a%2Fb"), "path"),
        (base().route_any_method("a"), "path"),
        (base().route(Method::GET, "/orders/{id}"), "path"),
        (base().route(Method::GET, "/admin/{*rest}"), "path"),
        (base().require_scope(""), "scopes"),
        (base().require_scope("a b"), "scopes"),
        (base().require_claim("tenant", json!(["a"])), "claims"),
        (base().require_claim("tenant", json!(1.5)), "claims"),
        (base().require_claim("", "x"), "claims"),
        (
            Rule::allow("")
                .principal("spiffe://example.org/a")
                .route_any_method("/a"),
            "name",
        ),
        (
            Rule::allow("has space")
                .principal("spiffe://example.org/a")
                .route_any_method("/a"),
            "name",
        ),
        (
            Rule::allow("n".repeat(65))
                .principal("spiffe://example.org/a")
                .route_any_method("/a"),
            "name",
        ),
    ];
    for (rule, field) in cases {
        let debug = format!("{rule:?}");
        let err = Policy::builder().rule(rule).build().unwrap_err();
        assert!(
            matches!(err, PolicyError::InvalidRule { .. }),
            "{debug}: {err}"
        );
        assert_eq!(err.field(), Some(field), "{debug}: {err}");
        assert_eq!(err.line(), None);
    }
    // An axum route pattern: the error names the rule and the wildcard form to write.
    let err = Policy::builder()
        .rule(base().route(Method::GET, "/admin/{*rest}"))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rule \"r\", field `path`: looks like an axum route pattern (`{*rest}`), which never \
         matches: policy paths match request paths; write `/admin/*` (every path below \
         `/admin`, in whole segments) (got \"/admin/{*rest}\")"
    );
    let err = Policy::builder()
        .rule(base())
        .rule(base())
        .build()
        .unwrap_err();
    assert!(
        matches!(err, PolicyError::DuplicateRuleName { ref name, .. } if name == "r"),
        "{err}"
    );
    assert_eq!(err.field(), Some("name"));
    // The boundaries of what is valid: a 64-character name, any integer claim value.
    let rule = |name: String| {
        Rule::allow(name)
            .principal("spiffe://example.org/a")
            .route_any_method("/a")
    };
    assert!(Policy::builder().rule(rule("n".repeat(64))).build().is_ok());
    for value in [json!(-1), json!(u64::MAX)] {
        let rule = rule("r".into()).require_claim("level", value.clone());
        assert!(Policy::builder().rule(rule).build().is_ok(), "{value}");
    }
}

const EXAMPLE: &str = r#"
mode = "enforce"

[[rule]]
name = "web-reads-orders"
effect = "allow"
principals = ["spiffe://example.org/web", "spiffe://example.org/batch/*"]
routes = [
  { methods = ["GET"], path = "/orders/*" },
  { path = "/orders.v1.Orders/Get" },
]
[rule.when]
scopes = ["orders.read"]
claims = { tenant = "acme" }

[[rule]]
name = "nobody-on-admin"
effect = "deny"
principals = ["*"]
routes = [{ path = "/orders/admin/*" }]

[[rule]]
name = "health"
effect = "allow"
principals = ["spiffe://example.org"]
routes = [{ methods = ["GET", "HEAD"], path = "/health" }]

[[rule]]
name = "partner-writes"
effect = "allow"
shadow = true
principals = ["spiffe://partner.example"]
routes = [{ methods = ["POST"], path = "/orders" }]
"#;

#[test]
fn toml_example_policy() {
    let policy = Policy::from_toml(EXAMPLE).unwrap();
    assert_eq!(policy.len(), 4);
    assert_eq!(
        policy.rule_names().collect::<Vec<_>>(),
        [
            "web-reads-orders",
            "nobody-on-admin",
            "health",
            "partner-writes"
        ]
    );
    let web = id("spiffe://example.org/web");
    let c = claims(json!({"scope": "orders.read", "tenant": "acme"}));
    assert!(
        policy
            .explain_with_claims(&web, &Method::GET, "/orders/1", &c)
            .is_allowed()
    );
    assert!(!policy.explain(&web, &Method::GET, "/orders/1").is_allowed());
    assert!(
        !policy
            .explain_with_claims(&web, &Method::GET, "/orders/admin/x", &c)
            .is_allowed()
    );
    assert!(
        policy
            .explain_with_claims(&web, &Method::POST, "/orders.v1.Orders/Get", &c)
            .is_allowed()
    );
    assert!(policy.explain(&web, &Method::HEAD, "/health").is_allowed());
    assert!(!policy.explain(&web, &Method::POST, "/health").is_allowed());
    let partner = id("spiffe://partner.example/x");
    let d = policy.explain(&partner, &Method::POST, "/orders");
    assert!(!d.is_allowed());
    assert_eq!(d.shadow().map(ShadowVerdict::would_allow), Some(true));
    assert!(
        policy
            .to_string()
            .contains("#1 deny \"nobody-on-admin\": * -> * /orders/admin/*")
    );

    let dry = Policy::from_toml("mode = \"dry-run\"\n").unwrap();
    assert_eq!(dry.mode(), Mode::DryRun);
    assert!(dry.is_empty());
}

/// (file, line, field or text that the message must name)
fn toml_error(text: &str) -> PolicyError {
    Policy::from_toml(text).unwrap_err()
}

#[test]
fn toml_errors_name_line_and_field() {
    // The body starts on line 5 (the rule table on line 2).
    let rule =
        |body: &str| format!("# comment\n[[rule]]\nname = \"r\"\neffect = \"allow\"\n{body}");
    // (text, line, field for InvalidRule or a word of the parser message)
    let cases: Vec<(String, u32, &str)> = vec![
        (
            rule("principals = [\"spiffe://example.org/bill*\"]\nroutes = [{ path = \"/a\" }]\n"),
            5,
            "principals",
        ),
        (
            rule(
                "principals = [\n  \"spiffe://example.org/a\",\n  \"spiffe://example.org/bill*\",\n]\nroutes = [{ path = \"/a\" }]\n",
            ),
            7,
            "principals",
        ),
        (
            rule("principals = []\nroutes = [{ path = \"/a\" }]\n"),
            5,
            "principals",
        ),
        (rule("principals = [\"*\"]\nroutes = []\n"), 6, "routes"),
        (
            rule("principals = [\"*\"]\nroutes = [{ path = \"/a/\" }]\n"),
            6,
            "path",
        ),
        (
            rule(
                "principals = [\"*\"]\n\nroutes = [\n  { path = \"/ok\" },\n  { path = \"/a/../b\" },\n]\n",
            ),
            9,
            "path",
        ),
        // An axum route pattern never matches a request path.
        (
            rule("principals = [\"*\"]\nroutes = [{ path = \"/orders/{id}\" }]\n"),
            6,
            "path",
        ),
        (
            rule("principals = [\"*\"]\nroutes = [{ methods = [\"get\"], path = \"/a\" }]\n"),
            6,
            "methods",
        ),
        (
            rule("principals = [\"*\"]\nroutes = [{ methods = [\"FETCH\"], path = \"/a\" }]\n"),
            6,
            "methods",
        ),
        (
            rule("principals = [\"*\"]\nroutes = [{ methods = [], path = \"/a\" }]\n"),
            6,
            "methods",
        ),
        (
            rule(
                "principals = [\"*\"]\nroutes = [{ path = \"/a\" }]\n[rule.when]\nscopes = [\"\"]\n",
            ),
            8,
            "scopes",
        ),
        (
            rule(
                "principals = [\"*\"]\nroutes = [{ path = \"/a\" }]\n[rule.when]\nclaims = { tenant = [\"a\"] }\n",
            ),
            8,
            "claims",
        ),
        (
            rule(
                "principals = [\"*\"]\nroutes = [{ path = \"/a\" }]\n[rule.when]\nclaims = { ratio = 0.5 }\n",
            ),
            8,
            "claims",
        ),
    ];
    for (text, line, field) in &cases {
        let err = toml_error(text);
        assert!(
            matches!(err, PolicyError::InvalidRule { .. }),
            "{text}\n=> {err}"
        );
        assert_eq!(err.line(), Some(*line), "{text}\n=> {err}");
        assert_eq!(err.field(), Some(*field), "{text}\n=> {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("line {line}: rule \"r\", field `{field}`")),
            "{err}"
        );
    }

    // Schema errors: unknown fields, missing fields, wrong values (the parser names the field).
    let schema: Vec<(String, u32, &str)> = vec![
        (
            rule("principals = [\"*\"]\nroutes = [{ path = \"/a\" }]\nshadwo = true\n"),
            7,
            "shadwo",
        ),
        (
            rule("principals = [\"*\"]\nroutes = [{ path = \"/a\", method = [\"GET\"] }]\n"),
            6,
            "method",
        ),
        (
            rule(
                "principals = [\"*\"]\nroutes = [{ path = \"/a\" }]\n[rule.when]\nscope = [\"x\"]\n",
            ),
            8,
            "scope",
        ),
        (
            "mode = \"enforce\"\nallow_all = true\n".to_owned(),
            2,
            "allow_all",
        ),
        ("mode = \"permissive\"\n".to_owned(), 1, "permissive"),
        (
            "[[rule]]\nname = \"r\"\neffect = \"permit\"\nprincipals = [\"*\"]\nroutes = [{ path = \"/a\" }]\n".to_owned(),
            3,
            "permit",
        ),
        (
            rule("principals = \"spiffe://example.org/a\"\nroutes = [{ path = \"/a\" }]\n"),
            5,
            "sequence",
        ),
        (rule("routes = [{ path = \"/a\" }]\n"), 2, "principals"),
        // `effect` is required: a rule cut before its `effect` line must not become an allow.
        (
            "[[rule]]\nname = \"r\"\nprincipals = [\"*\"]\nroutes = [{ path = \"/a\" }]\n".to_owned(),
            1,
            "missing field `effect`",
        ),
        (
            rule("principals = [\"*\"]\nroutes = [{ methods = [\"GET\"] }]\n"),
            6,
            "path",
        ),
        ("[[rule]\nname = \"x\"\n".to_owned(), 1, ""),
    ];
    for (text, line, word) in &schema {
        let err = toml_error(text);
        assert!(matches!(err, PolicyError::Parse { .. }), "{text}\n=> {err}");
        assert_eq!(err.line(), Some(*line), "{text}\n=> {err}");
        assert!(err.to_string().contains(word), "{text}\n=> {err}");
    }

    let dup = "[[rule]]\nname = \"r\"\neffect = \"allow\"\nprincipals = [\"*\"]\nroutes = [{ path = \"/a\" }]\n\n[[rule]]\nname = \"r\"\neffect = \"allow\"\nprincipals = [\"*\"]\nroutes = [{ path = \"/b\" }]\n";
    let err = toml_error(dup);
    assert!(
        matches!(err, PolicyError::DuplicateRuleName { .. }),
        "{err}"
    );
    assert_eq!(err.line(), Some(8));
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    let err = Policy::from_file(&path).unwrap_err();
    assert!(matches!(err, PolicyError::Read(_)), "{err}");
    std::fs::write(&path, "[[rule]]\nname = \"r\"\neffect = \"allow\"\nprincipals = [\"spiffe://example.org/bill*\"]\nroutes = [{ path = \"/a\" }]\n").unwrap();
    let err = Policy::from_file(&path).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "{}:4: rule \"r\", field `principals`",
            path.display()
        )),
        "{err}"
    );
}

fn write_policy(path: &std::path::Path, route: &str) {
    let text = format!(
        "[[rule]]\nname = \"web\"\neffect = \"allow\"\nprincipals = [\"spiffe://example.org/web\"]\nroutes = [{{ path = \"{route}\" }}]\n"
    );
    // Write then rename, as deployment tools do, so the poller never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn reload_applies_valid_changes_and_keeps_the_last_good_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    write_policy(&path, "/v1");
    let source = PolicySource::from_file(&path)
        .poll_interval(Duration::from_millis(10))
        .start()
        .unwrap();
    let web = id("spiffe://example.org/web");
    let allows = |source: &PolicySource, path: &str| {
        source
            .current()
            .explain(&web, &Method::GET, path)
            .is_allowed()
    };
    assert!(allows(&source, "/v1"));
    assert_eq!(source.revision(), 1);
    let _ = source
        .current()
        .authorize(&AuthzRequest::new(&web, &Method::GET, "/v1"));

    // A valid change is applied.
    let mut revisions = source.subscribe();
    write_policy(&path, "/v2");
    tokio::time::timeout(Duration::from_secs(10), revisions.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(source.revision(), 2);
    assert!(allows(&source, "/v2"));
    assert!(!allows(&source, "/v1"));
    // The counters of a rule that kept its name survive the reload.
    assert_eq!(source.stats().rule("web").map(RuleStats::allowed), Some(1));
    assert_eq!(source.stats().allowed(), 1);

    // A broken file is refused and counted; the last good policy stays.
    let mut failures = source.subscribe_failed_reloads();
    std::fs::write(&path, "[[rule]]\nname = \"web\"\neffect = \"allow\"\nprincipals = [\"spiffe://example.org/bill*\"]\nroutes = [{ path = \"/v3\" }]\n").unwrap();
    tokio::time::timeout(Duration::from_secs(10), failures.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(source.failed_reloads(), 1);
    assert_eq!(source.revision(), 2);
    assert!(allows(&source, "/v2"));
    assert!(!allows(&source, "/v3"));

    // A missing file too.
    std::fs::remove_file(&path).unwrap();
    tokio::time::timeout(Duration::from_secs(10), failures.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(source.failed_reloads(), 2);
    assert!(allows(&source, "/v2"));

    // Fixed again: applied.
    write_policy(&path, "/v4");
    tokio::time::timeout(Duration::from_secs(10), revisions.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(allows(&source, "/v4"));
    assert_eq!(source.failed_reloads(), 2);
}

/// A policy whose second half is a deny rule; its first half alone is a valid policy that
/// allows what the deny rule refuses.
const TWO_HALVES: &str = "[[rule]]\nname = \"web\"\neffect = \"allow\"\nprincipals = [\"spiffe://example.org/web\"]\nroutes = [{ path = \"/orders/*\" }]\n\n[[rule]]\nname = \"no-admin\"\neffect = \"deny\"\nprincipals = [\"*\"]\nroutes = [{ path = \"/orders/admin/*\" }]\n";

#[tokio::test]
async fn a_file_written_in_two_halves_is_applied_only_whole() {
    let web = id("spiffe://example.org/web");
    let allows =
        |policy: &Policy, path: &str| policy.explain(&web, &Method::GET, path).is_allowed();
    let cut = TWO_HALVES.find("\n\n[[rule]]").unwrap() + 1;
    let (first, second) = TWO_HALVES.split_at(cut);
    // The danger: the first half alone loads, and lets the deny rule's requests through.
    assert!(allows(
        &Policy::from_toml(first).unwrap(),
        "/orders/admin/x"
    ));
    assert!(!allows(
        &Policy::from_toml(TWO_HALVES).unwrap(),
        "/orders/admin/x"
    ));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    write_policy(&path, "/v1");
    // The writer's second half, appended once the watcher has read the first half alone (in
    // the watcher, between its two reads, so the order does not depend on timing).
    let second_half = Arc::new(std::sync::Mutex::new(None::<&'static str>));
    let saw_first_half = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let source = PolicySource::from_file(&path)
        .poll_interval(Duration::from_millis(10))
        .between_reads({
            let (path, second_half, saw) = (
                path.clone(),
                Arc::clone(&second_half),
                Arc::clone(&saw_first_half),
            );
            move |read: &[u8]| {
                if read != first.as_bytes() {
                    return;
                }
                if let Some(rest) = second_half.lock().unwrap().take() {
                    saw.store(true, std::sync::atomic::Ordering::SeqCst);
                    let mut file = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .unwrap();
                    std::io::Write::write_all(&mut file, rest.as_bytes()).unwrap();
                }
            }
        })
        .start()
        .unwrap();
    assert_eq!(source.revision(), 1);
    let mut revisions = source.subscribe();

    // First half, written in place.
    *second_half.lock().unwrap() = Some(second);
    std::fs::write(&path, first).unwrap();
    tokio::time::timeout(Duration::from_secs(10), revisions.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(
        saw_first_half.load(std::sync::atomic::Ordering::SeqCst),
        "the watcher read the first half"
    );
    // The first reload is the whole file: the half was never applied.
    let current = source.current();
    assert!(allows(&current, "/orders/1"));
    assert!(
        !allows(&current, "/orders/admin/x"),
        "half a file was applied"
    );
    assert_eq!(source.revision(), 2);
    assert_eq!(source.failed_reloads(), 0);
}

#[test]
fn a_file_that_keeps_changing_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    write_policy(&path, "/v0");
    let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let err = PolicySource::from_file(&path)
        .poll_interval(Duration::from_millis(10))
        .between_reads({
            let (path, writes) = (path.clone(), Arc::clone(&writes));
            move |_: &[u8]| {
                let n = writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                write_policy(&path, &format!("/v{}", n + 1));
            }
        })
        .start()
        .unwrap_err();
    assert!(matches!(err, PolicyError::Unstable { .. }), "{err}");
    assert!(err.to_string().contains("kept changing"), "{err}");
    assert_eq!(writes.load(std::sync::atomic::Ordering::SeqCst), 10);

    // Once it settles, it loads.
    let source = PolicySource::from_file(&path).start().unwrap();
    assert_eq!(source.revision(), 1);
}

#[test]
fn a_broken_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        "[[rule]]\nname = \"r\"\neffect = \"allow\"\nprincipals = []\nroutes = [{ path = \"/a\" }]\n",
    )
    .unwrap();
    let err = PolicySource::from_file(&path).start().unwrap_err();
    assert_eq!(err.line(), Some(4));
    assert_eq!(err.field(), Some("principals"));
}

#[test]
fn replace_swaps_and_counts_revisions() {
    let source = PolicySource::new(Policy::deny_all());
    let web = id("spiffe://example.org/web");
    assert!(!source.could_ever_allow(&web));
    source.replace(
        Policy::builder()
            .rule(
                Rule::allow("web")
                    .principal("spiffe://example.org/web")
                    .route_any_method("/*"),
            )
            .build()
            .unwrap(),
    );
    assert_eq!(source.revision(), 2);
    assert!(source.could_ever_allow(&web));
}

#[test]
fn stats_count_per_rule_and_in_total() {
    let policy = Policy::builder()
        .rule(
            Rule::allow("web")
                .principal("spiffe://example.org/web")
                .route_any_method("/a"),
        )
        .rule(
            Rule::deny("block")
                .principal("spiffe://example.org/web")
                .route_any_method("/b"),
        )
        .build()
        .unwrap();
    let web = id("spiffe://example.org/web");
    for path in ["/a", "/a", "/b", "/c", "/%2F"] {
        policy.authorize(&AuthzRequest::new(&web, &Method::GET, path));
    }
    // `evaluate` and `explain` are pure.
    policy.explain(&web, &Method::GET, "/a");
    let stats = policy.stats();
    assert_eq!(stats.allowed(), 2);
    assert_eq!(stats.denied(), 3);
    assert_eq!(stats.no_matching_rule(), 1);
    assert_eq!(stats.invalid_path(), 1);
    assert_eq!(stats.rule("web").map(RuleStats::allowed), Some(2));
    assert_eq!(stats.rule("block").map(RuleStats::denied), Some(1));
    assert_eq!(stats.rules().len(), 2);
}

/// Captures the audit events.
type Event = (String, Vec<(String, String)>);

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Event>>>);

struct Fields(Vec<(String, String)>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((event.metadata().target().to_owned(), fields.0));
    }
}

#[test]
fn every_decision_emits_one_audit_event() {
    use tracing_subscriber::layer::SubscriberExt;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry()
        .with(capture.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    let policy = Policy::builder()
        .rule(
            Rule::allow("web")
                .principal("spiffe://example.org/web")
                .route_any_method("/a"),
        )
        .build()
        .unwrap();
    let web = id("spiffe://example.org/web");
    tracing::subscriber::with_default(subscriber, || {
        policy.authorize(&AuthzRequest::new(&web, &Method::GET, "/a"));
        policy.authorize(&AuthzRequest::new(&web, &Method::POST, "/b"));
        policy.authorize(&AuthzRequest::new(&web, &Method::GET, "/x%2Fy"));
        policy.explain(&web, &Method::GET, "/a");
    });
    let events = capture.0.lock().unwrap().clone();
    assert_eq!(events.len(), 3, "{events:?}");
    let field = |i: usize, name: &str| {
        events[i]
            .1
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert!(events.iter().all(|(target, _)| target == AUDIT_TARGET));
    assert_eq!(
        field(0, "caller").as_deref(),
        Some("spiffe://example.org/web")
    );
    assert_eq!(field(0, "method").as_deref(), Some("GET"));
    assert_eq!(field(0, "path").as_deref(), Some("\"/a\""));
    assert_eq!(field(0, "decision").as_deref(), Some("allow"));
    assert_eq!(field(0, "rule").as_deref(), Some("web"));
    assert_eq!(field(1, "decision").as_deref(), Some("deny"));
    assert_eq!(field(1, "reason").as_deref(), Some("no-matching-rule"));
    assert_eq!(field(1, "rule"), None);
    assert_eq!(field(2, "reason").as_deref(), Some("encoded-separator"));
}

#[test]
fn prefix_routes_of_every_length_are_found_and_whole_segments_only() {
    let long = format!("/long/{}", "p".repeat(70));
    let prefixes = ["/a", "/ab/cd", "/abc/de/fgh", "/x/y/z/w", &long];
    let mut builder = Policy::builder();
    for (i, prefix) in prefixes.iter().enumerate() {
        builder = builder.rule(
            Rule::allow(format!("r{i}"))
                .principal("spiffe://example.org/web")
                .route_any_method(format!("{prefix}/*")),
        );
    }
    let policy = builder.build().unwrap();
    let caller = SpiffeId::new("spiffe://example.org/web").unwrap();
    for (i, prefix) in prefixes.iter().enumerate() {
        for path in [
            format!("{prefix}/leaf"),
            format!("{prefix}/leaf/more/and/more"),
        ] {
            let decision = policy.explain(&caller, &Method::GET, &path);
            assert_eq!(
                decision.rule_name(),
                Some(format!("r{i}").as_str()),
                "{path}"
            );
        }
        let beside = format!("{prefix}x/leaf");
        assert!(
            !policy.explain(&caller, &Method::GET, &beside).is_allowed(),
            "{beside}"
        );
    }
    assert!(!policy.explain(&caller, &Method::GET, "/b/c").is_allowed());
}

#[test]
fn exact_routes_of_every_length_are_found_and_nothing_else() {
    // Short lengths and long ones (the index keeps lengths below 64 apart from longer ones).
    let (l63, l64, l100) = (
        format!("/{}", "a".repeat(62)),
        format!("/{}", "b".repeat(63)),
        format!("/x/{}", "c".repeat(97)),
    );
    let paths = ["/", "/a", "/ab/cd", "/abc/de/fgh", &l63, &l64, &l100];
    let mut builder = Policy::builder();
    for (i, path) in paths.iter().enumerate() {
        builder = builder.rule(
            Rule::allow(format!("r{i}"))
                .principal("spiffe://example.org/web")
                .route_any_method(*path),
        );
    }
    let policy = builder.build().unwrap();
    let caller = SpiffeId::new("spiffe://example.org/web").unwrap();
    for (i, path) in paths.iter().enumerate() {
        let decision = policy.explain(&caller, &Method::GET, path);
        assert_eq!(
            decision.rule_name(),
            Some(format!("r{i}").as_str()),
            "{path}"
        );
    }
    // Same lengths, other text; and other lengths.
    let (o63, o64, o100, o101) = (
        format!("/{}", "z".repeat(62)),
        format!("/{}", "z".repeat(63)),
        format!("/x/{}", "z".repeat(97)),
        format!("{l100}c"),
    );
    for path in [
        "/b",
        "/ab/ce",
        "/abc/de/fgx",
        "/ab",
        "/ab/cd/e",
        "/abc/de/fgh/i",
        &o63,
        &o64,
        &o100,
        &o101,
    ] {
        assert!(
            !policy.explain(&caller, &Method::GET, path).is_allowed(),
            "{path}"
        );
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("ab".to_owned()),
            Just("bc".to_owned()),
            Just("B".to_owned()),
            Just("a-b".to_owned()),
        ]
    }

    fn spiffe_id() -> impl Strategy<Value = String> {
        (
            prop_oneof![
                Just("example.org"),
                Just("example.org.evil"),
                Just("other.org")
            ],
            prop::collection::vec(segment(), 1..4),
        )
            .prop_map(|(td, segs)| format!("spiffe://{td}/{}", segs.join("/")))
    }

    /// Raw request path pieces, tricks included.
    fn path_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            segment(),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("%2e%2e".to_owned()),
            Just("%2E".to_owned()),
            Just("%2F".to_owned()),
            Just("a%2Fb".to_owned()),
            Just("%61".to_owned()),
            Just("%5C".to_owned()),
            Just("".to_owned()),
            Just("%00".to_owned()),
            Just("%".to_owned()),
        ]
    }

    /// An independent reference: percent-decode naively, refuse decoded separators, resolve
    /// dot segments with a stack. `None`: unsafe.
    fn reference_resolve(raw: &str) -> Option<Vec<String>> {
        let mut stack: Vec<String> = Vec::new();
        for piece in raw.strip_prefix('/')?.split('/') {
            let mut bytes = Vec::new();
            let mut chars = piece.bytes();
            while let Some(b) = chars.next() {
                if b == b'%' {
                    let hex: String = [chars.next()?, chars.next()?]
                        .iter()
                        .map(|&c| c as char)
                        .collect();
                    bytes.push(u8::from_str_radix(&hex, 16).ok()?);
                } else {
                    bytes.push(b);
                }
            }
            let seg = String::from_utf8(bytes).ok()?;
            if seg.contains('/') || seg.contains('\\') || seg.chars().any(char::is_control) {
                return None;
            }
            match seg.as_str() {
                "" | "." => {}
                ".." => {
                    stack.pop()?;
                }
                _ => stack.push(seg),
            }
        }
        Some(stack)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// An allow for one principal matcher never admits an ID outside it.
        #[test]
        fn allow_never_leaks_to_another_principal(rule_id in spiffe_id(), caller in spiffe_id(), kind in 0..3u8) {
            let principal = match kind {
                0 => rule_id.clone(),
                1 => format!("{rule_id}/*"),
                _ => format!("spiffe://{}", rule_id.trim_start_matches("spiffe://").split('/').next().unwrap()),
            };
            let policy = Policy::builder()
                .rule(Rule::allow("r").principal(principal.clone()).route_any_method("/*"))
                .build()
                .unwrap();
            let expected = match kind {
                0 => caller == rule_id,
                1 => caller.starts_with(&format!("{rule_id}/")),
                _ => caller.starts_with(&format!("{principal}/")),
            };
            let d = policy.explain(&id(&caller), &Method::GET, "/x");
            prop_assert_eq!(d.is_allowed(), expected, "{} vs {}", principal, caller);
            prop_assert_eq!(policy.could_ever_allow(&id(&caller)), expected);
        }

        /// An allow for `/a/b/*` and `/a` never admits a path that resolves elsewhere, and every
        /// path resolving inside is admitted.
        #[test]
        fn allow_never_leaks_to_another_path(pieces in prop::collection::vec(path_piece(), 0..7), trailing in any::<bool>()) {
            let mut raw = format!("/{}", pieces.join("/"));
            if trailing {
                raw.push('/');
            }
            let policy = Policy::builder()
                .rule(Rule::allow("r").principal("spiffe://example.org/web").route_any_method("/a/b/*").route_any_method("/a"))
                .build()
                .unwrap();
            let d = policy.explain(&id("spiffe://example.org/web"), &Method::GET, &raw);
            let inside = match reference_resolve(&raw) {
                Some(segs) => (segs.len() > 2 && segs[0] == "a" && segs[1] == "b") || segs == ["a"],
                None => false,
            };
            prop_assert_eq!(d.is_allowed(), inside, "{}", raw);
            if let Ok(normalized) = normalize_path(&raw) {
                // The rewritten path means the same, and is stable.
                let encoded = encode_normalized(&normalized);
                let again = normalize_path(&encoded);
                prop_assert_eq!(again.as_deref(), Ok(&*normalized));
                prop_assert_eq!(reference_resolve(&encoded), reference_resolve(&raw));
            }
        }

        /// Many rules: the indexed decision equals a linear scan of the rules.
        #[test]
        fn index_agrees_with_linear_scan(
            rules in prop::collection::vec((spiffe_id(), 0..3u8, prop::collection::vec(segment(), 0..3), any::<bool>(), any::<bool>()), 1..12),
            caller in spiffe_id(),
            path in prop::collection::vec(segment(), 0..4),
        ) {
            let path = format!("/{}", path.join("/"));
            let mut builder = Policy::builder();
            let mut specs = Vec::new();
            for (i, (rid, kind, route, prefix, deny)) in rules.iter().enumerate() {
                let principal = match kind {
                    0 => rid.clone(),
                    1 => format!("{rid}/*"),
                    _ => "spiffe://example.org".to_owned(),
                };
                let route_text = match (route.is_empty(), prefix) {
                    (true, true) => "/*".to_owned(),
                    (true, false) => "/".to_owned(),
                    (false, true) => format!("/{}/*", route.join("/")),
                    (false, false) => format!("/{}", route.join("/")),
                };
                let name = format!("r{i}");
                let rule = if *deny { Rule::deny(name) } else { Rule::allow(name) };
                builder = builder.rule(rule.principal(principal.clone()).route_any_method(route_text.clone()));
                specs.push((crate::identity::IdMatcher::parse(&principal).unwrap(), path::parse_route_path(&route_text).unwrap(), *deny));
            }
            let policy = builder.build().unwrap();
            let caller_id = id(&caller);
            let matching: Vec<(usize, bool)> = specs.iter().enumerate()
                .filter(|(_, (m, p, _))| m.matches(&caller_id) && p.matches(&path))
                .map(|(i, (_, _, deny))| (i, *deny))
                .collect();
            let expected = matching.iter().find(|(_, deny)| *deny).or_else(|| matching.first()).copied();
            let d = policy.explain(&caller_id, &Method::GET, &path);
            prop_assert_eq!(d.rule().map(RuleRef::index), expected.map(|(i, _)| i));
            prop_assert_eq!(d.is_allowed(), expected.is_some_and(|(_, deny)| !deny));
        }
    }
}

/// Every decision is counted in `secure_channel_authz_decisions_total` by outcome and rule (or
/// denial reason), through whichever recorder is current when it is made: the per-rule keys
/// are built once but registered with the current recorder every time.
#[test]
fn decisions_are_counted_by_outcome_and_rule_with_the_current_recorder() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    type Snapshot = Vec<(
        metrics_util::CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )>;
    // A snapshot is taken once per recorder: taking one resets what it read.
    fn count(snapshot: &Snapshot, outcome: &str, rule: &str) -> u64 {
        snapshot
            .iter()
            .filter(|(key, ..)| {
                let key = key.key();
                key.name() == crate::telemetry::AUTHZ_DECISIONS
                    && key
                        .labels()
                        .any(|l| l.key() == "outcome" && l.value() == outcome)
                    && key.labels().any(|l| l.key() == "rule" && l.value() == rule)
            })
            .map(|(.., value)| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    }

    let rules = |builder: PolicyBuilder| {
        builder
            .rule(
                Rule::deny("no-admin")
                    .principal("spiffe://example.org/web")
                    .route_any_method("/admin/*"),
            )
            .rule(
                Rule::allow("web")
                    .principal("spiffe://example.org/web")
                    .route_any_method("/*"),
            )
            .build()
            .unwrap()
    };
    let enforced = rules(Policy::builder());
    let dry_run = rules(Policy::builder().dry_run());
    let web = id("spiffe://example.org/web");
    let other = id("spiffe://example.org/other");
    let decide = |policy: &Policy, caller: &SpiffeId, path: &str| {
        policy.authorize(&AuthzRequest::new(caller, &Method::GET, path));
    };

    let first = DebuggingRecorder::new();
    metrics::with_local_recorder(&first, || {
        decide(&enforced, &web, "/orders");
        decide(&enforced, &web, "/orders");
        decide(&enforced, &web, "/admin/x");
        decide(&enforced, &other, "/orders");
        decide(&enforced, &web, "/a/%2e%2e/%2e%2e");
        decide(&dry_run, &web, "/admin/x");
    });
    let snapshot = first.snapshotter().snapshot().into_vec();
    assert_eq!(count(&snapshot, "allow", "web"), 2);
    assert_eq!(count(&snapshot, "deny", "no-admin"), 1);
    assert_eq!(count(&snapshot, "deny", "no-matching-rule"), 1);
    assert_eq!(count(&snapshot, "deny", "escapes-root"), 1);
    assert_eq!(count(&snapshot, "would_deny", "no-admin"), 1);
    assert_eq!(count(&snapshot, "deny", "web"), 0);

    // The keys built under the first recorder count under the next one, and only there.
    let second = DebuggingRecorder::new();
    metrics::with_local_recorder(&second, || decide(&enforced, &web, "/orders"));
    let snapshot = second.snapshotter().snapshot().into_vec();
    assert_eq!(count(&snapshot, "allow", "web"), 1);
    assert_eq!(count(&snapshot, "deny", "no-admin"), 0);
    let snapshot = first.snapshotter().snapshot().into_vec();
    assert_eq!(
        count(&snapshot, "allow", "web"),
        0,
        "the first recorder saw nothing new"
    );
}

/// Issue 18: `rate`, `burst` and `concurrency` on a rule, validated at load with the line and
/// the field of the problem.
#[test]
fn rule_limits_are_validated_with_line_and_field() {
    let policy = Policy::from_toml(
        r#"
[[rule]]
name = "batch"
effect = "allow"
principals = ["spiffe://example.org/batch/*"]
routes = [{ path = "/*" }]
rate = "100/s"
burst = 20
concurrency = 8

[[rule]]
name = "web"
effect = "allow"
principals = ["spiffe://example.org/web"]
routes = [{ path = "/*" }]
concurrency = 2
"#,
    )
    .unwrap();
    let text = policy.to_string();
    assert!(
        text.contains("[rate 100/s burst 20, concurrency 8 per caller]"),
        "{text}"
    );
    assert!(text.contains("[concurrency 2 per caller]"), "{text}");
    let limiter = policy.rule_limiter(0).unwrap();
    assert_eq!(&*limiter.name, "batch");
    assert!(policy.rule_limiter(1).is_some());

    // The body starts on line 6 (the rule table on line 2).
    let rule = |effect: &str, body: &str| {
        format!(
            "# comment\n[[rule]]\nname = \"r\"\neffect = \"{effect}\"\nprincipals = [\"*\"]\nroutes = [{{ path = \"/a\" }}]\n{body}"
        )
    };
    let cases: Vec<(String, u32, &str, &str)> = vec![
        (rule("allow", "rate = \"0/s\"\n"), 7, "rate", "0 requests"),
        (
            rule("allow", "rate = \"100\"\n"),
            7,
            "rate",
            "<requests>/<unit>",
        ),
        (rule("allow", "rate = \"5/d\"\n"), 7, "rate", "unit"),
        (
            rule("allow", "rate = \"1/s\"\nburst = 0\n"),
            8,
            "burst",
            "from 1",
        ),
        (
            rule("allow", "rate = \"1/s\"\nburst = -3\n"),
            8,
            "burst",
            "from 1",
        ),
        (rule("allow", "burst = 5\n"), 7, "burst", "needs a rate"),
        (
            rule("allow", "concurrency = 0\n"),
            7,
            "concurrency",
            "from 1",
        ),
        (
            rule("allow", "concurrency = 4294967296\n"),
            7,
            "concurrency",
            "from 1",
        ),
        (
            rule("deny", "concurrency = 3\n"),
            7,
            "concurrency",
            "deny rule",
        ),
        (rule("deny", "rate = \"1/s\"\n"), 7, "rate", "deny rule"),
        (
            rule("allow", "shadow = true\nrate = \"1/s\"\n"),
            8,
            "rate",
            "shadow rule",
        ),
    ];
    for (text, line, field, problem) in &cases {
        let err = toml_error(text);
        assert!(
            matches!(err, PolicyError::InvalidRule { .. }),
            "{text}\n=> {err}"
        );
        assert_eq!(err.line(), Some(*line), "{text}\n=> {err}");
        assert_eq!(err.field(), Some(*field), "{text}\n=> {err}");
        assert!(err.to_string().contains(problem), "{text}\n=> {err}");
    }
    // Wrong types are schema errors naming the line.
    let err = toml_error(&rule("allow", "rate = 100\n"));
    assert!(matches!(err, PolicyError::Parse { .. }), "{err}");
    assert_eq!(err.line(), Some(7), "{err}");

    // The same checks in code.
    let code = |rule: Rule| Policy::builder().rule(rule).build().unwrap_err();
    let base = || {
        Rule::allow("r")
            .any_authenticated_peer()
            .route_any_method("/a")
    };
    assert_eq!(code(base().rate("0/m")).field(), Some("rate"));
    assert_eq!(code(base().burst(3)).field(), Some("burst"));
    assert_eq!(code(base().rate("1/h").burst(0)).field(), Some("burst"));
    assert_eq!(code(base().concurrency(0)).field(), Some("concurrency"));
    assert_eq!(
        code(
            Rule::deny("d")
                .any_authenticated_peer()
                .route_any_method("/a")
                .rate("1/s")
        )
        .field(),
        Some("rate")
    );
}

/// A reload keeps the callers' state of a rule that keeps its name and its limits, and starts
/// afresh for a rule whose limits changed.
#[test]
fn reload_keeps_the_state_of_unchanged_limits() {
    let with = |rate: &str| {
        Policy::from_toml(&format!(
            "[[rule]]\nname = \"web\"\neffect = \"allow\"\nprincipals = [\"*\"]\nroutes = [{{ path = \"/*\" }}]\nrate = \"{rate}\"\n\n[[rule]]\nname = \"other\"\neffect = \"allow\"\nprincipals = [\"*\"]\nroutes = [{{ path = \"/other\" }}]\n"
        ))
        .unwrap()
    };
    let source = PolicySource::new(with("1/h"));
    let web = id("spiffe://example.org/web");
    let admit = |source: &PolicySource| {
        source
            .current()
            .rule_limiter(0)
            .unwrap()
            .table
            .admit(crate::identity::IdKey::of(&web), || 0)
            .is_ok()
    };
    assert!(admit(&source));
    assert!(!admit(&source));
    // Same limits: the caller is still over them.
    source.replace(with("1/h"));
    assert!(!admit(&source));
    // New limits: a fresh start.
    source.replace(with("2/h"));
    assert!(admit(&source));
    assert!(admit(&source));
    assert!(!admit(&source));
    assert!(source.current().rule_limiter(1).is_none());
}
