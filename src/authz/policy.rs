//! A compiled policy and its builder.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use http::Method;
use spiffe::SpiffeId;

use crate::authz::audit::{Counters, PolicyStats};
use crate::authz::compile::{Index, Matches};
use crate::authz::decision::{AuthzRequest, Decision, RuleRef, ShadowVerdict, Verdict};
use crate::authz::limits::RuleLimiter;
use crate::authz::model::{CompiledRule, Mode, Principal, Rule};
use crate::authz::path::{PathError, normalize_path};
use crate::authz::{Effect, PolicyError};
use crate::identity::AllowList;
use crate::jwt::VerifiedClaims;

/// An authorization policy: default deny, allow rules, deny rules that win over allows.
///
/// Rules are validated and compiled when the policy is built or loaded; a decision is a few
/// hash lookups on borrowed data, without locks or allocation for canonical paths.
///
/// ```
/// use http::Method;
/// use secure_channel::SpiffeId;
/// use secure_channel::authz::{Policy, Rule};
///
/// let policy = Policy::builder()
///     .rule(
///         Rule::allow("web-reads-orders")
///             .principal("spiffe://example.org/web")
///             .route(Method::GET, "/orders/*"),
///     )
///     .rule(Rule::deny("nobody-on-admin").any_authenticated_peer().route_any_method("/orders/admin/*"))
///     .build()?;
///
/// let web = SpiffeId::new("spiffe://example.org/web")?;
/// let decision = policy.explain(&web, &Method::GET, "/orders/42");
/// assert!(decision.is_allowed());
/// assert_eq!(decision.rule_name(), Some("web-reads-orders"));
/// assert!(!policy.explain(&web, &Method::GET, "/orders/admin/users").is_allowed());
/// assert!(!policy.explain(&web, &Method::POST, "/orders/42").is_allowed());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Policy {
    mode: Mode,
    rules: Box<[CompiledRule]>,
    index: Index,
    counters: Counters,
    /// The principals of the enforced allow rules, computed once: every handshake and every
    /// re-check of an open connection asks it. `None`: anyone authenticated could pass.
    principals: Option<AllowList>,
}

impl Policy {
    /// A builder for a policy written in code.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// A policy without rules: it denies every request.
    pub fn deny_all() -> Self {
        Self::compile(Mode::Enforce, Vec::new())
    }

    /// Parses and validates a policy written in TOML (see the [module docs](crate::authz) for the
    /// schema). Errors name the line and the field.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        crate::authz::file::parse(text)
    }

    /// Reads, parses and validates a TOML policy file. Errors name the file, line and field.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref();
        let bytes = crate::error::read_file(path)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| PolicyError::Parse {
            file: Some(path.to_owned()),
            line: None,
            message: format!("not UTF-8: {e}"),
        })?;
        Self::from_toml(text).map_err(|mut e| {
            e.set_file(path);
            e
        })
    }

    fn compile(mode: Mode, rules: Vec<CompiledRule>) -> Self {
        let index = Index::build(&rules);
        let counters = Counters::new(rules.iter().map(|r| r.name.clone()));
        let principals = principals_of(mode, &rules);
        Self {
            mode,
            rules: rules.into(),
            index,
            counters,
            principals,
        }
    }

    /// Whether decisions are enforced or only logged.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the policy has no rules (and so denies everything).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule names, in order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.name)
    }

    /// Decides a request. Pure: nothing is counted or logged (see [`authorize`](Self::authorize)).
    pub fn evaluate(&self, request: &AuthzRequest<'_>) -> Decision {
        self.decide(request).0
    }

    /// Decides a request, counts the decision and emits its audit event (target
    /// [`AUDIT_TARGET`](crate::authz::AUDIT_TARGET)). This is what the layer calls.
    pub fn authorize(&self, request: &AuthzRequest<'_>) -> Decision {
        let decision = self.evaluate(request);
        self.record(request, &decision);
        decision
    }

    pub(crate) fn record(&self, request: &AuthzRequest<'_>, decision: &Decision) {
        self.counters.record(decision);
        self.counters.emit(request, decision);
    }

    /// Decides a request for `caller` calling `method` on `path`, without claims: for
    /// table-driven tests of a policy. Pure, like [`evaluate`](Self::evaluate).
    pub fn explain(&self, caller: &SpiffeId, method: &Method, path: &str) -> Decision {
        self.evaluate(&AuthzRequest::new(caller, method, path))
    }

    /// [`explain`](Self::explain) with validated token claims.
    pub fn explain_with_claims(
        &self,
        caller: &SpiffeId,
        method: &Method,
        path: &str,
        claims: &VerifiedClaims,
    ) -> Decision {
        self.evaluate(&AuthzRequest::new(caller, method, path).with_claims(Some(claims)))
    }

    /// [`explain`](Self::explain) as if a token carrying `claims` (a JSON object: `scope`,
    /// `scp`, any claim a rule's conditions name) had been validated: for testing the rules'
    /// conditions without minting a token (`secure-channel policy explain --scope`). Pure, like
    /// [`evaluate`](Self::evaluate); the claims are not checked in any way and stay inside this
    /// call.
    pub fn explain_assuming_claims(
        &self,
        caller: &SpiffeId,
        method: &Method,
        path: &str,
        claims: serde_json::Map<String, serde_json::Value>,
    ) -> Decision {
        let claims = VerifiedClaims::new(claims);
        self.explain_with_claims(caller, method, path, &claims)
    }

    /// The decision and the normalized path.
    pub(crate) fn decide<'r>(
        &self,
        request: &AuthzRequest<'r>,
    ) -> (Decision, Result<Cow<'r, str>, PathError>) {
        let dry_run = self.mode == Mode::DryRun;
        let path = match normalize_path(request.path) {
            Ok(path) => path,
            Err(e) => {
                let decision = Decision {
                    verdict: Verdict::InvalidPath(e),
                    dry_run,
                    shadow: None,
                };
                return (decision, Err(e));
            }
        };
        let matches = self.index.find(
            &self.rules,
            request.caller,
            request.method,
            &path,
            request.claims,
        );
        let decision = Decision {
            verdict: self.verdict(matches.deny, matches.allow),
            dry_run,
            shadow: self.shadow_verdict(&matches),
        };
        (decision, Ok(path))
    }

    fn rule_ref(&self, index: u32) -> Option<RuleRef> {
        let i = usize::try_from(index).ok()?;
        let rule = self.rules.get(i)?;
        Some(RuleRef {
            index: i,
            name: rule.name.clone(),
            effect: rule.effect,
            shadow: rule.shadow,
        })
    }

    fn verdict(&self, deny: Option<u32>, allow: Option<u32>) -> Verdict {
        if let Some(rule) = deny.and_then(|i| self.rule_ref(i)) {
            return Verdict::Deny(rule);
        }
        if let Some(rule) = allow.and_then(|i| self.rule_ref(i)) {
            return Verdict::Allow(rule);
        }
        Verdict::DefaultDeny
    }

    fn shadow_verdict(&self, m: &Matches) -> Option<ShadowVerdict> {
        if m.shadow_allow.is_none() && m.shadow_deny.is_none() {
            return None;
        }
        let first = |a: Option<u32>, b: Option<u32>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let verdict = self.verdict(first(m.deny, m.shadow_deny), first(m.allow, m.shadow_allow));
        Some(match verdict {
            Verdict::Allow(rule) => ShadowVerdict {
                allowed: true,
                rule: Some(rule),
            },
            Verdict::Deny(rule) => ShadowVerdict {
                allowed: false,
                rule: Some(rule),
            },
            Verdict::DefaultDeny | Verdict::InvalidPath(_) => ShadowVerdict {
                allowed: false,
                rule: None,
            },
        })
    }

    /// Whether some request of `caller` could be allowed (or pass, in dry-run mode). The
    /// channel uses it to refuse at the handshake a peer that no rule could ever admit.
    pub fn could_ever_allow(&self, caller: &SpiffeId) -> bool {
        self.principals
            .as_ref()
            .is_none_or(|principals| principals.allows(caller))
    }

    /// The principals of the enforced allow rules, as an allow list for the handshake; `None`
    /// when any authenticated peer could pass (a rule for any authenticated peer, or dry-run
    /// mode). Deny rules and conditions are not taken into account: the list is an upper bound.
    pub fn principals(&self) -> Option<AllowList> {
        self.principals.clone()
    }

    /// The decision counts since this policy (or the first policy of its source with the same
    /// rule names) was loaded.
    pub fn stats(&self) -> PolicyStats {
        self.counters.snapshot()
    }

    pub(crate) fn carry_counters_from(&mut self, previous: &Policy) {
        self.counters.carry_over(&previous.counters);
    }

    /// The limits of the rule at `index` (with their callers' state), if it has any.
    #[inline]
    pub(crate) fn rule_limiter(&self, index: usize) -> Option<&RuleLimiter> {
        self.rules.get(index)?.limits.as_deref()
    }

    /// Takes over the callers' state of `previous`'s rules that keep their name and their
    /// limits: a reload that does not touch a rule's limits does not hand its callers a fresh
    /// burst, nor forget their requests in flight. A rule whose limits changed starts afresh.
    pub(crate) fn carry_limits_from(&mut self, previous: &Policy) {
        for rule in self.rules.iter_mut() {
            let Some(limits) = &rule.limits else {
                continue;
            };
            let kept = previous
                .rules
                .iter()
                .filter(|old| old.name == rule.name)
                .find_map(|old| old.limits.as_ref().filter(|old| old.spec == limits.spec));
            if let Some(kept) = kept {
                rule.limits = Some(Arc::clone(kept));
            }
        }
    }
}

/// See [`Policy::principals`].
fn principals_of(mode: Mode, rules: &[CompiledRule]) -> Option<AllowList> {
    if mode == Mode::DryRun {
        return None;
    }
    let mut list = AllowList::deny_all();
    let admitting = rules
        .iter()
        .filter(|r| r.effect == Effect::Allow && !r.shadow);
    for rule in admitting {
        for principal in &rule.principals {
            match principal {
                Principal::AnyAuthenticated => return None,
                Principal::Id(m) => list.push(m.clone()),
            }
        }
    }
    Some(list)
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("mode", &self.mode)
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// Renders the policy as a rule list, one rule per line.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mode {}", self.mode.as_str())?;
        for (i, rule) in self.rules.iter().enumerate() {
            write!(
                f,
                "#{i} {} {:?}{}: ",
                rule.effect.as_str(),
                rule.name,
                if rule.shadow { " (shadow)" } else { "" }
            )?;
            for (j, p) in rule.principals.iter().enumerate() {
                let sep = if j > 0 { ", " } else { "" };
                match p {
                    Principal::AnyAuthenticated => write!(f, "{sep}*")?,
                    Principal::Id(m) => write!(f, "{sep}{m}")?,
                }
            }
            f.write_str(" ->")?;
            for route in &rule.routes {
                write!(f, " {} {}", route.methods, route.path)?;
            }
            if !rule.conditions.is_empty() {
                f.write_str(" (with token conditions)")?;
            }
            if let Some(limits) = &rule.limits {
                write!(f, " [{} per caller]", limits.describe())?;
            }
            writeln!(f)?;
        }
        writeln!(f, "default deny")
    }
}

/// Builds a [`Policy`] in code. Nothing is checked until [`build`](Self::build), which refuses
/// every unsafe or invalid rule.
#[derive(Debug, Default)]
#[must_use]
pub struct PolicyBuilder {
    mode: Mode,
    rules: Vec<Rule>,
}

impl PolicyBuilder {
    /// Appends a rule.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Appends rules.
    pub fn rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.rules.extend(rules);
        self
    }

    /// Sets the mode (default [`Mode::Enforce`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Dry-run mode: decisions are computed, counted and logged, but every request passes.
    pub fn dry_run(self) -> Self {
        self.mode(Mode::DryRun)
    }

    /// Validates and compiles the rules.
    pub fn build(self) -> Result<Policy, PolicyError> {
        let mut names = HashSet::with_capacity(self.rules.len());
        let mut compiled = Vec::with_capacity(self.rules.len());
        for rule in &self.rules {
            let c = rule.compile()?;
            if !names.insert(c.name.clone()) {
                return Err(PolicyError::DuplicateRuleName {
                    file: None,
                    line: rule.name.line,
                    name: rule.name().to_owned(),
                });
            }
            compiled.push(c);
        }
        Ok(Policy::compile(self.mode, compiled))
    }
}
