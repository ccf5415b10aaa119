//! Allow-list authorization: which caller may call which route.
//!
//! A [`Policy`] is a list of rules read like a firewall rule list. Default deny: a request is
//! allowed only when an allow rule matches it and no deny rule does. A rule matches when
//!
//! - the caller matches one of its **principals**: an exact SPIFFE ID
//!   (`spiffe://example.org/web`), a whole trust domain (`spiffe://example.org`), whole path
//!   segments below an ID (`spiffe://example.org/billing/*`: `/billing/api`, not `/billing` and
//!   not `/billingx`), or any authenticated peer (`*`);
//! - the request matches one of its **routes**: methods (or any method) and a path, exact
//!   (`/orders`) or whole segments below a prefix (`/orders/*`: `/orders/1`, `/orders/1/items`,
//!   not `/orders` and not `/ordersx`; `/*` matches every path). gRPC methods are paths:
//!   `/orders.v1.Orders/Get` or `/orders.v1.Orders/*`;
//! - its **conditions** on validated token claims (required scopes, claim equality) hold; a
//!   rule with conditions never matches a request without validated claims.
//!
//! Rules are validated and compiled once, when the policy is built in code ([`Policy::builder`])
//! or loaded from TOML ([`Policy::from_toml`], [`Policy::from_file`], and
//! [`PolicySource::from_file`] which follows the file's changes). [`Policy::evaluate`] is pure
//! and synchronous; [`Policy::explain`] serves table-driven tests of your own policies.
//!
//! # Policy files
//!
//! ```toml
//! mode = "enforce"            # or "dry-run": decisions are logged ("would deny"), requests pass
//!
//! [[rule]]
//! name = "web-reads-orders"   # labels audit events and counters; unique
//! effect = "allow"
//! principals = ["spiffe://example.org/web", "spiffe://example.org/batch/*"]
//! routes = [
//!   { methods = ["GET"], path = "/orders/*" },
//!   { path = "/orders.v1.Orders/Get" },        # no `methods`: any method
//! ]
//! [rule.when]                 # optional conditions on validated token claims
//! scopes = ["orders.read"]
//! claims = { tenant = "acme" }
//!
//! [[rule]]
//! name = "nobody-on-admin"
//! effect = "deny"             # deny rules win over allow rules
//! principals = ["*"]          # any authenticated peer
//! routes = [{ path = "/orders/admin/*" }]
//!
//! [[rule]]
//! name = "partner-writes"
//! effect = "allow"
//! shadow = true               # evaluated and logged as "would allow/deny", does not decide
//! principals = ["spiffe://partner.example"]
//! routes = [{ methods = ["POST"], path = "/orders" }]
//!
//! [[rule]]
//! name = "batch-reads"
//! effect = "allow"
//! principals = ["spiffe://example.org/batch/*"]
//! routes = [{ methods = ["GET"], path = "/orders/*" }]
//! rate = "100/s"              # per caller this rule admits; also "/m", "/h"
//! burst = 20                  # default: the rate's count
//! concurrency = 8             # requests in flight per caller
//! ```
//!
//! Unknown fields, empty `principals`, `routes` or `methods` lists, principal wildcards that are
//! not whole segments (`spiffe://example.org/bill*`), non-canonical route paths (`/a/`, `/a//b`,
//! `/a/../b`, `%2F`), lower-case or unknown methods and duplicate rule names are refused at load,
//! with an error naming the line and the field ([`PolicyError`]).
//!
//! # Limits
//!
//! An allow rule may limit each caller it admits: `rate` (requests per second, minute or hour,
//! a GCRA with `burst`) and `concurrency` (requests in flight), from code with [`Rule::rate`],
//! [`Rule::burst`] and [`Rule::concurrency`]. Every caller has its own count, and the
//! [`AuthorizeLayer`] applies the limits of the rule that allowed the request: over them, 429
//! (gRPC RESOURCE_EXHAUSTED) with `Retry-After`. A zero rate, burst or concurrency, a burst
//! without a rate, and limits on a deny or shadow rule (which admit no one) are refused at load.
//! The limits' state belongs to the policy (every layer reading one [`PolicySource`] shares it);
//! a reload keeps the state of a rule that keeps its name and its limits, and starts afresh for
//! a rule whose limits changed. Limits that do not depend on the route are the
//! [`RateLimitLayer`](crate::layer::rate_limit::RateLimitLayer)'s.
//!
//! # Paths
//!
//! Request paths are normalized before matching (see [`normalize_path`]): percent-decoded, `//`
//! and `.` segments dropped, `..` resolved, trailing slash dropped, so **`/a/` is `/a`**. A path
//! that cannot be normalized safely (`%2F`, `%5C`, `\`, control characters, malformed escapes,
//! invalid UTF-8, `..` above the root) is denied with [`DenyReason::InvalidPath`]. When the
//! normalized path differs from the request's, the [`AuthorizeLayer`] rewrites the request URI to
//! the normalized path (percent-encoded), so the router sees the path that was authorized.
//! Paths and principals compare case-sensitively.
//!
//! # Audit
//!
//! Every decision made through [`Policy::authorize`] (and so by the layer) emits one `tracing`
//! event with target [`AUDIT_TARGET`] (`secure_channel::authz`): caller ID, method, path, the
//! decision, the deciding rule or the denial reason, and the shadow verdict if any. Allowed
//! requests are logged at DEBUG, denials at INFO. [`Policy::stats`] (and [`PolicySource::stats`])
//! count allowed and denied decisions in total and per rule name.
//!
//! # Security
//!
//! - Default deny: an empty policy denies everything; a request matching no allow rule is denied.
//! - Deny rules win over allow rules; shadow rules never decide.
//! - Matching is on whole segments, for principals and paths alike: `/a/*` never admits `/ab`.
//! - The handshake can refuse peers that no allow rule could ever admit:
//!   [`Policy::could_ever_allow`], [`Policy::principals`].
//! - The policy never reaches the caller: a denial answers 403 `forbidden` (gRPC
//!   PERMISSION_DENIED) without saying which rule denied.
//!
//! [`AuthorizeLayer`]: crate::layer::authorize::AuthorizeLayer

mod audit;
mod compile;
mod decision;
mod error;
mod file;
mod limits;
mod model;
mod path;
mod policy;
mod source;

pub use audit::{AUDIT_TARGET, PolicyStats, RuleStats};
pub use decision::{AuthzRequest, Decision, DenyReason, RuleRef, ShadowVerdict};
pub use error::PolicyError;
pub use model::{Effect, Mode, Rule};
pub use path::{PathError, normalize_path};
pub use policy::{Policy, PolicyBuilder};
pub use source::{PolicyFileBuilder, PolicySource};

pub(crate) use path::encode_normalized;

#[cfg(test)]
mod tests;
