//! Policy files: arbitrary text through `Policy::from_toml`, and for policies that load,
//! `explain` with arbitrary callers, methods and paths (path normalization included).
//!
//! Input, split on NUL bytes: policy TOML, method, request path, caller SPIFFE ID, claims JSON
//! (missing parts take defaults).
//!
//! Invariants besides "never panics":
//! - the decision equals a linear scan of the rules as written in the file (a reference
//!   independent of the compiled index), for every caller tried;
//! - path normalization agrees with an independent reference, is idempotent, and the URI the
//!   authorization layer rewrites a request to normalizes back to the same path;
//! - a caller for whom `could_ever_allow` is false is never allowed, and an allowed caller is
//!   in `principals()` when that is a list (with or without claims).
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use secure_channel::authz::{DenyReason, Policy, normalize_path};
use secure_channel::fuzzing::{encode_normalized, verified_claims};
use secure_channel::{IdMatcher, SpiffeId};
use serde_json::{Map, Value};

const CALLERS: [&str; 4] = [
    "spiffe://example.org/web",
    "spiffe://example.org/batch/job",
    "spiffe://example.org",
    "spiffe://partner.example/x",
];

/// A rule as the file writes it.
struct RefRule {
    deny: bool,
    shadow: bool,
    conditional: bool,
    principals: Vec<String>,
    /// (methods, `None` for any; path pattern)
    routes: Vec<(Option<Vec<String>>, String)>,
}

fn strings(value: Option<&toml::Value>) -> Option<Vec<String>> {
    value?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// The rules of a file that loaded; `None` if the file does not read as expected (a bug: the
/// policy loaded).
fn reference_rules(text: &str) -> Option<Vec<RefRule>> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let Some(rules) = table.get("rule") else {
        return Some(Vec::new());
    };
    let mut out = Vec::new();
    for rule in rules.as_array()? {
        let rule = rule.as_table()?;
        let deny = match rule.get("effect").map(|e| e.as_str()) {
            // `effect` is required: a file that loaded without it is a bug.
            None => return None,
            Some(Some("allow")) => false,
            Some(Some("deny")) => true,
            Some(_) => return None,
        };
        let shadow = rule
            .get("shadow")
            .map_or(Some(false), toml::Value::as_bool)?;
        let conditional = match rule.get("when") {
            None => false,
            Some(when) => {
                let when = when.as_table()?;
                let scopes = when
                    .get("scopes")
                    .and_then(toml::Value::as_array)
                    .is_some_and(|s| !s.is_empty());
                let claims = when
                    .get("claims")
                    .and_then(toml::Value::as_table)
                    .is_some_and(|c| !c.is_empty());
                scopes || claims
            }
        };
        let principals = strings(rule.get("principals"))?;
        let mut routes = Vec::new();
        for route in rule.get("routes")?.as_array()? {
            let route = route.as_table()?;
            let methods = match route.get("methods") {
                None => None,
                Some(m) => Some(strings(Some(m))?),
            };
            routes.push((methods, route.get("path")?.as_str()?.to_owned()));
        }
        out.push(RefRule {
            deny,
            shadow,
            conditional,
            principals,
            routes,
        });
    }
    Some(out)
}

fn route_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some("") => true,
        Some(body) => path
            .strip_prefix(body)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/')),
        None => pattern == path,
    }
}

/// Index of the deciding rule and whether it allows, by a linear scan; `None`: default deny.
fn reference_decision(
    rules: &[RefRule],
    caller: &SpiffeId,
    method: &Method,
    path: &str,
) -> Option<(usize, bool)> {
    let matching = |r: &RefRule| {
        !r.shadow
            && !r.conditional
            && r.principals
                .iter()
                .any(|p| p == "*" || IdMatcher::parse(p).is_ok_and(|m| m.matches(caller)))
            && r.routes.iter().any(|(methods, pattern)| {
                methods
                    .as_ref()
                    .is_none_or(|ms| ms.iter().any(|m| m == method.as_str()))
                    && route_matches(pattern, path)
            })
    };
    let deny = rules.iter().position(|r| r.deny && matching(r));
    let allow = rules.iter().position(|r| !r.deny && matching(r));
    deny.map(|i| (i, false)).or(allow.map(|i| (i, true)))
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// An independent reference of path normalization: `None` when the path is unsafe.
fn reference_normalize(raw: &str) -> Option<String> {
    let mut stack: Vec<String> = Vec::new();
    for piece in raw.strip_prefix('/')?.split('/') {
        let mut bytes = Vec::new();
        let mut it = piece.bytes();
        while let Some(b) = it.next() {
            if b == b'%' {
                let (hi, lo) = (hex(it.next()?)?, hex(it.next()?)?);
                bytes.push(hi << 4 | lo);
            } else {
                bytes.push(b);
            }
        }
        if bytes
            .iter()
            .any(|&b| b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f)
        {
            return None;
        }
        let segment = String::from_utf8(bytes).ok()?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                stack.pop()?;
            }
            _ => stack.push(segment),
        }
    }
    Some(format!("/{}", stack.join("/")))
}

fn check_path(raw: &str) -> Option<String> {
    let normalized = normalize_path(raw);
    let reference = reference_normalize(raw);
    assert_eq!(
        normalized.as_deref().ok(),
        reference.as_deref(),
        "normalization of {raw:?} differs from the reference"
    );
    let normalized = normalized.ok()?.into_owned();
    let again = normalize_path(&normalized);
    assert_eq!(again.as_deref(), Ok(normalized.as_str()), "not idempotent");
    // Normalized paths are decoded: one with a `%` is re-encoded by the layer, never reused as is.
    let encoded = encode_normalized(&normalized);
    assert_eq!(
        normalize_path(&encoded).as_deref(),
        Ok(normalized.as_str()),
        "the rewritten URI {encoded:?} means another path"
    );
    Some(normalized)
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let Ok(text) = std::str::from_utf8(parts.next().unwrap_or_default()) else {
        return;
    };
    let method = parts
        .next()
        .and_then(|m| Method::from_bytes(m).ok())
        .unwrap_or(Method::GET);
    let path = String::from_utf8_lossy(parts.next().unwrap_or(b"/"));
    let caller = parts
        .next()
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| SpiffeId::new(c).ok());
    let claims = parts
        .next()
        .and_then(|c| serde_json::from_slice::<Map<String, Value>>(c).ok())
        .map(verified_claims);

    let normalized = check_path(&path);

    let policy = match Policy::from_toml(text) {
        Ok(policy) => policy,
        Err(error) => {
            let _ = (error.to_string(), error.line(), error.field());
            return;
        }
    };
    let _ = (
        policy.to_string(),
        policy.rule_names().count(),
        policy.mode(),
    );
    let reference = reference_rules(text).expect("a policy that loaded reads as TOML");
    assert_eq!(reference.len(), policy.len());
    let principals = policy.principals();

    let fixed = CALLERS.iter().map(|c| SpiffeId::new(c).expect("fixed id"));
    for caller in caller.into_iter().chain(fixed) {
        let decision = policy.explain(&caller, &method, &path);
        let _ = decision.to_string();
        match &normalized {
            None => {
                assert!(!decision.is_allowed());
                assert!(matches!(
                    decision.deny_reason(),
                    Some(DenyReason::InvalidPath(_))
                ));
            }
            Some(normalized) => {
                let expected = reference_decision(&reference, &caller, &method, normalized);
                assert_eq!(
                    decision.rule().map(|r| r.index()),
                    expected.map(|(i, _)| i),
                    "{caller} {method} {path:?}: {decision}"
                );
                assert_eq!(decision.is_allowed(), expected.is_some_and(|(_, a)| a));
            }
        }
        let mut decisions = vec![decision];
        if let Some(claims) = &claims {
            decisions.push(policy.explain_with_claims(&caller, &method, &path, claims));
        }
        for decision in decisions {
            if decision.is_allowed() {
                assert!(
                    policy.could_ever_allow(&caller),
                    "allowed, yet never allowed"
                );
                if let Some(list) = &principals {
                    assert!(list.allows(&caller), "allowed outside principals()");
                }
            }
        }
    }
    let _ = policy.stats();
});
