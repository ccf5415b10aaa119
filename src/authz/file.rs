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

    let principals = lines.locate(file.principals);
    rule.principals = Located {
        value: principals
            .value
            .into_iter()
            .map(|p| {
                let p = lines.locate(p);
                Located {
                    value: PrincipalSpec::Text(p.value),
                    line: p.line,
                }
            })
            .collect(),
        line: principals.line,
    };

    let routes = lines.locate(file.routes);
    rule.routes = Located {
        value: routes
            .value
            .into_iter()
            .map(|r| {
                let r = lines.locate(r);
                let methods = r.value.methods.map(|m| {
                    let m = lines.locate(m);
                    Located {
                        value: m
                            .value
                            .into_iter()
                            .map(|text| {
                                let text = lines.locate(text);
                                Located {
                                    value: MethodSpec::Text(text.value),
                                    line: text.line,
                                }
                            })
                            .collect(),
                        line: m.line,
                    }
                });
                Located {
                    value: RouteSpec {
                        methods,
                        path: lines.locate(r.value.path),
                    },
                    line: r.line,
                }
            })
            .collect(),
        line: routes.line,
    };

    if let Some(when) = file.when {
        rule.scopes = when.scopes.into_iter().map(|s| lines.locate(s)).collect();
        for (claim, value) in when.claims {
            let value = lines.locate(value);
            let json = match value.value {
                toml::Value::String(s) => Value::String(s),
                toml::Value::Boolean(b) => Value::Bool(b),
                toml::Value::Integer(i) => Value::from(i),
                other => {
                    return Err(PolicyError::InvalidRule {
                        file: None,
                        line: value.line.or(Some(rule_line)),
                        rule: rule.name().to_owned(),
                        field: "claims",
                        value: format!("{claim} = {other}"),
                        problem: "a claim condition compares with a string, boolean or integer"
                            .into(),
                    });
                }
            };
            rule.claims.push(Located {
                value: (claim, json),
                line: value.line,
            });
        }
    }
    Ok(rule)
}
