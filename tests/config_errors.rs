//! Bad configuration gets a typed error naming the file or field and the problem; never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use secure_channel::identity::SvidError;
use secure_channel::testkit::DevCa;
use secure_channel::{
    CredentialSource, Error, IdMatcher, Location, MemorySource, SecureChannel, Svid, TrustBundle,
    TrustDomain,
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

    fn start(&self) -> Result<CredentialSource, Error> {
        CredentialSource::from_files(self.path("svid.pem"), self.path("svid.key"))
            .bundle(
                TrustDomain::new("example.org").unwrap(),
                self.path("bundle.pem"),
            )
            .start()
    }
}

fn names_file(error: &Error, path: &Path) {
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
        matches!(&error, Error::Read { location: Location::File(p), .. } if p == &setup.path("svid.key"))
    );
    names_file(&error, &setup.path("svid.key"));
}

#[test]
fn not_pem() {
    let setup = Setup::new();
    setup.write("svid.pem", "this is not PEM");
    let error = setup.start().unwrap_err();
    assert!(
        matches!(&error, Error::NotPem { location: Location::File(p), .. } if p == &setup.path("svid.pem"))
    );
    names_file(&error, &setup.path("svid.pem"));

    let setup = Setup::new();
    setup.write("svid.key", setup.ca.bundle_pem()); // a certificate where the key should be
    let error = setup.start().unwrap_err();
    assert!(matches!(&error, Error::NotPem { .. }), "{error}");
    names_file(&error, &setup.path("svid.key"));

    let setup = Setup::new();
    setup.write(
        "svid.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    assert!(matches!(setup.start().unwrap_err(), Error::NotPem { .. }));
}

#[test]
fn key_does_not_match_certificate() {
    let setup = Setup::new();
    let other = setup.ca.svid(ID).issue().unwrap();
    setup.write("svid.key", other.key_pem());
    let error = setup.start().unwrap_err();
    assert!(
        matches!(&error, Error::KeyMismatch { location: Location::File(p) } if p == &setup.path("svid.key"))
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
    assert!(matches!(&error, Error::InvalidKey { .. }), "{error}");
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
        matches!(&error, Error::NotSvid { reason: SvidError::NoUriSan, location: Location::File(p) } if p == &setup.path("svid.pem")),
        "{error}"
    );
    assert!(error.to_string().contains("not an X.509-SVID"), "{error}");

    let ca_leaf = setup.ca.svid(ID).as_ca().issue().unwrap();
    let error = Svid::from_der(
        ca_leaf.chain().to_vec(),
        rustls_pki_types::PrivateKeyDer::Pkcs8(ca_leaf.key().clone_key()),
    )
    .unwrap_err();
    assert!(matches!(
        error,
        Error::NotSvid {
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
    assert!(matches!(&error, Error::NotPem { .. }), "{error}");
    names_file(&error, &setup.path("bundle.pem"));
    let error =
        TrustBundle::from_der(TrustDomain::new("example.org").unwrap(), vec![]).unwrap_err();
    assert!(matches!(error, Error::EmptyBundle { .. }), "{error}");
}

#[test]
fn bundle_for_the_wrong_trust_domain() {
    let setup = Setup::new();
    let other = DevCa::new("other.org").unwrap();
    setup.write("bundle.pem", other.bundle_pem());
    let error = setup.start().unwrap_err();
    match &error {
        Error::BundleTrustDomainMismatch {
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
fn a_leaf_in_a_bundle_is_no_trust_anchor_problem_but_a_bad_certificate_is() {
    let bad = rustls_pki_types::CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    let error =
        TrustBundle::from_der(TrustDomain::new("example.org").unwrap(), vec![bad]).unwrap_err();
    assert!(
        matches!(error, Error::InvalidTrustAnchor { index: 0, .. }),
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
            matches!(&error, Error::InvalidMatcher(e) if e.input() == bad),
            "{error}"
        );
        let error = SecureChannel::builder(&creds)
            .expect_server(bad)
            .build()
            .unwrap_err();
        assert!(matches!(&error, Error::InvalidMatcher(_)), "{error}");
    }
    // Parsed matchers are accepted as they are.
    let matcher = IdMatcher::parse("spiffe://example.org/billing/*").unwrap();
    SecureChannel::builder(&creds)
        .allow_client(matcher)
        .build()
        .unwrap();
}
