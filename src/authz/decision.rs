//! What is asked of a policy, and what it answers.

use std::fmt;
use std::sync::Arc;

use http::Method;
use spiffe::SpiffeId;

use crate::authz::PathError;
use crate::authz::model::Effect;
use crate::jwt::VerifiedClaims;

/// One request to decide: who calls, with which method, on which path, with which validated
/// token claims (if any).
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    pub(crate) caller: &'a SpiffeId,
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) claims: Option<&'a VerifiedClaims>,
}

impl<'a> AuthzRequest<'a> {
    /// A request by `caller` for `method` on `path` (the URI path, without the query; it is
    /// normalized before matching).
    pub fn new(caller: &'a SpiffeId, method: &'a Method, path: &'a str) -> Self {
        Self {
            caller,
            method,
            path,
            claims: None,
        }
    }

    /// Adds the validated token claims of the request.
    pub fn with_claims(mut self, claims: Option<&'a VerifiedClaims>) -> Self {
        self.claims = claims;
        self
    }

    /// The caller's SPIFFE ID.
    pub fn caller(&self) -> &SpiffeId {
        self.caller
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        self.method
    }

    /// The path, as given.
    pub fn path(&self) -> &str {
        self.path
    }
}

/// A rule of a policy, as named in a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    pub(crate) index: usize,
    pub(crate) name: Arc<str>,
    pub(crate) effect: Effect,
    pub(crate) shadow: bool,
}

impl RuleRef {
    /// The rule's position in the policy, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is an allow or a deny rule.
    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// Whether the rule is in shadow mode.
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rule #{} {:?}",
            self.effect.as_str(),
            self.index,
            self.name
        )
    }
}

/// Why a request was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    /// A deny rule matched (deny rules win over allow rules).
    DenyRule,
    /// No allow rule matched: default deny.
    NoMatchingRule,
    /// The request path cannot be normalized safely.
    InvalidPath(PathError),
}

impl DenyReason {
    /// A short, stable name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::DenyRule => "deny-rule",
            Self::NoMatchingRule => "no-matching-rule",
            Self::InvalidPath(_) => "invalid-path",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPath(e) => write!(f, "invalid-path ({e})"),
            other => f.write_str(other.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow(RuleRef),
    Deny(RuleRef),
    DefaultDeny,
    InvalidPath(PathError),
}

/// What the policy would decide if its shadow rules were enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowVerdict {
    pub(crate) allowed: bool,
    pub(crate) rule: Option<RuleRef>,
}

impl ShadowVerdict {
    /// Whether the request would be allowed.
    pub fn would_allow(&self) -> bool {
        self.allowed
    }

    /// The rule that would decide (`None`: default deny).
    pub fn rule(&self) -> Option<&RuleRef> {
        self.rule.as_ref()
    }
}

/// The answer of a policy for one request.
///
/// Only a policy makes one. [`is_allowed`](Self::is_allowed) is the policy's verdict;
/// [`passes`](Self::passes) says whether the request goes on (also true for a denial in
/// dry-run mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub(crate) verdict: Verdict,
    pub(crate) dry_run: bool,
    pub(crate) shadow: Option<ShadowVerdict>,
}

impl Decision {
    /// Whether the policy allows the request.
    pub fn is_allowed(&self) -> bool {
        matches!(self.verdict, Verdict::Allow(_))
    }

    /// Whether the request goes on: allowed, or denied by a policy in dry-run mode.
    pub fn passes(&self) -> bool {
        self.is_allowed() || self.dry_run
    }

    /// Whether the policy is in dry-run mode (a denial is only logged as "would deny").
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// The rule that decided; `None` for a default deny or an invalid path.
    pub fn rule(&self) -> Option<&RuleRef> {
        match &self.verdict {
            Verdict::Allow(rule) | Verdict::Deny(rule) => Some(rule),
            Verdict::DefaultDeny | Verdict::InvalidPath(_) => None,
        }
    }

    /// The name of the rule that decided.
    pub fn rule_name(&self) -> Option<&str> {
        self.rule().map(RuleRef::name)
    }

    /// Why the request was denied; `None` when allowed.
    pub fn deny_reason(&self) -> Option<DenyReason> {
        match &self.verdict {
            Verdict::Allow(_) => None,
            Verdict::Deny(_) => Some(DenyReason::DenyRule),
            Verdict::DefaultDeny => Some(DenyReason::NoMatchingRule),
            Verdict::InvalidPath(e) => Some(DenyReason::InvalidPath(*e)),
        }
    }

    /// What the decision would be with the shadow rules enforced; `None` when no shadow rule
    /// matched.
    pub fn shadow(&self) -> Option<&ShadowVerdict> {
        self.shadow.as_ref()
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_allowed() { "allow" } else { "deny" };
        let mode = if self.dry_run { " (dry run)" } else { "" };
        match (&self.verdict, self.deny_reason()) {
            (Verdict::Allow(rule) | Verdict::Deny(rule), _) => {
                write!(f, "{verdict} by {rule}{mode}")
            }
            (_, Some(reason)) => write!(f, "{verdict}: {reason}{mode}"),
            (_, None) => write!(f, "{verdict}{mode}"),
        }
    }
}
