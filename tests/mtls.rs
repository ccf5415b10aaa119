//! SPIFFE-verified mutual TLS over loopback: success paths and every rejection reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime};

use rustls_pki_types::{CertificateDer, ServerName};
use secure_channel::identity::SvidError;
use secure_channel::identity::{ChainError, PeerRejection};
use secure_channel::testkit::{DevCa, ExtendedKeyUsage, IssuedSvid, KeyAlgorithm};
use secure_channel::tls::KeyExchange;
use secure_channel::{
    AllowList, ConfigError, ConnectionError, Credentials, IdMatcher, MemorySource, SecureChannel,
    TrustBundles,
};
use support::*;

const SERVER_ID: &str = "spiffe://example.org/api";
const CLIENT_ID: &str = "spiffe://example.org/web";

fn server_channel(ca: &DevCa) -> SecureChannel {
    let creds = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    SecureChannel::builder(&creds)
        .allow_client(CLIENT_ID)
        .build()
        .unwrap()
}

fn client_channel(ca: &DevCa, id: &str, expect: &str) -> SecureChannel {
    let creds = MemorySource::new(ca.credentials(id).unwrap());
    SecureChannel::builder(&creds)
        .expect_server(expect)
        .build()
        .unwrap()
}

#[tokio::test]
async fn mutual_tls_success_both_sides_see_identities() {
    init_tracing();
    let ca = ca("example.org");
    let mut server = TestServer::start(server_channel(&ca)).await;
    let client = client_channel(&ca, CLIENT_ID, SERVER_ID);

    let mut stream = within(client.connect_tcp(server.addr)).await.unwrap();
    let peer = stream.peer_identity().clone();
    assert_eq!(peer.spiffe_id().to_string(), SERVER_ID);
    assert_eq!(peer.trust_domain().as_str(), "example.org");
    assert_eq!(
        stream.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(stream.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(read_line(&mut stream).await.unwrap(), CLIENT_ID);
    round_trip(&mut stream, "hello").await.unwrap();
    assert_eq!(server.next().await.unwrap(), CLIENT_ID);

    // The thumbprint is the SHA-256 of the leaf DER, and not-after comes from the leaf.
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(peer.leaf_certificate().as_ref()).into();
    assert_eq!(peer.thumbprint_sha256(), &digest);
    assert!(peer.not_after() > SystemTime::now());
}

#[tokio::test]
async fn key_algorithms_and_intermediates_are_accepted() {
    let root = ca("example.org");
    let intermediate = root.intermediate().unwrap();
    let mut server = TestServer::start(server_channel(&root)).await;
    for (issuer, algorithm) in [
        (&root, KeyAlgorithm::Ed25519),
        (&root, KeyAlgorithm::Rsa2048),
        (&root, KeyAlgorithm::EcdsaP384),
        (&intermediate, KeyAlgorithm::EcdsaP256),
    ] {
        let svid = issuer
            .svid(CLIENT_ID)
            .key_algorithm(algorithm)
            .issue()
            .unwrap();
        let creds = MemorySource::new(Credentials::new(
            svid.to_svid().unwrap(),
            TrustBundles::new().with(root.bundle().unwrap()),
        ));
        let client = SecureChannel::builder(&creds)
            .expect_server(SERVER_ID)
            .build()
            .unwrap();
        let mut stream = within(client.connect_tcp(server.addr)).await.unwrap();
        assert_eq!(
            read_line(&mut stream).await.unwrap(),
            CLIENT_ID,
            "{algorithm:?}"
        );
        assert_eq!(server.next().await.unwrap(), CLIENT_ID);
    }
}

/// Presents `svid` to a server trusting `example.org` (and `other.org`) with a foreign client,
/// and returns what the server's accept said.
async fn server_verdict(
    svid: &IssuedSvid,
    server_ca: &DevCa,
    extra: Option<&DevCa>,
) -> Result<String, ConnectionError> {
    server_verdict_and_alert(svid, server_ca, extra).await.0
}

/// As [`server_verdict`], with the TLS alert the foreign client received, if any.
async fn server_verdict_and_alert(
    svid: &IssuedSvid,
    server_ca: &DevCa,
    extra: Option<&DevCa>,
) -> (
    Result<String, ConnectionError>,
    Option<rustls::AlertDescription>,
) {
    let mut bundles = TrustBundles::new().with(server_ca.bundle().unwrap());
    if let Some(extra) = extra {
        bundles.insert(extra.bundle().unwrap());
    }
    let creds = MemorySource::new(Credentials::new(
        server_ca
            .svid(SERVER_ID)
            .issue()
            .unwrap()
            .to_svid()
            .unwrap(),
        bundles,
    ));
    let channel = SecureChannel::builder(&creds)
        .allow_client("spiffe://example.org")
        .allow_client("spiffe://other.org")
        .build()
        .unwrap();
    let mut server = TestServer::start(channel).await;
    let config = raw_client_config(Some((svid, true)), &[&rustls::version::TLS13]);
    let client_side = raw_connect(config, server.addr).await;
    let verdict = server.next().await;
    if verdict.is_err() {
        assert!(
            client_side.is_err(),
            "client must not get data from a refusing server"
        );
    }
    let alert = client_side.err().and_then(|error| {
        match error.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::AlertReceived(alert) => Some(*alert),
            _ => None,
        }
    });
    (verdict, alert)
}

fn expect_not_svid(result: Result<String, ConnectionError>) -> SvidError {
    match result {
        Err(ConnectionError::PeerRejected(PeerRejection::NotSvid(reason))) => reason,
        other => panic!("expected NotSvid, got {other:?}"),
    }
}

fn expect_chain_error(result: Result<String, ConnectionError>) -> ChainError {
    match result {
        Err(ConnectionError::PeerRejected(PeerRejection::InvalidChain { reason, .. })) => reason,
        other => panic!("expected InvalidChain, got {other:?}"),
    }
}

#[tokio::test]
async fn foreign_client_with_valid_svid_is_accepted() {
    // The control for the refusals below: the same foreign client path succeeds with a good SVID.
    let ca = ca("example.org");
    let svid = ca.svid(CLIENT_ID).issue().unwrap();
    assert_eq!(server_verdict(&svid, &ca, None).await.unwrap(), CLIENT_ID);
}

#[tokio::test]
async fn refuses_unknown_ca() {
    let ca = ca("example.org");
    // A CA of the same trust domain that is not in the bundle.
    let rogue = DevCa::new("example.org").unwrap();
    let svid = rogue.svid(CLIENT_ID).issue().unwrap();
    assert_eq!(
        expect_chain_error(server_verdict(&svid, &ca, None).await),
        ChainError::UnknownIssuer
    );
    // An intermediate under a foreign root, sent with and without the intermediate.
    let stranger = DevCa::new("example.org").unwrap().intermediate().unwrap();
    let svid = stranger.svid(CLIENT_ID).issue().unwrap();
    assert_eq!(
        expect_chain_error(server_verdict(&svid, &ca, None).await),
        ChainError::UnknownIssuer
    );
    let leaf_only = svid.clone_leaf_only();
    assert_eq!(
        expect_chain_error(server_verdict(&leaf_only, &ca, None).await),
        ChainError::UnknownIssuer
    );
}

#[tokio::test]
async fn refuses_chains_through_an_intermediate_that_may_not_sign_certificates() {
    // X509-SVID 4.3 and RFC 5280 6.1.4 (n): every CA on the path must assert keyCertSign;
    // rustls-webpki does not check it, the verifier does, on the path webpki used.
    let root = ca("example.org");
    let control = root.intermediate().unwrap();
    let svid = control.svid(CLIENT_ID).issue().unwrap();
    assert_eq!(server_verdict(&svid, &root, None).await.unwrap(), CLIENT_ID);

    let no_key_cert_sign = root.intermediate_without_key_cert_sign().unwrap();
    let svid = no_key_cert_sign.svid(CLIENT_ID).issue().unwrap();
    assert_eq!(
        expect_chain_error(server_verdict(&svid, &root, None).await),
        ChainError::MissingKeyCertSign { depth: 1 }
    );
    let no_key_usage = root.intermediate_without_key_usage().unwrap();
    let svid = no_key_usage.svid(CLIENT_ID).issue().unwrap();
    assert_eq!(
        expect_chain_error(server_verdict(&svid, &root, None).await),
        ChainError::MissingKeyCertSign { depth: 1 }
    );
    // Further up the path: a sound intermediate signed by one that may not sign.
    let above = no_key_cert_sign.intermediate().unwrap();
    let svid = above.svid(CLIENT_ID).issue().unwrap();
    assert_eq!(svid.chain().len(), 3);
    assert_eq!(
        expect_chain_error(server_verdict(&svid, &root, None).await),
        ChainError::MissingKeyCertSign { depth: 2 }
    );
}

#[tokio::test]
async fn client_refuses_a_server_chained_through_an_intermediate_without_key_cert_sign() {
    let root = ca("example.org");
    let bad = root.intermediate_without_key_cert_sign().unwrap();
    let creds = MemorySource::new(Credentials::new(
        bad.svid(SERVER_ID).issue().unwrap().to_svid().unwrap(),
        TrustBundles::new().with(root.bundle().unwrap()),
    ));
    let server_channel = SecureChannel::builder(&creds)
        .allow_client(CLIENT_ID)
        .build()
        .unwrap();
    let server = TestServer::start(server_channel).await;
    let client = client_channel(&root, CLIENT_ID, SERVER_ID);
    match within(client.connect_tcp(server.addr)).await {
        Err(ConnectionError::PeerRejected(PeerRejection::InvalidChain { reason, .. })) => {
            assert_eq!(reason, ChainError::MissingKeyCertSign { depth: 1 });
        }
        other => panic!("expected InvalidChain, got {other:?}"),
    }
}

/// How many times each refused peer below connects (three peers: thousands of handshakes).
const REFUSED_ROUNDS: usize = 350;

#[tokio::test]
async fn refused_handshakes_with_junk_intermediates_leave_the_verified_chain_cache_empty() {
    let root = ca("example.org");
    let channel = server_channel(&root);
    let mut server = TestServer::start(channel.clone()).await;
    let tls13 = &[&rustls::version::TLS13];
    // Junk the path builder never uses, about 56 KiB per handshake.
    let junk: Vec<CertificateDer<'static>> = (0..4u8)
        .map(|i| CertificateDer::from(vec![i; 14 * 1024]))
        .collect();
    let with_junk = |svid: &IssuedSvid, junk: &[CertificateDer<'static>]| {
        let mut chain = svid.chain().to_vec();
        chain.extend(junk.iter().cloned());
        chain
    };
    // Trusted but not allowed; allowed but from a CA outside the bundle; allowed but with more
    // intermediates than the verifier examines.
    let intruder = root.svid("spiffe://example.org/intruder").issue().unwrap();
    let rogue = DevCa::new("example.org")
        .unwrap()
        .svid(CLIENT_ID)
        .issue()
        .unwrap();
    let allowed = root
        .intermediate()
        .unwrap()
        .svid(CLIENT_ID)
        .issue()
        .unwrap();
    let too_many: Vec<_> = (0..7u8)
        .map(|i| CertificateDer::from(vec![i; 64]))
        .collect();
    let refused = [
        raw_client_config_with_chain(Some((with_junk(&intruder, &junk), &intruder)), tls13),
        raw_client_config_with_chain(Some((with_junk(&rogue, &junk), &rogue)), tls13),
        raw_client_config_with_chain(Some((with_junk(&allowed, &too_many), &allowed)), tls13),
    ];
    for _ in 0..REFUSED_ROUNDS {
        for (index, config) in refused.iter().enumerate() {
            assert!(raw_connect(config.clone(), server.addr).await.is_err());
            match (index, server.next().await) {
                (0, Err(ConnectionError::PeerRejected(PeerRejection::NotAllowed { .. })))
                | (1, Err(ConnectionError::PeerRejected(PeerRejection::InvalidChain { .. })))
                | (
                    2,
                    Err(ConnectionError::PeerRejected(PeerRejection::InvalidChain {
                        reason:
                            ChainError::TooManyIntermediates {
                                presented: 8,
                                limit: 6,
                            },
                        ..
                    })),
                ) => {}
                (index, other) => panic!("peer {index}: unexpected verdict {other:?}"),
            }
        }
    }
    assert_eq!(channel.verified_chain_cache_usage(), (0, 0));

    // The control: an admitted peer is cached, with the path webpki used and not the junk.
    let config = raw_client_config_with_chain(Some((with_junk(&allowed, &junk), &allowed)), tls13);
    assert_eq!(raw_connect(config, server.addr).await.unwrap(), CLIENT_ID);
    assert_eq!(server.next().await.unwrap(), CLIENT_ID);
    let (entries, bytes) = channel.verified_chain_cache_usage();
    let path_bytes: usize = allowed.chain().iter().map(|c| c.as_ref().len()).sum();
    assert_eq!(entries, 1);
    assert!(
        bytes >= path_bytes && bytes < path_bytes + 1024,
        "{bytes} bytes cached for a {path_bytes}-byte path"
    );
}

#[tokio::test]
async fn refuses_expired_and_not_yet_valid() {
    let ca = ca("example.org");
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let expired = ca
        .svid(CLIENT_ID)
        .validity(now - 2 * hour, now - hour)
        .issue()
        .unwrap();
    // The refusal carries the times: when the check ran, and when the certificate ended.
    match expect_chain_error(server_verdict(&expired, &ca, None).await) {
        ChainError::Expired {
            now: checked,
            not_after,
        } => {
            assert!(checked >= now - Duration::from_secs(1), "{checked:?}");
            let ended = now - hour;
            let skew = ended.duration_since(not_after).unwrap_or_default()
                + not_after.duration_since(ended).unwrap_or_default();
            assert!(skew <= Duration::from_secs(1), "{not_after:?} vs {ended:?}");
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    let future = ca
        .svid(CLIENT_ID)
        .validity(now + hour, now + 2 * hour)
        .issue()
        .unwrap();
    match expect_chain_error(server_verdict(&future, &ca, None).await) {
        ChainError::NotValidYet {
            now: checked,
            not_before,
        } => {
            assert!(checked >= now - Duration::from_secs(1), "{checked:?}");
            assert!(not_before > checked, "{not_before:?} vs {checked:?}");
        }
        other => panic!("expected NotValidYet, got {other:?}"),
    }
}

#[tokio::test]
async fn refuses_leaves_that_are_not_svids() {
    let ca = ca("example.org");
    let cases: Vec<(IssuedSvid, SvidError)> = vec![
        (
            ca.svid(CLIENT_ID).as_ca().issue().unwrap(),
            SvidError::LeafIsCa,
        ),
        (
            ca.svid(CLIENT_ID).with_key_cert_sign().issue().unwrap(),
            SvidError::KeyCertSign,
        ),
        (
            ca.svid(CLIENT_ID).with_crl_sign().issue().unwrap(),
            SvidError::CrlSign,
        ),
        (
            ca.svid(CLIENT_ID)
                .without_digital_signature()
                .issue()
                .unwrap(),
            SvidError::MissingDigitalSignature,
        ),
        (
            ca.svid(CLIENT_ID).without_key_usage().issue().unwrap(),
            SvidError::MissingKeyUsage,
        ),
        (
            ca.svid(CLIENT_ID)
                .extra_uri("spiffe://example.org/admin")
                .issue()
                .unwrap(),
            SvidError::MultipleUriSans { count: 2 },
        ),
        (
            ca.svid(CLIENT_ID)
                .without_uri()
                .dns_name("localhost")
                .issue()
                .unwrap(),
            SvidError::NoUriSan,
        ),
        (
            ca.svid(CLIENT_ID)
                .extended_key_usage(ExtendedKeyUsage::ServerOnly)
                .issue()
                .unwrap(),
            SvidError::ExtendedKeyUsage {
                missing: "clientAuth",
            },
        ),
        (
            ca.svid(CLIENT_ID)
                .extended_key_usage(ExtendedKeyUsage::ClientOnly)
                .issue()
                .unwrap(),
            SvidError::ExtendedKeyUsage {
                missing: "serverAuth",
            },
        ),
        (
            ca.svid("spiffe://Example.org/web").issue().unwrap(),
            SvidError::NotCanonical {
                presented: "spiffe://Example.org/web".into(),
                canonical: "spiffe://example.org/web".into(),
            },
        ),
        (
            // The bare trust domain, which the server's trust-domain matcher would admit.
            ca.svid("spiffe://example.org").issue().unwrap(),
            SvidError::NoPath {
                presented: "spiffe://example.org".into(),
            },
        ),
        (
            ca.svid(&long_id(2049)).issue().unwrap(),
            SvidError::IdTooLong {
                length: 2049,
                limit: 2048,
            },
        ),
    ];
    for (svid, expected) in cases {
        assert_eq!(
            expect_not_svid(server_verdict(&svid, &ca, None).await),
            expected
        );
    }
    let non_spiffe = ca.svid("https://example.org/web").issue().unwrap();
    assert!(matches!(
        expect_not_svid(server_verdict(&non_spiffe, &ca, None).await),
        SvidError::InvalidSpiffeId { .. }
    ));
}

/// A SPIFFE ID of exactly `length` bytes in example.org.
fn long_id(length: usize) -> String {
    let prefix = "spiffe://example.org/";
    format!("{prefix}{}", "a".repeat(length - prefix.len()))
}

#[tokio::test]
async fn accepts_an_id_of_the_longest_length_the_spec_requires() {
    let ca = ca("example.org");
    let id = long_id(2048);
    let svid = ca.svid(&id).issue().unwrap();
    assert_eq!(server_verdict(&svid, &ca, None).await.unwrap(), id);
}

#[tokio::test]
async fn absent_eku_is_accepted() {
    let ca = ca("example.org");
    let svid = ca
        .svid(CLIENT_ID)
        .extended_key_usage(ExtendedKeyUsage::Absent)
        .issue()
        .unwrap();
    assert_eq!(server_verdict(&svid, &ca, None).await.unwrap(), CLIENT_ID);
}

#[tokio::test]
async fn refuses_id_of_one_trust_domain_chained_to_anothers_bundle() {
    // The server trusts both example.org and other.org, but an ID of other.org must chain to
    // other.org's bundle: a CA of example.org cannot vouch for it.
    let example = ca("example.org");
    let other = ca("other.org");
    let forged = example.svid("spiffe://other.org/web").issue().unwrap();
    let result = server_verdict(&forged, &example, Some(&other)).await;
    match result {
        Err(ConnectionError::PeerRejected(PeerRejection::InvalidChain { presented, reason })) => {
            assert_eq!(presented.to_string(), "spiffe://other.org/web");
            assert_eq!(reason, ChainError::UnknownIssuer);
        }
        other => panic!("expected InvalidChain, got {other:?}"),
    }
    // And an ID of a trust domain without a bundle is refused as such.
    let unknown = example.svid("spiffe://unknown.org/web").issue().unwrap();
    assert!(matches!(
        server_verdict(&unknown, &example, Some(&other)).await,
        Err(ConnectionError::PeerRejected(
            PeerRejection::UnknownTrustDomain { .. }
        ))
    ));
}

#[tokio::test]
async fn refuses_client_id_not_allowed_naming_both() {
    let ca = ca("example.org");
    let mut server = TestServer::start(server_channel(&ca)).await;
    let intruder = client_channel(&ca, "spiffe://example.org/batch", SERVER_ID);
    let client_side = async {
        let mut stream = within(intruder.connect_tcp(server.addr)).await?;
        read_line(&mut stream)
            .await
            .map_err(ConnectionError::Handshake)
    };
    assert!(
        client_side.await.is_err(),
        "a refused client must not be served"
    );
    match server.next().await {
        Err(ConnectionError::PeerRejected(PeerRejection::NotAllowed {
            presented,
            expected,
        })) => {
            assert_eq!(presented.to_string(), "spiffe://example.org/batch");
            assert_eq!(expected.to_string(), format!("[{CLIENT_ID}]"));
            let message = ConnectionError::PeerRejected(PeerRejection::NotAllowed {
                presented,
                expected,
            })
            .to_string();
            assert!(
                message.contains("spiffe://example.org/batch") && message.contains(CLIENT_ID),
                "{message}"
            );
        }
        other => panic!("expected NotAllowed, got {other:?}"),
    }
}

#[tokio::test]
async fn channel_without_allowed_clients_accepts_nobody() {
    let ca = ca("example.org");
    let creds = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let channel = SecureChannel::builder(&creds).build().unwrap();
    let mut server = TestServer::start(channel).await;
    let client = client_channel(&ca, CLIENT_ID, SERVER_ID);
    let _ = async {
        read_line(&mut within(client.connect_tcp(server.addr)).await?)
            .await
            .map_err(ConnectionError::Handshake)
    }
    .await;
    let refusal = server.next().await.unwrap_err();
    assert!(
        matches!(
            &refusal,
            ConnectionError::PeerRejected(PeerRejection::NotAllowed { .. })
        ),
        "{refusal}"
    );
    // The message says which call is missing instead of listing nobody.
    let message = refusal.to_string();
    assert!(message.contains("allow_client"), "{message}");
    assert!(!message.contains("[nobody]"), "{message}");
}

#[tokio::test]
async fn client_without_expected_servers_says_which_call_is_missing() {
    let ca = ca("example.org");
    let server = TestServer::start(server_channel(&ca)).await;
    let creds = MemorySource::new(ca.credentials(CLIENT_ID).unwrap());
    let client = SecureChannel::builder(&creds).build().unwrap();
    let error = within(client.connect_tcp(server.addr)).await.unwrap_err();
    assert!(
        matches!(
            &error,
            ConnectionError::PeerRejected(PeerRejection::NotAllowed { .. })
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("expect_server"), "{message}");
}

#[tokio::test]
async fn refuses_client_without_certificate() {
    let ca = ca("example.org");
    let mut server = TestServer::start(server_channel(&ca)).await;
    let config = raw_client_config(None, &[&rustls::version::TLS13]);
    assert!(raw_connect(config, server.addr).await.is_err());
    assert!(matches!(
        server.next().await,
        Err(ConnectionError::PeerRejected(PeerRejection::NoCertificate))
    ));
}

#[tokio::test]
async fn refuses_tls12_client_by_default_and_accepts_it_when_opted_in() {
    let ca = ca("example.org");
    let svid = ca.svid(CLIENT_ID).issue().unwrap();
    let tls12_only = raw_client_config(Some((&svid, true)), &[&rustls::version::TLS12]);

    let mut server = TestServer::start(server_channel(&ca)).await;
    assert!(raw_connect(tls12_only.clone(), server.addr).await.is_err());
    match server.next().await {
        Err(ConnectionError::Handshake(e)) => {
            let rustls_error = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
            assert!(
                matches!(rustls_error, Some(rustls::Error::PeerIncompatible(_))),
                "expected a protocol version mismatch, got {e}"
            );
        }
        other => panic!("expected a protocol version failure, got {other:?}"),
    }

    let creds = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let opted_in = SecureChannel::builder(&creds)
        .allow_client(CLIENT_ID)
        .allow_tls12()
        .build()
        .unwrap();
    let mut server = TestServer::start(opted_in).await;
    assert_eq!(
        raw_connect(tls12_only, server.addr).await.unwrap(),
        CLIENT_ID
    );
    assert_eq!(server.next().await.unwrap(), CLIENT_ID);
}

#[tokio::test]
async fn client_refuses_unexpected_server_naming_both() {
    let ca = ca("example.org");
    let _server = TestServer::start(server_channel(&ca)).await;
    let client = client_channel(&ca, CLIENT_ID, "spiffe://example.org/billing/*");
    match within(client.connect_tcp(_server.addr)).await {
        Err(ConnectionError::PeerRejected(PeerRejection::NotAllowed {
            presented,
            expected,
        })) => {
            assert_eq!(presented.to_string(), SERVER_ID);
            assert_eq!(expected.to_string(), "[spiffe://example.org/billing/*]");
        }
        other => panic!("expected NotAllowed, got {other:?}"),
    }
}

#[tokio::test]
async fn client_refuses_server_of_unknown_ca() {
    let ca = ca("example.org");
    let rogue = DevCa::new("example.org").unwrap();
    let server = TestServer::start(server_channel(&rogue)).await;
    let client = client_channel(&ca, CLIENT_ID, SERVER_ID);
    match within(client.connect_tcp(server.addr)).await {
        Err(ConnectionError::PeerRejected(PeerRejection::InvalidChain { reason, .. })) => {
            assert_eq!(reason, ChainError::UnknownIssuer)
        }
        other => panic!("expected InvalidChain, got {other:?}"),
    }
}

#[tokio::test]
async fn server_is_authenticated_by_spiffe_id_not_by_name() {
    let ca = ca("example.org");
    let server = TestServer::start(server_channel(&ca)).await;
    let client = client_channel(&ca, CLIENT_ID, SERVER_ID);
    // A DNS name the certificate does not carry: still accepted, by SPIFFE ID.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("api.internal.example").unwrap();
    let mut stream = within(client.connect(name, tcp)).await.unwrap();
    assert_eq!(stream.peer_identity().spiffe_id().to_string(), SERVER_ID);
    assert_eq!(read_line(&mut stream).await.unwrap(), CLIENT_ID);

    // A server whose certificate matches the dialled name but whose chain fails is refused: the
    // name never short-circuits chain validation.
    let rogue = DevCa::new("example.org").unwrap();
    let svid = rogue.svid(SERVER_ID).dns_name("localhost").issue().unwrap();
    let rogue_creds = MemorySource::new(Credentials::new(
        svid.to_svid().unwrap(),
        TrustBundles::new().with(ca.bundle().unwrap()),
    ));
    let rogue_server = TestServer::start(
        SecureChannel::builder(&rogue_creds)
            .allow_client(CLIENT_ID)
            .build()
            .unwrap(),
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(rogue_server.addr)
        .await
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    assert!(matches!(
        within(client.connect(name, tcp)).await,
        Err(ConnectionError::PeerRejected(
            PeerRejection::InvalidChain { .. }
        ))
    ));
}

#[tokio::test]
async fn per_call_expectation_overrides_the_channel() {
    let ca = ca("example.org");
    let server = TestServer::start(server_channel(&ca)).await;
    let client = client_channel(&ca, CLIENT_ID, "spiffe://example.org/other");
    let expected: AllowList = [IdMatcher::parse("spiffe://example.org/*").unwrap()]
        .into_iter()
        .collect();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::IpAddress(server.addr.ip().into());
    let stream = within(client.connect_expecting(expected, name, tcp))
        .await
        .unwrap();
    assert_eq!(stream.peer_identity().spiffe_id().to_string(), SERVER_ID);
}

#[tokio::test]
async fn federation_uses_the_bundle_of_the_peers_trust_domain() {
    let example = ca("example.org");
    let partner = ca("partner.org");
    let partner_client_id = "spiffe://partner.org/reports";

    // The server in example.org trusts partner.org through a federated bundle.
    let server_creds = MemorySource::new(Credentials::new(
        example.svid(SERVER_ID).issue().unwrap().to_svid().unwrap(),
        TrustBundles::new()
            .with(example.bundle().unwrap())
            .with(partner.bundle().unwrap()),
    ));
    let channel = SecureChannel::builder(&server_creds)
        .allow_client("spiffe://partner.org")
        .build()
        .unwrap();
    let mut server = TestServer::start(channel).await;

    let client_creds = MemorySource::new(Credentials::new(
        partner
            .svid(partner_client_id)
            .issue()
            .unwrap()
            .to_svid()
            .unwrap(),
        TrustBundles::new()
            .with(partner.bundle().unwrap())
            .with(example.bundle().unwrap()),
    ));
    let client = SecureChannel::builder(&client_creds)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    let mut stream = within(client.connect_tcp(server.addr)).await.unwrap();
    assert_eq!(read_line(&mut stream).await.unwrap(), partner_client_id);
    assert_eq!(server.next().await.unwrap(), partner_client_id);

    // Without the federated bundle the same client is refused.
    let unfederated = server_channel(&example);
    let mut server = TestServer::start(unfederated).await;
    let _ = async {
        read_line(&mut within(client.connect_tcp(server.addr)).await?)
            .await
            .map_err(ConnectionError::Handshake)
    }
    .await;
    assert!(matches!(
        server.next().await,
        Err(ConnectionError::PeerRejected(
            PeerRejection::UnknownTrustDomain { .. }
        ))
    ));
}

/// Serves one handshake with a plain tokio-rustls acceptor driven by `config` (no
/// `SecureChannel::accept`, so no second check after the handshake), and returns the client's
/// and the acceptor's results.
async fn plain_acceptor_verdict(
    config: std::sync::Arc<rustls::ServerConfig>,
    client: std::sync::Arc<rustls::ClientConfig>,
) -> (std::io::Result<String>, std::io::Result<Option<usize>>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = acceptor.accept(tcp).await?;
        let presented = stream.get_ref().1.peer_certificates().map(|c| c.len());
        stream.write_all(b"served\n").await?;
        stream.shutdown().await?;
        Ok(presented)
    });
    let client_side = raw_connect(client, addr).await;
    let server_side = within(server).await.unwrap();
    (client_side, server_side)
}

/// The TLS error the verifier gave a plain rustls acceptor: outside the channel's own accept
/// only the error that chooses the alert goes (`ApplicationVerificationFailure` is
/// access_denied, `UnknownIssuer` unknown_ca), the typed rejection being the channel's.
fn rustls_error_of(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

#[tokio::test]
async fn server_config_used_by_another_tls_stack_refuses_untrusted_unlisted_and_anonymous_clients()
{
    // `server_config()` exists for serving with other TLS stacks: the verifier inside it must
    // refuse on its own, without `SecureChannel::accept`'s check after the handshake.
    let root = ca("example.org");
    let config = server_channel(&root).server_config();
    let tls13 = &[&rustls::version::TLS13];

    // The control: a listed client is served, and presented its certificate.
    let listed = root.svid(CLIENT_ID).issue().unwrap();
    let (client, server) = plain_acceptor_verdict(
        config.clone(),
        raw_client_config(Some((&listed, true)), tls13),
    )
    .await;
    assert_eq!(client.unwrap(), "served");
    assert_eq!(server.unwrap(), Some(1));

    let unlisted = root.svid("spiffe://example.org/intruder").issue().unwrap();
    let untrusted = DevCa::new("example.org")
        .unwrap()
        .svid(CLIENT_ID)
        .issue()
        .unwrap();
    for (name, client_config) in [
        (
            "unlisted",
            raw_client_config(Some((&unlisted, true)), tls13),
        ),
        (
            "untrusted",
            raw_client_config(Some((&untrusted, true)), tls13),
        ),
        ("anonymous", raw_client_config(None, tls13)),
    ] {
        let (client, server) = plain_acceptor_verdict(config.clone(), client_config).await;
        assert!(client.is_err(), "{name}: the client was served");
        let error = server.expect_err(name);
        use rustls::CertificateError as C;
        match (name, rustls_error_of(&error)) {
            (
                "unlisted",
                Some(rustls::Error::InvalidCertificate(C::ApplicationVerificationFailure)),
            ) => {}
            ("untrusted", Some(rustls::Error::InvalidCertificate(C::UnknownIssuer))) => {}
            // Client authentication is mandatory: rustls itself refuses a client without one.
            ("anonymous", Some(rustls::Error::NoCertificatesPresented)) => {}
            (name, other) => panic!("{name}: unexpected refusal {other:?} ({error})"),
        }
    }
}

fn channel_with(
    ca: &DevCa,
    id: &str,
    configure: impl FnOnce(secure_channel::SecureChannelBuilder) -> secure_channel::SecureChannelBuilder,
) -> SecureChannel {
    let creds = MemorySource::new(ca.credentials(id).unwrap());
    configure(SecureChannel::builder(&creds)).build().unwrap()
}

/// The key exchange group a `client` choice and a `server` choice negotiate, or the client's
/// error.
async fn negotiated(
    client: KeyExchange,
    server: KeyExchange,
) -> Result<rustls::NamedGroup, ConnectionError> {
    let ca = ca("example.org");
    let server = channel_with(&ca, SERVER_ID, |b| {
        b.allow_client(CLIENT_ID).key_exchange(server)
    });
    let mut server = TestServer::start(server).await;
    let client = channel_with(&ca, CLIENT_ID, |b| {
        b.expect_server(SERVER_ID).key_exchange(client)
    });
    let mut stream = within(client.connect_tcp(server.addr)).await?;
    let group = stream.key_exchange_group().expect("a negotiated group");
    assert_eq!(read_line(&mut stream).await.unwrap(), CLIENT_ID);
    assert_eq!(server.next().await.unwrap(), CLIENT_ID);
    Ok(group)
}

#[tokio::test]
async fn hybrid_post_quantum_key_exchange_is_the_default() {
    use rustls::NamedGroup;
    let pq = KeyExchange::PostQuantumOnly;
    let classical = KeyExchange::ClassicalOnly;
    let default = KeyExchange::default();
    assert_eq!(default, KeyExchange::PreferPostQuantum);
    assert_eq!(
        negotiated(default, default).await.unwrap(),
        NamedGroup::X25519MLKEM768
    );
    // Each side's choice holds against a default peer.
    assert_eq!(
        negotiated(classical, default).await.unwrap(),
        NamedGroup::X25519
    );
    assert_eq!(
        negotiated(default, classical).await.unwrap(),
        NamedGroup::X25519
    );
    assert_eq!(
        negotiated(pq, default).await.unwrap(),
        NamedGroup::X25519MLKEM768
    );
    assert_eq!(
        negotiated(default, pq).await.unwrap(),
        NamedGroup::X25519MLKEM768
    );
    // Post-quantum only and classical only have nothing in common.
    assert!(negotiated(classical, pq).await.is_err());
    assert!(negotiated(pq, classical).await.is_err());
}

#[tokio::test]
async fn a_post_quantum_only_server_refuses_a_classical_foreign_client() {
    let root = ca("example.org");
    let server = channel_with(&root, SERVER_ID, |b| {
        b.allow_client(CLIENT_ID)
            .key_exchange(KeyExchange::PostQuantumOnly)
    });
    let mut server = TestServer::start(server).await;
    let svid = root.svid(CLIENT_ID).issue().unwrap();
    let tls13 = &[&rustls::version::TLS13];
    // The control: plain rustls with its stock groups (X25519MLKEM768 among them) gets in.
    let stock = raw_client_config(Some((&svid, true)), tls13);
    assert_eq!(raw_connect(stock, server.addr).await.unwrap(), CLIENT_ID);
    assert_eq!(server.next().await.unwrap(), CLIENT_ID);
    // Without the hybrid group it does not.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .kx_groups
        .retain(|g| g.name() != rustls::NamedGroup::X25519MLKEM768);
    let classical =
        raw_client_config_with_provider(Some((svid.chain().to_vec(), &svid)), tls13, provider);
    assert!(raw_connect(classical, server.addr).await.is_err());
    assert!(matches!(
        server.next().await,
        Err(ConnectionError::Handshake(_))
    ));
}

#[test]
fn post_quantum_only_cannot_be_combined_with_tls12() {
    let ca = ca("example.org");
    let creds = MemorySource::new(ca.credentials(SERVER_ID).unwrap());
    let result = SecureChannel::builder(&creds)
        .allow_client(CLIENT_ID)
        .allow_tls12()
        .key_exchange(KeyExchange::PostQuantumOnly)
        .build();
    match result {
        Err(error @ ConfigError::KeyExchange { .. }) => {
            assert!(error.to_string().contains("allow_tls12"), "{error}");
        }
        other => panic!("expected ConfigError::KeyExchange, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn chain_failures_send_unknown_ca_or_bad_certificate_never_access_denied() {
    let ca = ca("example.org");
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let rogue = DevCa::new("example.org")
        .unwrap()
        .svid(CLIENT_ID)
        .issue()
        .unwrap();
    let stranger = DevCa::new("elsewhere.org")
        .unwrap()
        .svid("spiffe://elsewhere.org/web")
        .issue()
        .unwrap();
    let expired = ca
        .svid(CLIENT_ID)
        .validity(now - 2 * hour, now - hour)
        .issue()
        .unwrap();
    let not_svid = ca.svid(CLIENT_ID).without_uri().issue().unwrap();
    for (svid, alert) in [
        (&rogue, rustls::AlertDescription::UnknownCA),
        (&stranger, rustls::AlertDescription::UnknownCA),
        (&expired, rustls::AlertDescription::BadCertificate),
        (&not_svid, rustls::AlertDescription::BadCertificate),
    ] {
        let (verdict, received) = server_verdict_and_alert(svid, &ca, None).await;
        assert!(
            matches!(verdict, Err(ConnectionError::PeerRejected(_))),
            "the server keeps its typed rejection: {verdict:?}"
        );
        assert_eq!(received, Some(alert), "{verdict:?}");
    }
}

#[tokio::test]
async fn a_refused_client_gets_a_typed_error_naming_its_id_the_alert_and_what_to_check() {
    let ca = ca("example.org");
    let mut server = TestServer::start(server_channel(&ca)).await;
    let intruder = client_channel(&ca, "spiffe://example.org/batch", SERVER_ID);
    let error = within(intruder.connect_tcp(server.addr)).await.unwrap_err();
    match &error {
        ConnectionError::RefusedByServer { own_id, alert } => {
            assert_eq!(own_id.to_string(), "spiffe://example.org/batch");
            assert_eq!(*alert, rustls::AlertDescription::AccessDenied);
        }
        other => panic!("expected RefusedByServer, got {other:?}"),
    }
    let text = error.to_string();
    for needle in [
        "the server refused this workload's SVID",
        "spiffe://example.org/batch",
        "access_denied",
        "allow-list",
    ] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
    // The allow-list is the server's business: the client learns nothing of it.
    assert!(!text.contains(CLIENT_ID), "{text}");
    assert!(matches!(
        server.next().await,
        Err(ConnectionError::PeerRejected(
            PeerRejection::NotAllowed { .. }
        ))
    ));
    // The same client, allowed, is served as before: the wait for the verdict ends with the
    // server's first record.
    let allowed = client_channel(&ca, CLIENT_ID, SERVER_ID);
    let mut stream = within(allowed.connect_tcp(server.addr)).await.unwrap();
    assert_eq!(read_line(&mut stream).await.unwrap(), CLIENT_ID);
    round_trip(&mut stream, "after the verdict").await.unwrap();
}

#[tokio::test]
async fn a_client_of_an_untrusted_ca_learns_the_server_does_not_trust_it() {
    let ca = ca("example.org");
    let mut server = TestServer::start(server_channel(&ca)).await;
    // Our SVID from a CA the server does not trust; the server's CA trusted by us.
    let rogue = DevCa::new("example.org").unwrap();
    let creds = MemorySource::new(Credentials::new(
        rogue.svid(CLIENT_ID).issue().unwrap().to_svid().unwrap(),
        TrustBundles::new().with(ca.bundle().unwrap()),
    ));
    let client = SecureChannel::builder(&creds)
        .expect_server(SERVER_ID)
        .build()
        .unwrap();
    let error = within(client.connect_tcp(server.addr)).await.unwrap_err();
    match &error {
        ConnectionError::RefusedByServer { own_id, alert } => {
            assert_eq!(own_id.to_string(), CLIENT_ID);
            assert_eq!(*alert, rustls::AlertDescription::UnknownCA);
        }
        other => panic!("expected RefusedByServer, got {other:?}"),
    }
    assert!(error.to_string().contains("trust bundle"), "{error}");
    assert!(server.next().await.is_err());
}

/// A transport that hands over at most one byte per read: every TLS record arrives in pieces.
#[derive(Debug)]
struct OneByteReads<IO>(IO);

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for OneByteReads<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut byte = [0u8; 1];
        let mut one = tokio::io::ReadBuf::new(&mut byte);
        let poll = std::pin::Pin::new(&mut self.0).poll_read(cx, &mut one);
        if let std::task::Poll::Ready(Ok(())) = poll {
            buf.put_slice(one.filled());
        }
        poll
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for OneByteReads<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn the_verdict_is_read_whole_even_when_it_arrives_byte_by_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = ca("example.org");
    let server = server_channel(&ca);
    let name = ServerName::try_from("api.example.org").unwrap();
    // Refused: the alert, read one byte at a time, is still the verdict.
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let intruder = client_channel(&ca, "spiffe://example.org/batch", SERVER_ID);
    let (client, accepted) = tokio::join!(
        within(intruder.connect(name.clone(), OneByteReads(client_io))),
        within(server.accept(server_io)),
    );
    assert!(accepted.is_err());
    match client {
        Err(ConnectionError::RefusedByServer { alert, .. }) => {
            assert_eq!(alert, rustls::AlertDescription::AccessDenied)
        }
        other => panic!("expected RefusedByServer, got {other:?}"),
    }
    // Accepted: the first record (a session ticket) arrives in pieces; the data after it is
    // read intact.
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let allowed = client_channel(&ca, CLIENT_ID, SERVER_ID);
    let (client, accepted) = tokio::join!(
        within(allowed.connect(name, OneByteReads(client_io))),
        async {
            let mut stream = within(server.accept(server_io)).await.unwrap();
            stream.write_all(b"hello\n").await.unwrap();
            stream
        },
    );
    let mut client = client.unwrap();
    let mut greeting = [0u8; 6];
    within(client.read_exact(&mut greeting)).await.unwrap();
    assert_eq!(&greeting, b"hello\n");
    drop(accepted);
}
