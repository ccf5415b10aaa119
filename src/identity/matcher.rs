//! ID matchers: which SPIFFE IDs a rule or a channel accepts.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use spiffe::{SpiffeId, TrustDomain};

/// Matches SPIFFE IDs: one exact ID, a whole trust domain, or a path prefix on whole segments.
///
/// Written as:
/// - `spiffe://example.org/billing/api`: exactly that ID;
/// - `spiffe://example.org`: every ID in the trust domain `example.org`;
/// - `spiffe://example.org/billing/*`: IDs one or more whole segments below `/billing`
///   (`/billing/api`, `/billing/api/v2`), but not `/billing` itself and not `/billingx`.
///
/// Paths compare case-sensitively. Inputs must be canonical SPIFFE IDs (a lower-case trust
/// domain, no empty, `.` or `..` segments, no trailing slash); anything else is refused rather
/// than normalized, so a matcher always means what it says.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdMatcher {
    kind: MatcherKind,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum MatcherKind {
    Exact(SpiffeId),
    TrustDomain(TrustDomain),
    /// `path` is empty (the trust domain root) or a canonical path without trailing slash.
    PathPrefix {
        trust_domain: TrustDomain,
        path: String,
    },
}

/// Why a string is not a valid ID matcher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE ID matcher {input:?}: {reason}")]
pub struct IdMatcherError {
    input: String,
    reason: String,
}

impl IdMatcherError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        Self {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }

    /// The matcher text that was refused.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl IdMatcher {
    /// Matches exactly one SPIFFE ID.
    pub fn exact(id: SpiffeId) -> Self {
        Self {
            kind: MatcherKind::Exact(id),
        }
    }

    /// Matches every SPIFFE ID of a trust domain.
    pub fn trust_domain(trust_domain: TrustDomain) -> Self {
        Self {
            kind: MatcherKind::TrustDomain(trust_domain),
        }
    }

    /// Matches IDs one or more whole segments below `parent` (not `parent` itself).
    pub fn children_of(parent: &SpiffeId) -> Self {
        Self {
            kind: MatcherKind::PathPrefix {
                trust_domain: parent.trust_domain().clone(),
                path: parent.path().to_owned(),
            },
        }
    }

    /// Parses the textual form described on [`IdMatcher`].
    pub fn parse(input: &str) -> Result<Self, IdMatcherError> {
        let rest = input
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdMatcherError::new(input, "must start with spiffe://"))?;
        if rest.is_empty() {
            return Err(IdMatcherError::new(input, "trust domain is missing"));
        }
        if let Some(parent) = input.strip_suffix("/*") {
            if parent.contains('*') {
                return Err(IdMatcherError::new(
                    input,
                    "`*` may only stand alone as the last segment",
                ));
            }
            // `spiffe://*` ends with `/*` too (the scheme's slash): its parent is not even
            // `spiffe://`, and slicing it as if it were would panic.
            let Some(parent_rest) = parent.strip_prefix("spiffe://") else {
                return Err(IdMatcherError::new(input, "trust domain is missing"));
            };
            // `spiffe://td/*`: every ID below the trust domain root.
            if !parent_rest.contains('/') {
                let td = parse_trust_domain(input, parent)?;
                return Ok(Self {
                    kind: MatcherKind::PathPrefix {
                        trust_domain: td,
                        path: String::new(),
                    },
                });
            }
            let id = parse_canonical_id(input, parent)?;
            return Ok(Self::children_of(&id));
        }
        if input.contains('*') {
            return Err(IdMatcherError::new(
                input,
                "a wildcard must be a whole last segment (`spiffe://td/path/*`); partial segments such as `/bill*` are refused",
            ));
        }
        if !rest.contains('/') {
            return Ok(Self::trust_domain(parse_trust_domain(input, input)?));
        }
        Ok(Self::exact(parse_canonical_id(input, input)?))
    }

    /// Whether `id` is matched.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match &self.kind {
            MatcherKind::Exact(exact) => exact == id,
            MatcherKind::TrustDomain(td) => id.trust_domain() == td,
            MatcherKind::PathPrefix { trust_domain, path } => {
                id.trust_domain() == trust_domain
                    && id
                        .path()
                        .strip_prefix(path.as_str())
                        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
            }
        }
    }

    /// The trust domain every matched ID belongs to.
    pub fn trust_domain_of_matches(&self) -> &TrustDomain {
        match &self.kind {
            MatcherKind::Exact(id) => id.trust_domain(),
            MatcherKind::TrustDomain(td) => td,
            MatcherKind::PathPrefix { trust_domain, .. } => trust_domain,
        }
    }
}

fn parse_trust_domain(input: &str, text: &str) -> Result<TrustDomain, IdMatcherError> {
    let td = TrustDomain::new(text).map_err(|e| IdMatcherError::new(input, e.to_string()))?;
    if td.id_string() != text {
        return Err(IdMatcherError::new(
            input,
            format!(
                "trust domain is not canonical (canonical form: {})",
                td.id_string()
            ),
        ));
    }
    Ok(td)
}

fn parse_canonical_id(input: &str, text: &str) -> Result<SpiffeId, IdMatcherError> {
    let id = SpiffeId::new(text).map_err(|e| IdMatcherError::new(input, e.to_string()))?;
    if id.to_string() != text {
        return Err(IdMatcherError::new(
            input,
            format!("SPIFFE ID is not canonical (canonical form: {id})"),
        ));
    }
    Ok(id)
}

impl FromStr for IdMatcher {
    type Err = IdMatcherError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for IdMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            MatcherKind::Exact(id) => write!(f, "{id}"),
            MatcherKind::TrustDomain(td) => write!(f, "{}", td.id_string()),
            MatcherKind::PathPrefix { trust_domain, path } => {
                write!(f, "{}{}/*", trust_domain.id_string(), path)
            }
        }
    }
}

impl fmt::Debug for IdMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdMatcher({self})")
    }
}

/// A set of ID matchers; an ID is allowed when any matcher matches it.
///
/// An empty list matches nothing: default deny. Every kind of matcher is looked up in a hash
/// set (exact IDs by the ID, prefixes by each of the ID's parent paths), so a list of
/// thousands of workloads costs a handshake a few lookups, not a scan.
#[derive(Clone, Default)]
pub struct AllowList {
    /// Every matcher, in the order added (for display and [`matchers`](Self::matchers)).
    matchers: Vec<IdMatcher>,
    /// The same matchers split by kind for lookup (shared: lists are cloned into errors and
    /// configs).
    index: Arc<Index>,
}

#[derive(Clone, Default)]
struct Index {
    /// The exact IDs.
    exact: HashSet<SpiffeId>,
    /// The trust domains matched whole.
    trust_domains: HashSet<TrustDomain>,
    /// The path prefixes (without their `/*`; empty for `spiffe://td/*`), by trust domain.
    prefixes: HashMap<TrustDomain, HashSet<String>>,
}

impl Index {
    /// Adds `matcher`; `false` if it was there.
    fn insert(&mut self, matcher: &IdMatcher) -> bool {
        match &matcher.kind {
            MatcherKind::Exact(id) => self.exact.insert(id.clone()),
            MatcherKind::TrustDomain(td) => self.trust_domains.insert(td.clone()),
            MatcherKind::PathPrefix { trust_domain, path } => self
                .prefixes
                .entry(trust_domain.clone())
                .or_default()
                .insert(path.clone()),
        }
    }

    fn matches(&self, id: &SpiffeId) -> bool {
        let td = id.trust_domain();
        if self.exact.contains(id) || self.trust_domains.contains(td) {
            return true;
        }
        let Some(prefixes) = self.prefixes.get(td) else {
            return false;
        };
        // `spiffe://td/a/*` matches `/a/` and more: the prefixes that can match are the path
        // up to each of its slashes (a SPIFFE ID's segments are never empty).
        let path = id.path();
        path.match_indices('/')
            .any(|(at, _)| prefixes.contains(&path[..at]))
    }
}

/// Two lists are equal when they hold the same matchers in the same order.
impl PartialEq for AllowList {
    fn eq(&self, other: &Self) -> bool {
        self.matchers == other.matchers
    }
}

impl Eq for AllowList {}

impl AllowList {
    /// A list that matches nothing.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Adds a matcher.
    pub fn push(&mut self, matcher: IdMatcher) {
        if Arc::make_mut(&mut self.index).insert(&matcher) {
            self.matchers.push(matcher);
        }
    }

    /// Whether any matcher matches `id`.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        self.index.matches(id)
    }

    /// Whether the list matches nothing.
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// The matchers, in the order added.
    pub fn matchers(&self) -> &[IdMatcher] {
        &self.matchers
    }
}

impl FromIterator<IdMatcher> for AllowList {
    fn from_iter<I: IntoIterator<Item = IdMatcher>>(iter: I) -> Self {
        let mut list = Self::default();
        for m in iter {
            list.push(m);
        }
        list
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.matchers.is_empty() {
            return f.write_str("[nobody]");
        }
        f.write_str("[")?;
        for (i, m) in self.matchers.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Debug for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AllowList{self}")
    }
}

impl TryFrom<&str> for IdMatcher {
    type Error = IdMatcherError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for IdMatcher {
    type Error = IdMatcherError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::new(s).unwrap()
    }

    fn list(matchers: &[&str]) -> AllowList {
        matchers.iter().map(|m| m.parse().unwrap()).collect()
    }

    #[test]
    fn lists_compare_by_their_matchers_and_say_when_empty() {
        let a = list(&["spiffe://example.org/web", "spiffe://example.org/billing/*"]);
        assert_eq!(a, a.clone());
        assert_eq!(
            a,
            list(&["spiffe://example.org/web", "spiffe://example.org/billing/*"])
        );
        assert_ne!(a, list(&["spiffe://example.org/web"]));
        assert_ne!(a, AllowList::deny_all());
        assert!(AllowList::deny_all().is_empty());
        assert!(!a.is_empty());
        assert!(!list(&["spiffe://example.org"]).is_empty());
    }

    #[test]
    fn debug_forms_name_the_matchers() {
        let matcher: IdMatcher = "spiffe://example.org/billing/*".parse().unwrap();
        assert_eq!(
            format!("{matcher:?}"),
            "IdMatcher(spiffe://example.org/billing/*)"
        );
        assert_eq!(
            format!("{:?}", list(&["spiffe://example.org/web"])),
            "AllowList[spiffe://example.org/web]"
        );
    }

    #[test]
    fn matcher_table() {
        let cases: &[(&str, &str, bool)] = &[
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
                "spiffe://example.org/billingx",
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
                "spiffe://example.org/billing/*",
                "spiffe://example.org/Billing/api",
                false,
            ),
            ("spiffe://example.org/*", "spiffe://example.org/a", true),
            ("spiffe://example.org/*", "spiffe://example.org", false),
            ("spiffe://example.org", "spiffe://example.org/a/b", true),
            ("spiffe://example.org", "spiffe://example.org", true),
            ("spiffe://example.org", "spiffe://example.org.evil/a", false),
            ("spiffe://example.org", "spiffe://other.org/a", false),
            ("spiffe://example.org/a/b", "spiffe://example.org/a/b", true),
            (
                "spiffe://example.org/a/b",
                "spiffe://example.org/a/bc",
                false,
            ),
            (
                "spiffe://example.org/a/b",
                "spiffe://example.org/a/b/c",
                false,
            ),
            (
                "spiffe://example.org/a/b",
                "spiffe://example.org/A/b",
                false,
            ),
        ];
        for (matcher, candidate, expected) in cases {
            let m = IdMatcher::parse(matcher).unwrap();
            assert_eq!(
                m.matches(&id(candidate)),
                *expected,
                "{matcher} vs {candidate}"
            );
            assert_eq!(m.to_string(), *matcher, "round trip of {matcher}");
        }
    }

    #[test]
    fn refuses_unsafe_or_non_canonical_matchers() {
        for bad in [
            "",
            "*",
            "example.org",
            "spiffe://",
            "spiffe://example.org/bill*",
            "spiffe://example.org/*/x",
            "spiffe://example.org/a/**",
            "spiffe://Example.org/a",
            "spiffe://Example.org",
            "spiffe://example.org/a/",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/../b",
            "https://example.org/a",
        ] {
            assert!(IdMatcher::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    /// Found by the `id_matcher` fuzz target (fuzz/README.md): `spiffe://*` ends with `/*`
    /// through the scheme's own slash, and parsing it panicked slicing a parent shorter than
    /// `spiffe://`.
    #[test]
    fn wildcard_without_trust_domain_is_refused_not_a_panic() {
        for bad in ["spiffe://*", "spiffe:///*", "spiffe://*/*"] {
            let error = IdMatcher::parse(bad).expect_err(bad);
            assert_eq!(error.input(), bad);
        }
        // The fuzzer's input as it was: the matcher text, NUL, a candidate ID.
        let crash = b"spiffe://*\0s&ple.org";
        let text = crash.split(|&b| b == 0).next().unwrap_or_default();
        assert!(IdMatcher::parse(&String::from_utf8_lossy(text)).is_err());
    }

    #[test]
    fn empty_allow_list_denies_everyone() {
        let list = AllowList::deny_all();
        assert!(!list.allows(&id("spiffe://example.org/a")));
        assert_eq!(list.to_string(), "[nobody]");
    }

    #[test]
    fn allow_list_matches_exact_ids_and_patterns_and_keeps_order() {
        let list: AllowList = [
            "spiffe://example.org/web",
            "spiffe://example.org/billing/*",
            "spiffe://example.org/web",
            "spiffe://partner.org",
            "spiffe://example.org/billing/*",
        ]
        .into_iter()
        .map(|m| IdMatcher::parse(m).unwrap())
        .collect();
        assert_eq!(
            list.to_string(),
            "[spiffe://example.org/web, spiffe://example.org/billing/*, spiffe://partner.org]"
        );
        for (candidate, allowed) in [
            ("spiffe://example.org/web", true),
            ("spiffe://example.org/web/x", false),
            ("spiffe://example.org/we", false),
            ("spiffe://example.org/billing/api", true),
            ("spiffe://example.org/billing", false),
            ("spiffe://partner.org/any/thing", true),
            ("spiffe://other.org/web", false),
        ] {
            assert_eq!(list.allows(&id(candidate)), allowed, "{candidate}");
        }
        let many: AllowList = (0..1000)
            .map(|i| IdMatcher::exact(id(&format!("spiffe://example.org/ns/prod/svc-{i}"))))
            .collect();
        assert_eq!(many.matchers().len(), 1000);
        assert!(many.allows(&id("spiffe://example.org/ns/prod/svc-500")));
        assert!(!many.allows(&id("spiffe://example.org/ns/prod/svc-1000")));
    }

    #[test]
    fn prefixes_match_at_every_depth_and_only_below_themselves() {
        let list = list(&[
            "spiffe://example.org/*",
            "spiffe://partner.org/a/b/*",
            "spiffe://partner.org/x/*",
        ]);
        for (candidate, allowed) in [
            ("spiffe://example.org/web", true),
            ("spiffe://example.org/a/b/c/d", true),
            ("spiffe://partner.org/a/b/c", true),
            ("spiffe://partner.org/a/b/c/d/e", true),
            ("spiffe://partner.org/a/b", false),
            ("spiffe://partner.org/a/bc/d", false),
            ("spiffe://partner.org/a/c", false),
            ("spiffe://partner.org/xy/z", false),
            ("spiffe://partner.org/x/y", true),
            ("spiffe://other.org/a/b/c", false),
        ] {
            assert_eq!(list.allows(&id(candidate)), allowed, "{candidate}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The indexed list allows exactly the IDs one of its matchers matches.
        #[test]
        fn the_index_agrees_with_the_matchers(
            matchers in proptest::collection::vec("(a|b)(/(a|b|ab)){0,3}(/\\*)?|(a|b)", 1..6),
            candidate in "(a|b)(/(a|b|ab)){1,4}",
        ) {
            let spiffe = |text: &str| match text.split_once('/') {
                Some((td, path)) => format!("spiffe://{td}.org/{path}"),
                None => format!("spiffe://{text}.org"),
            };
            let matchers: Vec<IdMatcher> = matchers
                .iter()
                .filter_map(|m| IdMatcher::parse(&spiffe(m)).ok())
                .collect();
            let list: AllowList = matchers.iter().cloned().collect();
            let candidate = id(&spiffe(&candidate));
            proptest::prop_assert_eq!(
                list.allows(&candidate),
                matchers.iter().any(|m| m.matches(&candidate))
            );
        }
    }
}
