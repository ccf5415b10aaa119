//! Bad configuration gets a typed error naming the file or field and the problem; never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use secure_channel::identity::SvidError;
use secure_channel::testkit::DevCa;
use secure_channel::{
    ConfigError, ConnectionError, CredentialSource, IdMatcher, Location, MemorySource, ReadError,
    SecureChannel, Svid, TrustBundle, TrustDomain,
};

const ID: &str = "spiffe://example.org/api";

struct Setup {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Setup {
    fn new() -> Self {
        let ca = DevCa::new("example.org").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let svid = ca.svid(ID).issue().unwrap();
        std::fs::write(dir.path().join("svid.pem"), svid.chain_pem()).unwrap();
        std::fs::write(dir.path().join("svid.key"), svid.key_pem()).unwrap();
        std::fs::write(dir.path().join("bundle.pem"), ca.bundle_pem()).unwrap();
        Self { dir, ca }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: impl AsRef<[u8]>) {
        std::fs::write(self.path(name), content).unwrap();
    }

    fn start(&self) -> Result<CredentialSource, ConfigError> {
        CredentialSource::from_files(self.path("svid.pem"), self.path("svid.key"))
            .bundle(
                TrustDomain::new("example.org").unwrap(),
                self.path("bundle.pem"),
            )
            .start()
    }
}

fn names_file(error: &ConfigError, path: &Path) {
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "{message:?} should name {path:?}"
    );
}

#[test]
fn good_files_load() {
    let setup = Setup::new();
    let source = setup.start().unwrap();
    assert_eq!(source.current().svid().spiffe_id().to_string(), ID);
    assert_eq!(source.revision(), 1);
}

#[test]
fn missing_file() {
    let setup = Setup::new();
    std::fs::remove_file(setup.path("svid.key")).unwrap();
    let error = setup.start().unwrap_err();
    assert!(
        matches!(&error, ConfigError::Read(ReadError { path, .. }) if path == &setup.path("svid.key"))
    );
    names_file(&error, &setup.path("svid.key"));
}

#[test]
fn not_pem() {
    let setup = Setup::new();
    setup.write("svid.pem", "this is not PEM");
    let error = setup.start().unwrap_err();
    assert!(
        matches!(&error, ConfigError::NotPem { location: Location::File(p), .. } if p == &setup.path("svid.pem"))
    );
    names_file(&error, &setup.path("svid.pem"));

    let setup = Setup::new();
    setup.write("svid.key", setup.ca.bundle_pem()); // a certificate where the key should be
    let error = setup.start().unwrap_err();
    assert!(matches!(&error, ConfigError::NotPem { .. }), "{error}");
    names_file(&error, &setup.path("svid.key"));

    let setup = Setup::new();
    setup.write(
        "svid.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    assert!(matches!(
        setup.start().unwrap_err(),
        ConfigError::NotPem { .. }
    ));
}

#[test]
fn key_does_not_match_certificate() {
    let setup = Setup::new();
    let other = setup.ca.svid(ID).issue().unwrap();
    setup.write("svid.key", other.key_pem());
    let error = setup.start().unwrap_err();
    assert!(
        matches!(&error, ConfigError::KeyMismatch { location: Location::File(p) } if p == &setup.path("svid.key"))
    );
    assert!(error.to_string().contains("does not match"), "{error}");
}

#[test]
fn garbage_key_is_invalid() {
    let setup = Setup::new();
    setup.write(
        "svid.key",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let error = setup.start().unwrap_err();
    assert!(matches!(&error, ConfigError::InvalidKey { .. }), "{error}");
    names_file(&error, &setup.path("svid.key"));
}

#[test]
fn key_formats_pkcs8_sec1_and_pkcs1_load() {
    let setup = Setup::new();
    let ca = &setup.ca;
    // The testkit writes PKCS#8; the SEC1 and PKCS#1 keys are cut out of those documents.
    let ec = ca.svid(ID).issue().unwrap();
    let sec1 = sec1_pem(ec.key().secret_pkcs8_der());
    Svid::from_pem(ec.chain_pem().as_bytes(), sec1.as_bytes()).unwrap();
    let rsa = ca
        .svid(ID)
        .key_algorithm(secure_channel::testkit::KeyAlgorithm::Rsa2048)
        .issue()
        .unwrap();
    let pkcs1 = pkcs1_pem(rsa.key().secret_pkcs8_der());
    Svid::from_pem(rsa.chain_pem().as_bytes(), pkcs1.as_bytes()).unwrap();
}

/// Extracts the inner private key of a PKCS#8 document (the OCTET STRING after the algorithm).
fn pkcs8_inner(der: &[u8]) -> &[u8] {
    // SEQUENCE { INTEGER 0, SEQUENCE alg, OCTET STRING key, ... }
    fn skip_header(der: &[u8]) -> (usize, usize) {
        let len_byte = der[1] as usize;
        if len_byte < 0x80 {
            (2, len_byte)
        } else {
            let n = len_byte & 0x7f;
            let mut len = 0usize;
            for b in &der[2..2 + n] {
                len = (len << 8) | *b as usize;
            }
            (2 + n, len)
        }
    }
    let (h, _) = skip_header(der);
    let mut rest = &der[h..];
    for _ in 0..2 {
        let (h, len) = skip_header(rest);
        rest = &rest[h + len..];
    }
    let (h, len) = skip_header(rest);
    &rest[h..h + len]
}

fn sec1_pem(pkcs8: &[u8]) -> String {
    // The SEC1 ECPrivateKey inside PKCS#8 lacks the curve parameters, which rustls accepts.
    pem::encode(&pem::Pem::new(
        "EC PRIVATE KEY",
        pkcs8_inner(pkcs8).to_vec(),
    ))
}

fn pkcs1_pem(pkcs8: &[u8]) -> String {
    pem::encode(&pem::Pem::new(
        "RSA PRIVATE KEY",
        pkcs8_inner(pkcs8).to_vec(),
    ))
}

#[test]
fn certificate_is_not_an_svid() {
    let setup = Setup::new();
    let plain = setup
        .ca
        .svid(ID)
        .without_uri()
        .dns_name("api.example.org")
        .issue()
        .unwrap();
    setup.write("svid.pem", plain.chain_pem());
    setup.write("svid.key", plain.key_pem());
    let error = setup.start().unwrap_err();
    assert!(
        matches!(&error, ConfigError::NotSvid { reason: SvidError::NoUriSan, location: Location::File(p) } if p == &setup.path("svid.pem")),
        "{error}"
    );
    assert!(error.to_string().contains("not an X.509-SVID"), "{error}");

    // The bare trust domain is no workload's ID: refused as our own SVID too.
    let root = setup.ca.svid("spiffe://example.org").issue().unwrap();
    setup.write("svid.pem", root.chain_pem());
    setup.write("svid.key", root.key_pem());
    let error = setup.start().unwrap_err();
    assert!(
        matches!(
            &error,
            ConfigError::NotSvid {
                reason: SvidError::NoPath { .. },
                ..
            }
        ),
        "{error}"
    );

    let ca_leaf = setup.ca.svid(ID).as_ca().issue().unwrap();
    let error = Svid::from_der(
        ca_leaf.chain().to_vec(),
        rustls_pki_types::PrivateKeyDer::Pkcs8(ca_leaf.key().clone_key()),
    )
    .unwrap_err();
    assert!(matches!(
        error,
        ConfigError::NotSvid {
            reason: SvidError::LeafIsCa,
            location: Location::Field("svid_chain")
        }
    ));
}

#[test]
fn empty_bundle() {
    let setup = Setup::new();
    setup.write("bundle.pem", "");
    let error = setup.start().unwrap_err();
    assert!(matches!(&error, ConfigError::NotPem { .. }), "{error}");
    names_file(&error, &setup.path("bundle.pem"));
    let error =
        TrustBundle::from_der(TrustDomain::new("example.org").unwrap(), vec![]).unwrap_err();
    assert!(matches!(error, ConfigError::EmptyBundle { .. }), "{error}");
}

#[test]
fn bundle_for_the_wrong_trust_domain() {
    let setup = Setup::new();
    let other = DevCa::new("other.org").unwrap();
    setup.write("bundle.pem", other.bundle_pem());
    let error = setup.start().unwrap_err();
    match &error {
        ConfigError::BundleTrustDomainMismatch {
            location: Location::File(p),
            expected,
            found,
        } => {
            assert_eq!(p, &setup.path("bundle.pem"));
            assert_eq!(expected.as_str(), "example.org");
            assert_eq!(found, "other.org");
        }
        other => panic!("expected BundleTrustDomainMismatch, got {other}"),
    }
}

#[test]
fn setups_that_can_never_complete_a_handshake_are_refused_at_start() {
    // No bundle at all.
    let setup = Setup::new();
    let error = CredentialSource::from_files(setup.path("svid.pem"), setup.path("svid.key"))
        .start()
        .unwrap_err();
    match &error {
        ConfigError::MissingOwnBundle {
            location: Location::File(p),
            trust_domain,
        } => {
            assert_eq!(p, &setup.path("svid.pem"));
            assert_eq!(trust_domain.as_str(), "example.org");
        }
        other => panic!("expected MissingOwnBundle, got {other}"),
    }
    assert!(error.to_string().contains("own_bundle"), "{error}");

    // Only a federated bundle: the own trust domain still has none.
    let other = DevCa::new("other.org").unwrap();
    setup.write("other.pem", other.bundle_pem());
    let error = CredentialSource::from_files(setup.path("svid.pem"), setup.path("svid.key"))
        .bundle(other.trust_domain().clone(), setup.path("other.pem"))
        .start()
        .unwrap_err();
    assert!(
        matches!(error, ConfigError::MissingOwnBundle { .. }),
        "{error}"
    );

    // The classic mix-up: the SVID (tls.crt) given as the bundle (ca.crt).
    let setup = Setup::new();
    setup.write("bundle.pem", std::fs::read(setup.path("svid.pem")).unwrap());
    let error = setup.start().unwrap_err();
    match &error {
        ConfigError::NotCa {
            location: Location::File(p),
            index: 0,
        } => assert_eq!(p, &setup.path("bundle.pem")),
        other => panic!("expected NotCa, got {other}"),
    }
    assert!(error.to_string().contains("tls.crt"), "{error}");

    // A CA of the right trust domain that did not issue the SVID.
    let setup = Setup::new();
    let stranger = DevCa::new("example.org").unwrap();
    setup.write("bundle.pem", stranger.bundle_pem());
    let error = setup.start().unwrap_err();
    match &error {
        ConfigError::SvidNotTrusted {
            location: Location::File(p),
            trust_domain,
            ..
        } => {
            assert_eq!(p, &setup.path("svid.pem"));
            assert_eq!(trust_domain.as_str(), "example.org");
        }
        other => panic!("expected SvidNotTrusted, got {other}"),
    }

    // An SVID issued by an intermediate whose certificate file lacks the intermediate.
    let setup = Setup::new();
    let intermediate = setup.ca.intermediate().unwrap();
    let svid = intermediate.svid(ID).issue().unwrap();
    setup.write("svid.pem", svid.clone_leaf_only().chain_pem());
    setup.write("svid.key", svid.key_pem());
    let error = setup.start().unwrap_err();
    assert!(
        matches!(error, ConfigError::SvidNotTrusted { .. }),
        "{error}"
    );
    // With the intermediate after the leaf, the same files load.
    setup.write("svid.pem", svid.chain_pem());
    setup.start().unwrap();
}

#[test]
fn an_expired_svid_still_loads_for_the_expiry_gate_to_judge() {
    // The own-chain check is about trust, not time: an expired SVID loads, and the channel's
    // expiry gate refuses handshakes with it (tests/expiry.rs).
    let setup = Setup::new();
    let now = std::time::SystemTime::now();
    let expired = setup
        .ca
        .svid(ID)
        .validity(
            now - std::time::Duration::from_secs(7200),
            now - std::time::Duration::from_secs(3600),
        )
        .issue()
        .unwrap();
    setup.write("svid.pem", expired.chain_pem());
    setup.write("svid.key", expired.key_pem());
    setup.start().unwrap();
}

#[test]
fn a_garbled_pem_block_is_described_in_words() {
    let setup = Setup::new();
    setup.write("svid.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    let error = setup.start().unwrap_err();
    let message = error.to_string();
    assert!(message.contains("-----END CERTIFICATE-----"), "{message}");
    assert!(!message.contains("[45, 45"), "raw bytes in {message}");
}

#[test]
fn a_non_ca_certificate_in_a_bundle_is_refused_and_a_bad_certificate_too() {
    let ca = DevCa::new("example.org").unwrap();
    let leaf = ca.svid(ID).issue().unwrap();
    let error =
        TrustBundle::from_der(ca.trust_domain().clone(), vec![leaf.leaf().clone()]).unwrap_err();
    assert!(
        matches!(error, ConfigError::NotCa { index: 0, .. }),
        "{error}"
    );

    let bad = rustls_pki_types::CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    let error =
        TrustBundle::from_der(TrustDomain::new("example.org").unwrap(), vec![bad]).unwrap_err();
    assert!(
        matches!(error, ConfigError::InvalidTrustAnchor { index: 0, .. }),
        "{error}"
    );
}

#[test]
fn invalid_matchers_fail_the_build() {
    let ca = DevCa::new("example.org").unwrap();
    let creds = MemorySource::new(ca.credentials(ID).unwrap());
    for bad in [
        "spiffe://example.org/bill*",
        "example.org",
        "spiffe://Example.org",
        "spiffe://example.org/a/",
    ] {
        let error = SecureChannel::builder(&creds)
            .allow_client(bad)
            .build()
            .unwrap_err();
        assert!(
            matches!(&error, ConfigError::InvalidMatcher(e) if e.input() == bad),
            "{error}"
        );
        let error = SecureChannel::builder(&creds)
            .expect_server(bad)
            .build()
            .unwrap_err();
        assert!(matches!(&error, ConfigError::InvalidMatcher(_)), "{error}");
    }
    // Parsed matchers are accepted as they are.
    let matcher = IdMatcher::parse("spiffe://example.org/billing/*").unwrap();
    SecureChannel::builder(&creds)
        .allow_client(matcher)
        .build()
        .unwrap();
}

/// Walks an error's `source()` chain as error reporters do, and checks that no message repeats
/// its cause's (the std guideline: a cause is printed by its parent or returned as its source,
/// never both).
fn assert_each_cause_printed_once(error: &(dyn std::error::Error + 'static)) {
    let mut current = error;
    while let Some(cause) = current.source() {
        let (parent, child) = (current.to_string(), cause.to_string());
        assert!(
            !parent.contains(&child),
            "{parent:?} prints its source {child:?} too: a chain would show it twice"
        );
        current = cause;
    }
}

#[test]
fn error_chains_print_each_cause_once() {
    let setup = Setup::new();
    std::fs::remove_file(setup.path("svid.key")).unwrap();
    let read = setup.start().unwrap_err();
    assert!(matches!(&read, ConfigError::Read(_)), "{read}");
    assert!(read.to_string().contains("No such file"), "{read}");
    assert_each_cause_printed_once(&read);

    let setup = Setup::new();
    let plain = setup
        .ca
        .svid(ID)
        .without_uri()
        .dns_name("a.example")
        .issue()
        .unwrap();
    setup.write("svid.pem", plain.chain_pem());
    setup.write("svid.key", plain.key_pem());
    let not_svid = setup.start().unwrap_err();
    assert_each_cause_printed_once(&not_svid);

    let rejected = ConnectionError::from(secure_channel::identity::PeerRejection::NotSvid(
        SvidError::NoUriSan,
    ));
    assert!(rejected.to_string().contains("no URI SAN"), "{rejected}");
    assert_each_cause_printed_once(&rejected);
    let handshake = ConnectionError::Handshake(std::io::Error::other("boom"));
    assert_each_cause_printed_once(&handshake);
}

#[tokio::test]
async fn a_failed_tcp_connect_names_the_address_and_is_no_handshake_failure() {
    let ca = DevCa::new("example.org").unwrap();
    let creds = MemorySource::new(ca.credentials(ID).unwrap());
    let channel = SecureChannel::builder(&creds)
        .expect_server("spiffe://example.org/server")
        .build()
        .unwrap();
    // A port nobody listens on: bound, then closed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let error = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        channel.connect_tcp(addr),
    )
    .await
    .unwrap()
    .unwrap_err();
    match &error {
        ConnectionError::Connect { address, .. } => assert_eq!(address, &addr.to_string()),
        other => panic!("expected Connect, got {other}"),
    }
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot connect to {addr}")),
        "{error}"
    );
}

#[test]
fn a_credential_source_handle_builds_a_channel_by_reference() {
    let ca = DevCa::new("example.org").unwrap();
    let source = MemorySource::new(ca.credentials(ID).unwrap()).source();
    SecureChannel::builder(&source)
        .expect_server("spiffe://example.org/server")
        .build()
        .unwrap();
}
