//! The inspection helpers the `secure-channel` tool is built on: a chain checked by a channel's
//! own verifier without a connection, the SVID rules on a leaf alone, a policy explained with
//! assumed claims, and a development CA saved and loaded again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use http::Method;
use secure_channel::authz::Policy;
use secure_channel::identity::{ChainError, PeerRejection, SvidError, check_svid_leaf};
use secure_channel::testkit::{DevCa, TestkitError};
use secure_channel::{MemorySource, SecureChannel, SpiffeId};

fn server(ca: &DevCa, allow: &str) -> (MemorySource, SecureChannel) {
    let source = MemorySource::new(ca.credentials("spiffe://example.org/api").unwrap());
    let channel = SecureChannel::builder(&source)
        .allow_client(allow)
        .build()
        .unwrap();
    (source, channel)
}

#[test]
fn verify_client_chain_checks_as_a_handshake_does() {
    let ca = DevCa::new("example.org").unwrap();
    let (_source, channel) = server(&ca, "spiffe://example.org/web");

    let web = ca.svid("spiffe://example.org/web").issue().unwrap();
    let peer = channel.verify_client_chain(web.chain()).unwrap();
    assert_eq!(peer.spiffe_id().to_string(), "spiffe://example.org/web");

    let intermediate = ca.intermediate().unwrap();
    let through = intermediate
        .svid("spiffe://example.org/web")
        .issue()
        .unwrap();
    assert!(channel.verify_client_chain(through.chain()).is_ok());
    // Without its intermediate the chain does not reach the bundle.
    assert!(matches!(
        channel.verify_client_chain(through.clone_leaf_only().chain()),
        Err(PeerRejection::InvalidChain {
            reason: ChainError::UnknownIssuer,
            ..
        })
    ));

    let other = ca.svid("spiffe://example.org/other").issue().unwrap();
    assert!(matches!(
        channel.verify_client_chain(other.chain()),
        Err(PeerRejection::NotAllowed { .. })
    ));
    let foreign = DevCa::new("example.org").unwrap();
    let forged = foreign.svid("spiffe://example.org/web").issue().unwrap();
    assert!(matches!(
        channel.verify_client_chain(forged.chain()),
        Err(PeerRejection::InvalidChain { .. })
    ));
    let elsewhere = DevCa::new("other.org").unwrap();
    let stranger = elsewhere.svid("spiffe://other.org/web").issue().unwrap();
    assert!(matches!(
        channel.verify_client_chain(stranger.chain()),
        Err(PeerRejection::UnknownTrustDomain { .. })
    ));
    let expired = ca
        .svid("spiffe://example.org/web")
        .validity(
            SystemTime::now() - Duration::from_secs(7200),
            SystemTime::now() - Duration::from_secs(3600),
        )
        .issue()
        .unwrap();
    assert!(matches!(
        channel.verify_client_chain(expired.chain()),
        Err(PeerRejection::InvalidChain {
            reason: ChainError::Expired { .. },
            ..
        })
    ));
    let not_svid = ca.svid("spiffe://example.org/web").as_ca().issue().unwrap();
    assert!(matches!(
        channel.verify_client_chain(not_svid.chain()),
        Err(PeerRejection::NotSvid(SvidError::LeafIsCa))
    ));
    assert!(matches!(
        channel.verify_client_chain(&[]),
        Err(PeerRejection::NoCertificate)
    ));
}

#[test]
fn check_svid_leaf_names_the_rule_broken() {
    let ca = DevCa::new("example.org").unwrap();
    let good = ca.svid("spiffe://example.org/web").issue().unwrap();
    assert_eq!(
        check_svid_leaf(good.leaf()).unwrap().to_string(),
        "spiffe://example.org/web"
    );
    let cases = [
        (
            ca.svid("spiffe://example.org/web").without_uri(),
            SvidError::NoUriSan,
        ),
        (
            ca.svid("spiffe://example.org/web").as_ca(),
            SvidError::LeafIsCa,
        ),
        (
            ca.svid("spiffe://example.org/web").with_key_cert_sign(),
            SvidError::KeyCertSign,
        ),
        (
            ca.svid("spiffe://example.org/web").without_key_usage(),
            SvidError::MissingKeyUsage,
        ),
    ];
    for (builder, expected) in cases {
        let svid = builder.issue().unwrap();
        assert_eq!(check_svid_leaf(svid.leaf()).unwrap_err(), expected);
    }
    assert!(matches!(
        check_svid_leaf(b"not DER"),
        Err(SvidError::Malformed(_))
    ));
}

#[test]
fn explain_assuming_claims_decides_conditions() {
    let policy = Policy::from_toml(
        r#"
        [[rule]]
        name = "writers"
        effect = "allow"
        principals = ["spiffe://example.org/web"]
        routes = [{ methods = ["POST"], path = "/orders" }]
        [rule.when]
        scopes = ["orders.write"]
        claims = { tenant = "acme" }
        "#,
    )
    .unwrap();
    let web = SpiffeId::new("spiffe://example.org/web").unwrap();
    let claims = |value: serde_json::Value| value.as_object().unwrap().clone();
    assert!(!policy.explain(&web, &Method::POST, "/orders").is_allowed());
    let allowed = policy.explain_assuming_claims(
        &web,
        &Method::POST,
        "/orders",
        claims(serde_json::json!({"scope": "orders.read orders.write", "tenant": "acme"})),
    );
    assert!(allowed.is_allowed(), "{allowed}");
    assert_eq!(allowed.rule_name(), Some("writers"));
    for wrong in [
        serde_json::json!({"scope": "orders.read", "tenant": "acme"}),
        serde_json::json!({"scope": "orders.write", "tenant": "other"}),
        serde_json::json!({}),
    ] {
        let decision =
            policy.explain_assuming_claims(&web, &Method::POST, "/orders", claims(wrong.clone()));
        assert!(!decision.is_allowed(), "{wrong}: {decision}");
    }
}

#[test]
fn a_dev_ca_saved_as_pem_loads_and_keeps_issuing() {
    let ca = DevCa::new("example.org").unwrap();
    let loaded = DevCa::from_pem(&ca.certificate_pem(), &ca.key_pem()).unwrap();
    assert_eq!(loaded.trust_domain().as_str(), "example.org");
    assert_eq!(loaded.bundle_pem(), ca.bundle_pem());
    // An SVID of the loaded CA is accepted by a channel trusting the original's bundle.
    let (_source, channel) = server(&ca, "spiffe://example.org/web");
    let web = loaded.svid("spiffe://example.org/web").issue().unwrap();
    channel.verify_client_chain(web.chain()).unwrap();

    let other = DevCa::new("example.org").unwrap();
    let refusals = [
        DevCa::from_pem(&ca.certificate_pem(), &other.key_pem()),
        DevCa::from_pem(&web.chain_pem(), &web.key_pem()),
        DevCa::from_pem("not pem", &ca.key_pem()),
        DevCa::from_pem(&ca.certificate_pem(), "not a key"),
    ];
    for refusal in refusals {
        assert!(
            matches!(refusal, Err(TestkitError::InvalidCa { .. })),
            "{refusal:?}"
        );
    }
    // The key's Debug form is redacted; its PEM is the key.
    assert!(!format!("{loaded:?}").contains("PRIVATE KEY"));
    assert!(ca.key_pem().contains("PRIVATE KEY"));
}
