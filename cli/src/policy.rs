//! `policy check` and `policy explain`: policies tested the way the proxy applies them.

use secure_channel::authz::{Decision, Policy};
use serde_json::json;

use crate::cli::{PolicyCheck, PolicyCommand, PolicyExplain};
use crate::failure::{Failure, Outcome};

/// Runs `policy ...`.
pub(crate) fn run(command: PolicyCommand) -> Outcome {
    match command {
        PolicyCommand::Check(args) => check(&args),
        PolicyCommand::Explain(args) => explain(&args),
    }
}

/// Loads the policy; its error names the file, the line and the field.
fn load(path: &std::path::Path) -> Result<Policy, Failure> {
    Policy::from_file(path).map_err(|e| Failure::Invalid(e.to_string()))
}

fn check(args: &PolicyCheck) -> Outcome {
    let policy = load(&args.file)?;
    let rules: Vec<&str> = policy.rule_names().collect();
    if args.json {
        let out = json!({
            "file": args.file.display().to_string(),
            "valid": true,
            "mode": policy.mode().as_str(),
            "rules": rules,
        });
        println!("{out:#}");
    } else {
        println!(
            "{}: valid, {} rule{}, mode {}",
            args.file.display(),
            rules.len(),
            if rules.len() == 1 { "" } else { "s" },
            policy.mode().as_str()
        );
        for name in &rules {
            println!("  {name}");
        }
        if rules.is_empty() {
            println!("  (no rules: every request is denied)");
        }
    }
    Ok(())
}

fn explain(args: &PolicyExplain) -> Outcome {
    let policy = load(&args.file)?;
    let decision = if args.scopes.is_empty() && args.claims.is_empty() {
        policy.explain(&args.caller, &args.method, &args.path)
    } else {
        let mut claims = serde_json::Map::new();
        if !args.scopes.is_empty() {
            claims.insert("scope".into(), args.scopes.join(" ").into());
        }
        for (name, value) in &args.claims {
            if name == "scope" && !args.scopes.is_empty() {
                return Err(Failure::Usage(
                    "--claim scope=... and --scope cannot be given together".into(),
                ));
            }
            claims.insert(name.clone(), value.clone());
        }
        policy.explain_assuming_claims(&args.caller, &args.method, &args.path, claims)
    };
    print_decision(args, &decision);
    if decision.is_allowed() {
        Ok(())
    } else {
        Err(Failure::Negative)
    }
}

fn print_decision(args: &PolicyExplain, decision: &Decision) {
    let verdict = if decision.is_allowed() {
        "allow"
    } else {
        "deny"
    };
    if args.json {
        let out = json!({
            "decision": verdict,
            "rule": decision.rule_name(),
            "reason": decision.deny_reason().map(|r| r.to_string()),
            "dry_run": decision.is_dry_run(),
            "shadow": decision.shadow().map(|s| json!({
                "would_allow": s.would_allow(),
                "rule": s.rule().map(|r| r.name()),
            })),
            "caller": args.caller.to_string(),
            "method": args.method.as_str(),
            "path": args.path,
        });
        println!("{out:#}");
    } else {
        println!("{decision}");
        if let Some(shadow) = decision.shadow() {
            let would = if shadow.would_allow() {
                "allow"
            } else {
                "deny"
            };
            match shadow.rule() {
                Some(rule) => println!("shadow: would {would} by {rule}"),
                None => println!("shadow: would {would}"),
            }
        }
        if decision.is_dry_run() && !decision.is_allowed() {
            println!("(dry-run policy: the request would pass, but the verdict is deny)");
        }
    }
}
