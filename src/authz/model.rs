//! The policy model: rules as written (in code or in a file), and their validation into
//! compiled rules.

use std::fmt;
use std::sync::Arc;

use http::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::authz::PolicyError;
use crate::authz::limits::{LimitSpec, RuleLimiter};
use crate::authz::path::{PathPattern, parse_route_path};
use crate::identity::IdMatcher;
use crate::jwt::VerifiedClaims;
use crate::limit::Rate;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// The request is allowed, unless a deny rule also matches.
    #[default]
    Allow,
    /// The request is denied, whatever allow rules match.
    Deny,
}

impl Effect {
    /// `"allow"` or `"deny"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// Whether a policy's decisions are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Denied requests are refused (the default).
    #[default]
    Enforce,
    /// Decisions are computed, counted and logged ("would deny"), but every request passes.
    DryRun,
}

impl Mode {
    /// `"enforce"` or `"dry-run"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dry-run",
        }
    }
}

/// A value with the line it was read from (files only).
#[derive(Debug, Clone)]
pub(crate) struct Located<T> {
    pub(crate) value: T,
    pub(crate) line: Option<u32>,
}

impl<T> Located<T> {
    pub(crate) fn code(value: T) -> Self {
        Self { value, line: None }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum PrincipalSpec {
    Text(String),
    Matcher(IdMatcher),
    AnyAuthenticated,
}

#[derive(Debug, Clone)]
pub(crate) enum MethodSpec {
    Text(String),
    Method(Method),
}

#[derive(Debug, Clone)]
pub(crate) struct RouteSpec {
    /// `None`: any method.
    pub(crate) methods: Option<Located<Vec<Located<MethodSpec>>>>,
    pub(crate) path: Located<String>,
}

/// One allow or deny rule, as written; validated when the policy is built.
///
/// A rule matches a request when the caller matches one of its principals, the request matches
/// one of its routes, and the token claims (if the rule has conditions) satisfy every condition.
///
/// ```
/// use http::Method;
/// use secure_channel::authz::Rule;
///
/// let rule = Rule::allow("web-reads-orders")
///     .principal("spiffe://example.org/web")
///     .principal("spiffe://example.org/batch/*")
///     .route(Method::GET, "/orders/*")
///     .route_any_method("/orders.v1.Orders/*")
///     .require_scope("orders.read")
///     // Each of these callers: 100 requests a second (bursts of 20), 8 in flight.
///     .rate("100/s")
///     .burst(20)
///     .concurrency(8);
/// # let _ = rule;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Rule {
    pub(crate) name: Located<String>,
    pub(crate) effect: Effect,
    pub(crate) principals: Located<Vec<Located<PrincipalSpec>>>,
    pub(crate) routes: Located<Vec<Located<RouteSpec>>>,
    pub(crate) scopes: Vec<Located<String>>,
    pub(crate) claims: Vec<Located<(String, Value)>>,
    pub(crate) shadow: bool,
    pub(crate) rate: Option<Located<String>>,
    pub(crate) burst: Option<Located<i64>>,
    pub(crate) concurrency: Option<Located<i64>>,
}

impl Rule {
    fn new(name: impl Into<String>, effect: Effect) -> Self {
        Self {
            name: Located::code(name.into()),
            effect,
            principals: Located::code(Vec::new()),
            routes: Located::code(Vec::new()),
            scopes: Vec::new(),
            claims: Vec::new(),
            shadow: false,
            rate: None,
            burst: None,
            concurrency: None,
        }
    }

    /// A rule allowing its principals on its routes. The name labels audit events and counters:
    /// 1 to 64 characters among `A-Z a-z 0-9 . _ : -`, unique in the policy.
    pub fn allow(name: impl Into<String>) -> Self {
        Self::new(name, Effect::Allow)
    }

    /// A rule denying its principals on its routes, whatever allow rules say.
    pub fn deny(name: impl Into<String>) -> Self {
        Self::new(name, Effect::Deny)
    }

    /// Adds a principal written as an [`IdMatcher`]: an exact SPIFFE ID, a trust domain
    /// (`spiffe://example.org`) or whole segments below a path (`spiffe://example.org/billing/*`).
    /// `"*"` means any authenticated peer, as [`any_authenticated_peer`](Self::any_authenticated_peer).
    pub fn principal(mut self, matcher: impl Into<String>) -> Self {
        self.principals
            .value
            .push(Located::code(PrincipalSpec::Text(matcher.into())));
        self
    }

    /// Adds a principal already parsed.
    pub fn principal_matcher(mut self, matcher: IdMatcher) -> Self {
        self.principals
            .value
            .push(Located::code(PrincipalSpec::Matcher(matcher)));
        self
    }

    /// Adds every authenticated peer as a principal: any SPIFFE ID the channel verified, in any
    /// trust domain it trusts (federated ones included).
    pub fn any_authenticated_peer(mut self) -> Self {
        self.principals
            .value
            .push(Located::code(PrincipalSpec::AnyAuthenticated));
        self
    }

    /// Adds a route: `method` on `path` (exact, or `/prefix/*` for whole segments below it;
    /// gRPC: `/package.Service/Method` or `/package.Service/*`).
    pub fn route(self, method: Method, path: impl Into<String>) -> Self {
        self.route_methods([method], path)
    }

    /// Adds a route for several methods.
    pub fn route_methods(
        mut self,
        methods: impl IntoIterator<Item = Method>,
        path: impl Into<String>,
    ) -> Self {
        let methods = methods
            .into_iter()
            .map(|m| Located::code(MethodSpec::Method(m)))
            .collect();
        self.routes.value.push(Located::code(RouteSpec {
            methods: Some(Located::code(methods)),
            path: Located::code(path.into()),
        }));
        self
    }

    /// Adds a route for every method.
    pub fn route_any_method(mut self, path: impl Into<String>) -> Self {
        self.routes.value.push(Located::code(RouteSpec {
            methods: None,
            path: Located::code(path.into()),
        }));
        self
    }

    /// Requires the validated token to carry `scope`. A rule with conditions never matches a
    /// request without validated claims.
    pub fn require_scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(Located::code(scope.into()));
        self
    }

    /// Requires the validated token's claim `name` to equal `value` (a string, boolean or
    /// integer).
    pub fn require_claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.claims.push(Located::code((name.into(), value.into())));
        self
    }

    /// Puts the rule in shadow mode: it is evaluated and logged as "would allow/deny" but does
    /// not decide.
    pub fn shadow(mut self) -> Self {
        self.shadow = true;
        self
    }

    /// Limits the request rate of each caller this rule admits: `"100/s"`, `"5/m"`, `"1/h"`
    /// (see [`Rate`](crate::layer::rate_limit::Rate)). Each caller has its own count; the
    /// [`AuthorizeLayer`](crate::layer::authorize::AuthorizeLayer) refuses a request over it
    /// with 429 (gRPC RESOURCE_EXHAUSTED). Allow rules only.
    pub fn rate(mut self, rate: impl Into<String>) -> Self {
        self.rate = Some(Located::code(rate.into()));
        self
    }

    /// How many requests a caller this rule admits may make at once after being idle (with a
    /// [`rate`](Self::rate); default: the rate's count).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(Located::code(i64::from(burst)));
        self
    }

    /// Limits the requests in flight of each caller this rule admits to `max`. Allow rules
    /// only.
    pub fn concurrency(mut self, max: u32) -> Self {
        self.concurrency = Some(Located::code(i64::from(max)));
        self
    }

    pub(crate) fn name(&self) -> &str {
        &self.name.value
    }

    /// The error for a field of this rule (`PolicyError::InvalidRule`).
    pub(crate) fn invalid(
        &self,
        line: Option<u32>,
        field: &'static str,
        value: impl Into<String>,
        problem: impl Into<String>,
    ) -> PolicyError {
        PolicyError::InvalidRule {
            file: None,
            line,
            rule: self.name.value.clone(),
            field,
            value: value.into(),
            problem: problem.into(),
        }
    }

    /// Validates and compiles the rule. Fields are checked in the order they are written
    /// (name, principals, routes, scopes, claims, rate, burst, concurrency); the first problem
    /// is the error.
    pub(crate) fn compile(&self) -> Result<CompiledRule, PolicyError> {
        let name = self.compile_name()?;
        let principals = self.compile_principals()?;
        let routes = self.compile_routes()?;
        let scopes = self.compile_scopes()?;
        let claims = self.compile_claims()?;
        let limits = self
            .compile_limits()?
            .map(|spec| Arc::new(RuleLimiter::new(name.clone(), spec)));
        Ok(CompiledRule {
            name,
            effect: self.effect,
            shadow: self.shadow,
            principals,
            routes,
            conditions: Conditions {
                scopes: scopes.into(),
                claims: claims.into(),
            },
            limits,
        })
    }

    /// The limits (`rate`, `burst`, `concurrency`): on enforced allow rules only, each at
    /// least 1.
    fn compile_limits(&self) -> Result<Option<LimitSpec>, PolicyError> {
        let first = [
            self.rate
                .as_ref()
                .map(|r| ("rate", r.line, r.value.clone())),
            self.burst
                .as_ref()
                .map(|b| ("burst", b.line, b.value.to_string())),
            self.concurrency
                .as_ref()
                .map(|c| ("concurrency", c.line, c.value.to_string())),
        ]
        .into_iter()
        .flatten()
        .next();
        let Some((field, line, value)) = first else {
            return Ok(None);
        };
        if self.effect == Effect::Deny {
            return Err(self.invalid(
                line,
                field,
                value,
                "a deny rule admits no one: rate, burst and concurrency go on allow rules",
            ));
        }
        if self.shadow {
            return Err(self.invalid(
                line,
                field,
                value,
                "a shadow rule never admits a request, so its limits would never apply",
            ));
        }
        let mut rate =
            match &self.rate {
                None => None,
                Some(text) => Some(text.value.parse::<Rate>().map_err(|e| {
                    self.invalid(text.line, "rate", text.value.clone(), e.problem())
                })?),
            };
        if let Some(burst) = &self.burst {
            let Some(with_burst) = rate else {
                return Err(self.invalid(
                    burst.line,
                    "burst",
                    burst.value.to_string(),
                    "a burst needs a rate (`rate = \"100/s\"`)",
                ));
            };
            rate = Some(with_burst.burst(self.positive(burst, "burst")?.get()));
        }
        let rate = match (rate, &self.rate) {
            (Some(rate), Some(text)) => Some((
                rate,
                rate.quota().map_err(|_| {
                    self.invalid(
                        text.line,
                        "rate",
                        text.value.clone(),
                        "0 requests or a burst of 0 refuses every request",
                    )
                })?,
            )),
            _ => None,
        };
        let concurrency = match &self.concurrency {
            None => None,
            Some(max) => Some(self.positive(max, "concurrency")?),
        };
        Ok(Some(LimitSpec { rate, concurrency }))
    }

    /// A count from 1 to `u32::MAX`.
    fn positive(
        &self,
        value: &Located<i64>,
        field: &'static str,
    ) -> Result<std::num::NonZeroU32, PolicyError> {
        u32::try_from(value.value)
            .ok()
            .and_then(std::num::NonZeroU32::new)
            .ok_or_else(|| {
                self.invalid(
                    value.line,
                    field,
                    value.value.to_string(),
                    "must be a whole number from 1 to 4294967295 (0 would refuse every request)",
                )
            })
    }

    /// The name: 1 to 64 characters among `A-Z a-z 0-9 . _ : -`.
    fn compile_name(&self) -> Result<Arc<str>, PolicyError> {
        let name = &self.name.value;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(self.invalid(
                self.name.line,
                "name",
                name.clone(),
                "must be 1 to 64 characters among A-Z a-z 0-9 . _ : -",
            ));
        }
        Ok(Arc::from(name.as_str()))
    }

    /// The principals, at least one, duplicates dropped.
    fn compile_principals(&self) -> Result<Vec<Principal>, PolicyError> {
        if self.principals.value.is_empty() {
            return Err(self.invalid(
                self.principals.line,
                "principals",
                "[]",
                "must list at least one principal (a rule for nobody is a mistake)",
            ));
        }
        let mut principals = Vec::with_capacity(self.principals.value.len());
        for spec in &self.principals.value {
            let principal = self.compile_principal(spec)?;
            if !principals.contains(&principal) {
                principals.push(principal);
            }
        }
        Ok(principals)
    }

    fn compile_principal(&self, spec: &Located<PrincipalSpec>) -> Result<Principal, PolicyError> {
        Ok(match &spec.value {
            PrincipalSpec::AnyAuthenticated => Principal::AnyAuthenticated,
            PrincipalSpec::Matcher(m) => Principal::Id(m.clone()),
            PrincipalSpec::Text(text) if text == "*" => Principal::AnyAuthenticated,
            PrincipalSpec::Text(text) => match IdMatcher::parse(text) {
                Ok(m) => Principal::Id(m),
                Err(e) => {
                    let reason = e.to_string();
                    return Err(self.invalid(spec.line, "principals", text.clone(), reason));
                }
            },
        })
    }

    /// The routes, at least one; each path is checked before its methods.
    fn compile_routes(&self) -> Result<Vec<Route>, PolicyError> {
        if self.routes.value.is_empty() {
            return Err(self.invalid(
                self.routes.line,
                "routes",
                "[]",
                "must list at least one route",
            ));
        }
        let mut routes = Vec::with_capacity(self.routes.value.len());
        for route in &self.routes.value {
            let path = &route.value.path;
            let pattern = parse_route_path(&path.value)
                .map_err(|problem| self.invalid(path.line, "path", path.value.clone(), problem))?;
            let methods = match &route.value.methods {
                None => MethodSet::any(),
                Some(list) => self.compile_methods(list, route.line)?,
            };
            routes.push(Route {
                methods,
                path: pattern,
            });
        }
        Ok(routes)
    }

    /// A route's list of methods: present, so not empty.
    fn compile_methods(
        &self,
        list: &Located<Vec<Located<MethodSpec>>>,
        route_line: Option<u32>,
    ) -> Result<MethodSet, PolicyError> {
        if list.value.is_empty() {
            return Err(self.invalid(
                list.line.or(route_line),
                "methods",
                "[]",
                "must list at least one method; leave `methods` out for any method",
            ));
        }
        let mut set = MethodSet::none();
        for spec in &list.value {
            let method = match &spec.value {
                MethodSpec::Method(m) => m.clone(),
                MethodSpec::Text(text) => parse_method(text)
                    .map_err(|problem| self.invalid(spec.line, "methods", text.clone(), problem))?,
            };
            set.insert(method);
        }
        Ok(set)
    }

    /// The required scopes: each one word.
    fn compile_scopes(&self) -> Result<Vec<Box<str>>, PolicyError> {
        let mut scopes = Vec::with_capacity(self.scopes.len());
        for scope in &self.scopes {
            let text = &scope.value;
            if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(self.invalid(
                    scope.line,
                    "scopes",
                    text.clone(),
                    "a scope is one non-empty word without whitespace",
                ));
            }
            scopes.push(Box::<str>::from(text.as_str()));
        }
        Ok(scopes)
    }

    /// The required claims: a name, and a string, boolean or integer to compare with.
    fn compile_claims(&self) -> Result<Vec<(Box<str>, Value)>, PolicyError> {
        let mut claims = Vec::with_capacity(self.claims.len());
        for claim in &self.claims {
            let (name, value) = &claim.value;
            if name.is_empty() {
                return Err(self.invalid(claim.line, "claims", name.clone(), "empty claim name"));
            }
            let supported = match value {
                Value::String(_) | Value::Bool(_) => true,
                Value::Number(n) => n.is_i64() || n.is_u64(),
                Value::Null | Value::Array(_) | Value::Object(_) => false,
            };
            if !supported {
                return Err(self.invalid(
                    claim.line,
                    "claims",
                    format!("{name} = {value}"),
                    "a claim condition compares with a string, boolean or integer",
                ));
            }
            claims.push((Box::<str>::from(name.as_str()), value.clone()));
        }
        Ok(claims)
    }
}

const STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

fn parse_method(text: &str) -> Result<Method, String> {
    STANDARD_METHODS
        .iter()
        .find(|m| m.as_str() == text)
        .cloned()
        .ok_or_else(|| {
            "expected one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH (upper case)"
                .to_owned()
        })
}

fn standard_bit(method: &Method) -> Option<u16> {
    STANDARD_METHODS
        .iter()
        .position(|m| m == method)
        .map(|i| 1 << i)
}

/// A compiled set of methods.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct MethodSet {
    any: bool,
    bits: u16,
    extensions: Box<[Method]>,
}

impl MethodSet {
    pub(crate) fn any() -> Self {
        Self {
            any: true,
            bits: 0,
            extensions: Box::new([]),
        }
    }

    fn none() -> Self {
        Self {
            any: false,
            bits: 0,
            extensions: Box::new([]),
        }
    }

    fn insert(&mut self, method: Method) {
        match standard_bit(&method) {
            Some(bit) => self.bits |= bit,
            None => {
                if !self.extensions.contains(&method) {
                    let mut list = self.extensions.to_vec();
                    list.push(method);
                    self.extensions = list.into();
                }
            }
        }
    }

    /// Whether `method` (with its precomputed standard bit) is in the set.
    #[inline]
    pub(crate) fn contains(&self, method: &Method, bit: Option<u16>) -> bool {
        self.any
            || match bit {
                Some(bit) => self.bits & bit != 0,
                None => self.extensions.contains(method),
            }
    }
}

/// The bit of a request method, computed once per request.
#[inline]
pub(crate) fn method_bit(method: &Method) -> Option<u16> {
    standard_bit(method)
}

impl fmt::Display for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.any {
            return f.write_str("*");
        }
        let mut first = true;
        let standard = STANDARD_METHODS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.bits & (1 << i) != 0)
            .map(|(_, m)| m);
        for m in standard.chain(self.extensions.iter()) {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(m.as_str())?;
        }
        Ok(())
    }
}

/// Who a compiled rule is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Principal {
    AnyAuthenticated,
    Id(IdMatcher),
}

/// One compiled route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) methods: MethodSet,
    pub(crate) path: PathPattern,
}

/// Conditions on validated token claims.
#[derive(Debug, Clone, Default)]
pub(crate) struct Conditions {
    scopes: Box<[Box<str>]>,
    claims: Box<[(Box<str>, Value)]>,
}

impl Conditions {
    pub(crate) fn is_empty(&self) -> bool {
        self.scopes.is_empty() && self.claims.is_empty()
    }

    /// Whether the claims satisfy every condition; with conditions and no claims, never.
    #[inline]
    pub(crate) fn satisfied_by(&self, claims: Option<&VerifiedClaims>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(claims) = claims else {
            return false;
        };
        self.scopes.iter().all(|s| claims.has_scope(s))
            && self
                .claims
                .iter()
                .all(|(name, value)| claims.claim(name) == Some(value))
    }
}

/// A validated rule.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub(crate) name: Arc<str>,
    pub(crate) effect: Effect,
    pub(crate) shadow: bool,
    pub(crate) principals: Vec<Principal>,
    pub(crate) routes: Vec<Route>,
    pub(crate) conditions: Conditions,
    /// The rule's limits on each caller it admits, with their state.
    pub(crate) limits: Option<Arc<RuleLimiter>>,
}
