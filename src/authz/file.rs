//! Policy files: the TOML schema, with the line of every value kept for error messages.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use toml::Spanned;

use crate::authz::PolicyError;
use crate::authz::model::{Effect, Located, MethodSpec, Mode, PrincipalSpec, RouteSpec, Rule};
use crate::authz::policy::{Policy, PolicyBuilder};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    rule: Vec<Spanned<RuleFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: Spanned<String>,
    /// Required: a file cut short must not turn a deny rule into an allow rule.
    effect: Effect,
    principals: Spanned<Vec<Spanned<String>>>,
    routes: Spanned<Vec<Spanned<RouteFile>>>,
    #[serde(default)]
    shadow: bool,
    #[serde(default)]
    when: Option<ConditionsFile>,
    #[serde(default)]
    rate: Option<Spanned<String>>,
    #[serde(default)]
    burst: Option<Spanned<i64>>,
    #[serde(default)]
    concurrency: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    #[serde(default)]
    methods: Option<Spanned<Vec<Spanned<String>>>>,
    path: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionsFile {
    #[serde(default)]
    scopes: Vec<Spanned<String>>,
    #[serde(default)]
    claims: BTreeMap<String, Spanned<toml::Value>>,
}

/// Line numbers (from 1) of byte offsets.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of(&self, offset: usize) -> u32 {
        let end = offset.min(self.0.len());
        let newlines = self
            .0
            .as_bytes()
            .get(..end)
            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count());
        u32::try_from(newlines).map_or(u32::MAX, |n| n.saturating_add(1))
    }

    fn locate<T>(&self, spanned: Spanned<T>) -> Located<T> {
        let line = Some(self.of(spanned.span().start));
        Located {
            value: spanned.into_inner(),
            line,
        }
    }

    /// A located list of located items, each item converted by `f`.
    fn locate_each<T, U>(
        &self,
        list: Spanned<Vec<Spanned<T>>>,
        mut f: impl FnMut(T) -> U,
    ) -> Located<Vec<Located<U>>> {
        let list = self.locate(list);
        Located {
            value: list
                .value
                .into_iter()
                .map(|item| {
                    let item = self.locate(item);
                    Located {
                        value: f(item.value),
                        line: item.line,
                    }
                })
                .collect(),
            line: list.line,
        }
    }
}

pub(crate) fn parse(text: &str) -> Result<Policy, PolicyError> {
    let lines = Lines(text);
    let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
        file: None,
        line: e.span().map(|s| lines.of(s.start)),
        message: e.message().trim().to_owned(),
    })?;
    let mut builder = PolicyBuilder::default().mode(file.mode);
    for rule in file.rule {
        let rule_line = lines.of(rule.span().start);
        builder = builder.rule(convert(&lines, rule.into_inner(), rule_line)?);
    }
    builder.build()
}

/// One `[[rule]]` table as a [`Rule`], every value with its line.
fn convert(lines: &Lines<'_>, file: RuleFile, rule_line: u32) -> Result<Rule, PolicyError> {
    let name = lines.locate(file.name);
    let mut rule = match file.effect {
        Effect::Allow => Rule::allow(name.value.clone()),
        Effect::Deny => Rule::deny(name.value.clone()),
    };
    rule.name = name;
    if file.shadow {
        rule = rule.shadow();
    }
    rule.principals = lines.locate_each(file.principals, PrincipalSpec::Text);
    rule.routes = lines.locate_each(file.routes, |route| route_spec(lines, route));
    if let Some(when) = file.when {
        add_conditions(lines, &mut rule, when, rule_line)?;
    }
    rule.rate = file.rate.map(|rate| lines.locate(rate));
    rule.burst = file.burst.map(|burst| lines.locate(burst));
    rule.concurrency = file.concurrency.map(|max| lines.locate(max));
    Ok(rule)
}

/// One entry of `routes`: its `methods` (absent: any method) and `path`.
fn route_spec(lines: &Lines<'_>, route: RouteFile) -> RouteSpec {
    RouteSpec {
        methods: route
            .methods
            .map(|methods| lines.locate_each(methods, MethodSpec::Text)),
        path: lines.locate(route.path),
    }
}

/// The `[rule.when]` table: required scopes and claims.
fn add_conditions(
    lines: &Lines<'_>,
    rule: &mut Rule,
    when: ConditionsFile,
    rule_line: u32,
) -> Result<(), PolicyError> {
    rule.scopes = when.scopes.into_iter().map(|s| lines.locate(s)).collect();
    for (claim, value) in when.claims {
        let value = lines.locate(value);
        let json = claim_value(value.value).map_err(|other| {
            rule.invalid(
                value.line.or(Some(rule_line)),
                "claims",
                format!("{claim} = {other}"),
                "a claim condition compares with a string, boolean or integer",
            )
        })?;
        rule.claims.push(Located {
            value: (claim, json),
            line: value.line,
        });
    }
    Ok(())
}

/// A claim condition's TOML value as JSON, or the value back if it is not a string, boolean
/// or integer.
fn claim_value(value: toml::Value) -> Result<Value, toml::Value> {
    match value {
        toml::Value::String(s) => Ok(Value::String(s)),
        toml::Value::Boolean(b) => Ok(Value::Bool(b)),
        toml::Value::Integer(i) => Ok(Value::from(i)),
        other => Err(other),
    }
}
