//! `--admin`: health, readiness, Prometheus metrics and status of a running proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime};

use support::*;

#[tokio::test]
async fn health_ready_metrics_and_status() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    pki.svid("web", WEB_ID);
    let policy = pki.dir.write(
        "policy.toml",
        "[[rule]]\nname = \"r\"\neffect = \"allow\"\nprincipals = [\"spiffe://example.org/other\"]\nroutes = [{ path = \"/*\" }]\n",
    );
    let backend = BackendServer::start().await;
    let mut args: Vec<String> = vec![
        "proxy".into(),
        "inbound".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--admin".into(),
        "127.0.0.1:0".into(),
        "--backend".into(),
        backend.addr.to_string(),
        "--allow".into(),
        WEB_ID.into(),
        "--policy".into(),
        policy.to_str().unwrap().into(),
    ];
    args.extend(pki.cred_args("proxy"));
    let running = Running::start(args).await;

    assert_eq!(running.admin_get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(running.admin_get("/ready").await.0, 200);

    // A client keeps a pooled connection open.
    let (_source, channel) = pki.client(WEB_ID, PROXY_ID);
    let client = lib_client(&channel);
    assert_eq!(get(&client, &running.url("/x"), &[]).await.unwrap().0, 200);

    let (status, body) = running.admin_get("/status").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["spiffe_id"], PROXY_ID);
    assert_eq!(json["credentials"], "valid");
    assert_eq!(json["trust_domains"], serde_json::json!(["example.org"]));
    assert_eq!(json["policy_revision"], 1);
    assert_eq!(json["open_connections"], 1, "{json}");
    assert_eq!(json["role"], "inbound http");
    assert!(json["not_after"].as_str().unwrap().ends_with('Z'), "{json}");

    // The policy file changes: its revision follows.
    pki.dir.write(
        "policy.toml",
        "[[rule]]\nname = \"r2\"\neffect = \"allow\"\nprincipals = [\"spiffe://example.org/other\"]\nroutes = [{ path = \"/*\" }]\n",
    );
    within(async {
        loop {
            let (_, body) = running.admin_get("/status").await;
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            if json["policy_revision"] == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    let (status, metrics) = running.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "secure_channel_handshakes_total",
        "secure_channel_svid_not_after_seconds",
        "secure_channel_connections_open",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}

#[tokio::test]
async fn ready_is_503_once_the_svid_expired() {
    let pki = Pki::new();
    let now = SystemTime::now();
    let short = pki
        .ca
        .svid(PROXY_ID)
        .validity(now - Duration::from_secs(60), now + Duration::from_secs(3))
        .issue()
        .unwrap();
    pki.write_svid("proxy", &short);
    let mut args: Vec<String> = vec![
        "proxy".into(),
        "inbound".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--admin".into(),
        "127.0.0.1:0".into(),
        "--backend".into(),
        "127.0.0.1:9".into(),
        "--allow".into(),
        WEB_ID.into(),
    ];
    args.extend(pki.cred_args("proxy"));
    let running = Running::start(args).await;
    assert_eq!(running.admin_get("/ready").await.0, 200);
    let body = within(async {
        loop {
            let (status, body) = running.admin_get("/ready").await;
            if status == 503 {
                break body;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(body.contains("expired"), "{body}");
    let (_, status) = running.admin_get("/status").await;
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(json["credentials"], "expired");
    // Still alive: /healthz is about the process.
    assert_eq!(running.admin_get("/healthz").await.0, 200);
}

#[tokio::test]
async fn admin_must_be_loopback() {
    let pki = Pki::new();
    pki.svid("proxy", PROXY_ID);
    let mut args: Vec<String> = vec![
        "proxy".into(),
        "inbound".into(),
        "--admin".into(),
        "0.0.0.0:9901".into(),
        "--backend".into(),
        "127.0.0.1:9".into(),
        "--allow".into(),
        WEB_ID.into(),
    ];
    args.extend(pki.cred_args("proxy"));
    let (code, _, stderr) = parts(&run(&args).await);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--admin"), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
}
