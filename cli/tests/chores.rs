//! The chores as a user runs them: `dev-ca`, `svid inspect`, `policy check` and `explain`,
//! their exit codes (0 ok, 1 denied or invalid, 2 usage) and their refusals of bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime};

use secure_channel::testkit::DevCa;
use support::*;

#[tokio::test]
async fn every_subcommand_has_help_with_an_example() {
    for command in [
        &["svid", "inspect"][..],
        &["policy", "check"],
        &["policy", "explain"],
        &["dev-ca", "init"],
        &["dev-ca", "issue"],
    ] {
        let output = run(command.iter().chain(&["--help"])).await;
        let (code, stdout, _) = parts(&output);
        assert_eq!(code, 0, "{command:?} --help");
        assert!(stdout.contains("Example"), "{command:?} --help: {stdout}");
        assert!(
            stdout.contains("secure-channel "),
            "{command:?} --help: {stdout}"
        );
    }
    let (code, stdout, _) = parts(&run(["--help"]).await);
    assert_eq!(code, 0);
    assert!(stdout.contains("Exit codes"), "{stdout}");
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let (code, _, stderr) = parts(&run(["svid", "inspect", "--no-such-flag", "x"]).await);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = parts(&run(["frobnicate"]).await);
    assert_eq!(code, 2, "{stderr}");
    let dir = Dir::new();
    let policy = dir.write("p.toml", "");
    let (code, _, stderr) = parts(
        &run([
            "policy".as_ref(),
            "explain".as_ref(),
            policy.as_os_str(),
            "--caller".as_ref(),
            "https://example.org/web".as_ref(),
            "--method".as_ref(),
            "GET".as_ref(),
            "--path".as_ref(),
            "/".as_ref(),
        ])
        .await,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--caller"), "{stderr}");
}

#[tokio::test]
async fn dev_ca_mints_svids_that_inspect_accepts() {
    let dir = Dir::new();
    let pki = dir.path("pki");
    let pki_s = pki.to_str().unwrap();
    let (code, stdout, stderr) =
        parts(&run(["dev-ca", "init", pki_s, "--trust-domain", "example.org"]).await);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("example.org"), "{stdout}");
    assert!(stderr.contains("NOT FOR PRODUCTION"), "{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the CA key is private: {mode:o}");
    }
    // A second init does not overwrite the CA.
    let (code, _, stderr) = parts(&run(["dev-ca", "init", pki_s]).await);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("ca.key"), "{stderr}");

    let (code, stdout, stderr) =
        parts(&run(["dev-ca", "issue", pki_s, "spiffe://example.org/billing/api"]).await);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("billing-api.pem"), "{stdout}");
    let cert = pki.join("billing-api.pem");
    let bundle = pki.join("ca.pem");

    let (code, stdout, stderr) = parts(
        &run([
            "svid".as_ref(),
            "inspect".as_ref(),
            cert.as_os_str(),
            "--bundle".as_ref(),
            bundle.as_os_str(),
        ])
        .await,
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("SPIFFE ID:   spiffe://example.org/billing/api"),
        "{stdout}"
    );
    assert!(stdout.contains("X.509-SVID:  valid"), "{stdout}");
    assert!(stdout.contains("chains to"), "{stdout}");

    // The files are what the library loads.
    let chain = std::fs::read(&cert).unwrap();
    let key = std::fs::read(pki.join("billing-api.key")).unwrap();
    let svid = secure_channel::Svid::from_pem(&chain, &key).unwrap();
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/billing/api"
    );

    // Another trust domain than the CA's, and a name that would escape the directory.
    let (code, _, stderr) = parts(&run(["dev-ca", "issue", pki_s, "spiffe://other.org/api"]).await);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("trust domain"), "{stderr}");
    let (code, _, stderr) = parts(
        &run([
            "dev-ca",
            "issue",
            pki_s,
            "spiffe://example.org/x",
            "--name",
            "../x",
        ])
        .await,
    );
    assert_eq!(code, 2, "{stderr}");
    // No CA in the directory.
    let empty = dir.path("empty");
    let (code, _, stderr) = parts(
        &run([
            "dev-ca",
            "issue",
            empty.to_str().unwrap(),
            "spiffe://example.org/x",
        ])
        .await,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("ca.pem"), "{stderr}");
}

async fn inspect(dir: &Dir, chain_pem: &str, bundle_pem: Option<&str>) -> (i32, String, String) {
    let cert = dir.write("svid.pem", chain_pem);
    let mut args = vec![
        "svid".into(),
        "inspect".into(),
        cert.into_os_string(),
        "--json".into(),
    ];
    if let Some(bundle) = bundle_pem {
        args.push("--bundle".into());
        args.push(dir.write("bundle.pem", bundle).into_os_string());
    }
    parts(&run(args).await)
}

#[tokio::test]
async fn svid_inspect_names_the_rule_an_svid_breaks() {
    let dir = Dir::new();
    let ca = DevCa::new("example.org").unwrap();
    let bundle = ca.bundle_pem();

    let good = ca.svid("spiffe://example.org/api").issue().unwrap();
    let (code, stdout, stderr) = inspect(&dir, &good.chain_pem(), Some(&bundle)).await;
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["spiffe_id"], "spiffe://example.org/api");
    assert_eq!(json["valid_svid"], true);
    assert_eq!(json["chains_to_bundle"], true);
    assert_eq!(json["chain"].as_array().unwrap().len(), 1);

    // An intermediate: the chain holds both, and validates through it.
    let intermediate = ca.intermediate().unwrap();
    let through = intermediate
        .svid("spiffe://example.org/api")
        .issue()
        .unwrap();
    let (code, stdout, _) = inspect(&dir, &through.chain_pem(), Some(&bundle)).await;
    assert_eq!(code, 0, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["chain"].as_array().unwrap().len(), 2);
    assert_eq!(json["chain"][1]["is_ca"], true);

    let cases = [
        (
            ca.svid("spiffe://example.org/api").as_ca().issue().unwrap(),
            "leaf certificate is a CA",
        ),
        (
            ca.svid("spiffe://example.org/api")
                .without_uri()
                .issue()
                .unwrap(),
            "no URI SAN",
        ),
        (
            ca.svid("spiffe://example.org/api")
                .extra_uri("spiffe://example.org/other")
                .issue()
                .unwrap(),
            "2 URI SANs",
        ),
        (
            ca.svid("spiffe://example.org/api")
                .validity(
                    SystemTime::now() - Duration::from_secs(7200),
                    SystemTime::now() - Duration::from_secs(3600),
                )
                .issue()
                .unwrap(),
            "expired",
        ),
    ];
    for (svid, rule) in cases {
        let (code, stdout, _) = inspect(&dir, &svid.chain_pem(), None).await;
        assert_eq!(code, 1, "{rule}: {stdout}");
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(json["valid_svid"], false, "{rule}");
        let problem = json["svid_problem"].as_str().unwrap();
        assert!(problem.contains(rule), "{rule}: {problem}");
    }

    // A valid SVID of another CA of the same trust domain: valid, but does not chain.
    let other = DevCa::new("example.org").unwrap();
    let foreign = other.svid("spiffe://example.org/api").issue().unwrap();
    let (code, stdout, _) = inspect(&dir, &foreign.chain_pem(), Some(&bundle)).await;
    assert_eq!(code, 1, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["valid_svid"], true);
    assert_eq!(json["chains_to_bundle"], false);
    assert!(
        json["chain_problem"]
            .as_str()
            .unwrap()
            .contains("spiffe://example.org/api"),
        "{json}"
    );

    // The human form says the same.
    let cert = dir.write("foreign.pem", foreign.chain_pem());
    let bundle_path = dir.write("bundle.pem", &bundle);
    let (code, stdout, _) = parts(
        &run([
            "svid".as_ref(),
            "inspect".as_ref(),
            cert.as_os_str(),
            "--bundle".as_ref(),
            bundle_path.as_os_str(),
        ])
        .await,
    );
    assert_eq!(code, 1);
    assert!(stdout.contains("DOES NOT CHAIN"), "{stdout}");
}

#[tokio::test]
async fn svid_inspect_refuses_bad_files() {
    let dir = Dir::new();
    let missing = dir.path("missing.pem");
    let (code, _, stderr) =
        parts(&run(["svid".as_ref(), "inspect".as_ref(), missing.as_os_str()]).await);
    assert_eq!(code, 1);
    assert!(stderr.contains("missing.pem"), "{stderr}");

    for (name, content) in [
        ("garbage.pem", &b"not a certificate at all"[..]),
        ("truncated.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n"),
        (
            "bad-der.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ),
        ("empty.pem", b""),
    ] {
        let path = dir.write(name, content);
        let (code, _, stderr) =
            parts(&run(["svid".as_ref(), "inspect".as_ref(), path.as_os_str()]).await);
        assert_eq!(code, 1, "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }

    // A bundle that is not a CA (the SVID given as the bundle).
    let ca = DevCa::new("example.org").unwrap();
    let svid = ca.svid("spiffe://example.org/api").issue().unwrap();
    let (code, _, stderr) = inspect(&dir, &svid.chain_pem(), Some(&svid.chain_pem())).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--bundle"), "{stderr}");
}

const POLICY: &str = r#"
[[rule]]
name = "web-reads-orders"
effect = "allow"
principals = ["spiffe://example.org/web"]
routes = [{ methods = ["GET"], path = "/orders/*" }]

[[rule]]
name = "writers"
effect = "allow"
principals = ["spiffe://example.org/web"]
routes = [{ methods = ["POST"], path = "/orders" }]
[rule.when]
scopes = ["orders.write"]

[[rule]]
name = "nobody-on-admin"
effect = "deny"
principals = ["*"]
routes = [{ path = "/orders/admin/*" }]
"#;

#[tokio::test]
async fn policy_check_reports_rules_and_names_the_bad_line() {
    let dir = Dir::new();
    let good = dir.write("policy.toml", POLICY);
    let (code, stdout, stderr) =
        parts(&run(["policy".as_ref(), "check".as_ref(), good.as_os_str()]).await);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("3 rules"), "{stdout}");
    assert!(stdout.contains("nobody-on-admin"), "{stdout}");
    let (code, stdout, _) = parts(
        &run([
            "policy".as_ref(),
            "check".as_ref(),
            good.as_os_str(),
            "--json".as_ref(),
        ])
        .await,
    );
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["rules"].as_array().unwrap().len(), 3);
    assert_eq!(json["mode"], "enforce");

    let bad = dir.write(
        "bad.toml",
        "[[rule]]\nname = \"x\"\neffect = \"allow\"\nprincipals = [\"spiffe://example.org/bill*\"]\nroutes = [{ path = \"/\" }]\n",
    );
    let (code, _, stderr) =
        parts(&run(["policy".as_ref(), "check".as_ref(), bad.as_os_str()]).await);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("bad.toml:4"), "{stderr}");
    assert!(stderr.contains("principals"), "{stderr}");
    let missing = dir.path("missing.toml");
    let (code, _, stderr) =
        parts(&run(["policy".as_ref(), "check".as_ref(), missing.as_os_str()]).await);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

async fn explain(policy: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "policy".into(),
        "explain".into(),
        policy.as_os_str().to_owned(),
    ];
    args.extend(extra.iter().map(Into::into));
    parts(&run(args).await)
}

#[tokio::test]
async fn policy_explain_exits_0_for_allow_and_1_for_deny() {
    let dir = Dir::new();
    let policy = dir.write("policy.toml", POLICY);
    let web = ["--caller", "spiffe://example.org/web"];
    let ask = |method: &'static str, path: &'static str| {
        let mut args = web.to_vec();
        args.extend(["--method", method, "--path", path]);
        args
    };

    let (code, stdout, _) = explain(&policy, &ask("GET", "/orders/42")).await;
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("allow") && stdout.contains("web-reads-orders"),
        "{stdout}"
    );

    let (code, stdout, _) = explain(&policy, &ask("GET", "/orders/admin/users")).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("deny") && stdout.contains("nobody-on-admin"),
        "{stdout}"
    );

    // Normalized as the proxy does: the `..` does not get around the deny rule.
    let (code, stdout, _) = explain(&policy, &ask("GET", "/orders/x/../admin/users")).await;
    assert_eq!(code, 1, "{stdout}");

    let (code, stdout, _) = explain(&policy, &ask("DELETE", "/orders/42")).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("no-matching-rule"), "{stdout}");

    // A rule with a scope condition: denied without the scope, allowed with it.
    let (code, _, _) = explain(&policy, &ask("POST", "/orders")).await;
    assert_eq!(code, 1);
    let mut with_scope = ask("POST", "/orders");
    with_scope.extend(["--scope", "orders.write", "--json"]);
    let (code, stdout, _) = explain(&policy, &with_scope).await;
    assert_eq!(code, 0, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["decision"], "allow");
    assert_eq!(json["rule"], "writers");

    let (code, stdout, _) = explain(
        &policy,
        &[
            "--caller",
            "spiffe://example.org/other",
            "--method",
            "GET",
            "--path",
            "/orders/1",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["decision"], "deny");
    assert_eq!(json["reason"], "no-matching-rule");
}
