//! Audit: one `tracing` event per decision, and decision counters.
//!
//! Counters are labelled by rule name only (bounded by the policy), never by path or caller.
//! They survive a policy reload for rules that keep their name.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::authz::decision::{AuthzRequest, Decision, Verdict};

/// The `tracing` target of authorization events.
pub const AUDIT_TARGET: &str = "secure_channel::authz";

#[derive(Debug, Default)]
pub(crate) struct RuleCounters {
    allowed: AtomicU64,
    denied: AtomicU64,
    would_allow: AtomicU64,
    would_deny: AtomicU64,
    /// The rule's decision metric keys by outcome (`allow`, `deny`, `would_deny`), built on
    /// first use: a key holds its labels and their hash, so a decision registers the counter
    /// with the current recorder without building either.
    metric_keys: [OnceLock<metrics::Key>; 3],
}

#[derive(Debug, Default)]
pub(crate) struct TotalCounters {
    allowed: AtomicU64,
    denied: AtomicU64,
    no_matching_rule: AtomicU64,
    invalid_path: AtomicU64,
}

/// The counters of one policy.
#[derive(Debug, Clone)]
pub(crate) struct Counters {
    pub(crate) rules: Box<[(Arc<str>, Arc<RuleCounters>)]>,
    pub(crate) totals: Arc<TotalCounters>,
}

impl Counters {
    pub(crate) fn new(names: impl Iterator<Item = Arc<str>>) -> Self {
        Self {
            rules: names.map(|n| (n, Arc::default())).collect(),
            totals: Arc::default(),
        }
    }

    /// Takes over the counters of `old` for rules with the same name, and the totals.
    pub(crate) fn carry_over(&mut self, old: &Counters) {
        self.totals = Arc::clone(&old.totals);
        for (name, counters) in self.rules.iter_mut() {
            if let Some((_, previous)) = old.rules.iter().find(|(n, _)| n == name) {
                *counters = Arc::clone(previous);
            }
        }
    }

    pub(crate) fn record(&self, decision: &Decision) {
        let bump = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        let rule = |index: usize| self.rules.get(index).map(|(_, c)| c);
        match &decision.verdict {
            Verdict::Allow(r) => {
                bump(&self.totals.allowed);
                if let Some(c) = rule(r.index) {
                    bump(&c.allowed);
                }
            }
            Verdict::Deny(r) => {
                bump(&self.totals.denied);
                if let Some(c) = rule(r.index) {
                    bump(&c.denied);
                }
            }
            Verdict::DefaultDeny => {
                bump(&self.totals.denied);
                bump(&self.totals.no_matching_rule);
            }
            Verdict::InvalidPath(_) => {
                bump(&self.totals.denied);
                bump(&self.totals.invalid_path);
            }
        }
        if let Some(shadow) = &decision.shadow
            && let Some(r) = shadow.rule.as_ref().filter(|r| r.shadow)
            && let Some(c) = rule(r.index)
        {
            bump(if shadow.allowed {
                &c.would_allow
            } else {
                &c.would_deny
            });
        }
    }

    /// Counts the decision in the decisions metric and emits its audit event.
    pub(crate) fn emit(&self, request: &AuthzRequest<'_>, decision: &Decision) {
        let outcome = Outcome::of(decision);
        match decision.rule() {
            Some(rule) => match self.rules.get(rule.index) {
                Some((name, counters)) => {
                    let key = counters.metric_keys[outcome as usize].get_or_init(|| {
                        crate::telemetry::authz_decision_key(
                            outcome.as_str(),
                            metrics::SharedString::from_shared(Arc::clone(name)),
                        )
                    });
                    crate::telemetry::authz_decision(key);
                }
                // Not a rule of this policy (cannot happen): its name all the same.
                None => crate::telemetry::authz_decision(&crate::telemetry::authz_decision_key(
                    outcome.as_str(),
                    metrics::SharedString::from_shared(Arc::clone(&rule.name)),
                )),
            },
            None => {
                let reason = match decision.deny_reason() {
                    Some(crate::authz::DenyReason::InvalidPath(e)) => e.as_str(),
                    Some(other) => other.as_str(),
                    None => "default-deny",
                };
                crate::telemetry::authz_decision(&crate::telemetry::authz_decision_key(
                    outcome.as_str(),
                    metrics::SharedString::const_str(reason),
                ));
            }
        }
        emit(request, decision);
    }

    pub(crate) fn snapshot(&self) -> PolicyStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PolicyStats {
            allowed: load(&self.totals.allowed),
            denied: load(&self.totals.denied),
            no_matching_rule: load(&self.totals.no_matching_rule),
            invalid_path: load(&self.totals.invalid_path),
            rules: self
                .rules
                .iter()
                .map(|(name, c)| RuleStats {
                    name: Arc::clone(name),
                    allowed: load(&c.allowed),
                    denied: load(&c.denied),
                    would_allow: load(&c.would_allow),
                    would_deny: load(&c.would_deny),
                })
                .collect(),
        }
    }
}

/// Decision counts of a policy (verdicts, dry-run ones included), read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStats {
    allowed: u64,
    denied: u64,
    no_matching_rule: u64,
    invalid_path: u64,
    rules: Vec<RuleStats>,
}

impl PolicyStats {
    /// Requests allowed.
    pub fn allowed(&self) -> u64 {
        self.allowed
    }

    /// Requests denied, for any reason.
    pub fn denied(&self) -> u64 {
        self.denied
    }

    /// Requests denied because no allow rule matched.
    pub fn no_matching_rule(&self) -> u64 {
        self.no_matching_rule
    }

    /// Requests denied because their path could not be normalized safely.
    pub fn invalid_path(&self) -> u64 {
        self.invalid_path
    }

    /// Per-rule counts, in policy order.
    pub fn rules(&self) -> &[RuleStats] {
        &self.rules
    }

    /// The counts of the rule named `name`.
    pub fn rule(&self, name: &str) -> Option<&RuleStats> {
        self.rules.iter().find(|r| r.name() == name)
    }
}

/// Decision counts of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStats {
    name: Arc<str>,
    allowed: u64,
    denied: u64,
    would_allow: u64,
    would_deny: u64,
}

impl RuleStats {
    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests this rule allowed.
    pub fn allowed(&self) -> u64 {
        self.allowed
    }

    /// Requests this (deny) rule denied.
    pub fn denied(&self) -> u64 {
        self.denied
    }

    /// Requests this shadow rule would have allowed had it been enforced.
    pub fn would_allow(&self) -> u64 {
        self.would_allow
    }

    /// Requests this shadow rule would have denied had it been enforced.
    pub fn would_deny(&self) -> u64 {
        self.would_deny
    }
}

/// The `outcome` label of a decision.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Allow = 0,
    Deny = 1,
    WouldDeny = 2,
}

impl Outcome {
    fn of(decision: &Decision) -> Self {
        match (decision.is_allowed(), decision.is_dry_run()) {
            (true, _) => Self::Allow,
            (false, true) => Self::WouldDeny,
            (false, false) => Self::Deny,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::WouldDeny => "would_deny",
        }
    }
}

/// Emits the one audit event of a decision.
///
/// Allowed requests are logged at DEBUG, denied ones (and dry-run "would deny") at INFO.
fn emit(request: &AuthzRequest<'_>, decision: &Decision) {
    let rule = decision.rule_name();
    let reason = decision.deny_reason().map(|r| match r {
        crate::authz::DenyReason::InvalidPath(e) => e.as_str(),
        other => other.as_str(),
    });
    let shadow = decision.shadow().map(|s| {
        if s.would_allow() {
            "would-allow"
        } else {
            "would-deny"
        }
    });
    let shadow_rule = decision.shadow().and_then(|s| s.rule()).map(|r| r.name());
    let mode = if decision.is_dry_run() {
        "dry-run"
    } else {
        "enforce"
    };
    if decision.is_allowed() {
        tracing::debug!(
            target: AUDIT_TARGET,
            caller = %request.caller,
            method = %request.method,
            path = ?request.path,
            decision = "allow",
            rule,
            mode,
            shadow,
            shadow_rule,
            "request allowed"
        );
    } else if decision.is_dry_run() {
        tracing::info!(
            target: AUDIT_TARGET,
            caller = %request.caller,
            method = %request.method,
            path = ?request.path,
            decision = "would-deny",
            rule,
            reason,
            mode,
            shadow,
            shadow_rule,
            "request would be denied (dry run): passed"
        );
    } else {
        tracing::info!(
            target: AUDIT_TARGET,
            caller = %request.caller,
            method = %request.method,
            path = ?request.path,
            decision = "deny",
            rule,
            reason,
            mode,
            shadow,
            shadow_rule,
            "request denied"
        );
    }
}
