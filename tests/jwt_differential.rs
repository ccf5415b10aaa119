//! Differential test of the JWS and JWK parsing `JwtValidator` does by hand around jsonwebtoken
//! (`src/jwt/validator.rs`, `src/jwt/keys.rs`; why it is by hand: SECURITY.md, "JWS and JWK
//! parsing"), against jsonwebtoken's own `decode`.
//!
//! A corpus of valid and mangled tokens (the `jwt_validate` fuzz seeds, made current and signed
//! with the keys here, and the odd corners: duplicate members, `crit`, base64 padding and
//! non-canonical base64, nested JSON, huge numbers, whitespace, `typ`, `alg: none`, `b64: false`,
//! extra segments, bytes that are not UTF-8, ...) goes through both, with the same keys (one
//! `TokenIssuer`'s JWK set: ES256, EdDSA, RS256, ES384, PS256, parsed by each side's own JWK
//! code), algorithms, audience, issuer, leeway and required claims. The two must agree on
//! accept or refuse, except for the cases listed in [`DISAGREEMENTS`], each with its reason: a
//! new disagreement, or a listed one that went away, fails the test.
//!
//! jsonwebtoken reads the system clock, so each run pins our validator's clock to the current
//! second and is repeated if the second changed before it ended (boundary cases such as `exp`
//! exactly at the leeway need both to see the same second).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use secure_channel::PeerIdentity;
use secure_channel::jwt::{Algorithm, DEFAULT_ALGORITHMS, JwtValidator, KeySource};
use secure_channel::testkit::TokenIssuer;
use serde_json::{Map, Value, json};
use support::*;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "https://api.test";
const CLIENT_ID: &str = "spiffe://example.org/client";
const LEEWAY: u64 = 5;
/// The keys of the issuer: `kid` and algorithm (the first four are the fuzz target's).
const KEYS: [(&str, Algorithm); 5] = [
    ("k1", Algorithm::ES256),
    ("k2", Algorithm::EdDSA),
    ("k3", Algorithm::RS256),
    ("k4", Algorithm::ES384),
    ("k5", Algorithm::PS256),
];
/// The fixed clock of the fuzz target, which the JSON seeds' times are relative to.
const FUZZ_NOW: i64 = 1_767_225_600;

/// The cases on which the two differ: (case, whether *we* accept it, why). jsonwebtoken does
/// the opposite. Summarized in SECURITY.md, "JWS and JWK parsing".
#[rustfmt::skip]
const DISAGREEMENTS: &[(&str, bool, &str)] = &[
    // Header.
    ("crit-exp", false, "RFC 7515 4.1.11: a crit extension not understood must be refused; jsonwebtoken ignores crit"),
    ("crit-empty-list", false, "RFC 7515 4.1.11: crit must not be empty; we refuse any crit, jsonwebtoken ignores it"),
    ("b64-false-with-crit", false, "RFC 7797 unencoded payloads are not supported, so crit [b64] is refused; jsonwebtoken ignores both"),
    ("typ-null", false, "typ, when present, must be a string; jsonwebtoken reads null as absent"),
    ("header-jku-not-a-string", true, "we never read jku (keys never come from the token); jsonwebtoken types every registered header"),
    ("header-jwk-not-an-object", true, "we never read jwk (keys never come from the token); jsonwebtoken parses it as a key"),
    ("header-x5c-not-a-list", true, "we never read x5c (keys never come from the token); jsonwebtoken types it"),
    // Time claims and lifetime.
    ("exp-at-the-leeway", false, "RFC 7519 4.1.4: expired from exp (plus leeway) on; jsonwebtoken accepts one second more"),
    ("exp-fraction-past-the-leeway", false, "fractional NumericDates compared as they are; jsonwebtoken rounds to the nearest second"),
    ("nbf-fraction-past-the-leeway", false, "fractional NumericDates compared as they are; jsonwebtoken rounds to the nearest second"),
    ("nbf-negative", true, "a NumericDate before 1970 is in the past; jsonwebtoken cannot read negative times and refuses"),
    ("iat-in-a-minute", false, "iat beyond now plus leeway is refused; jsonwebtoken does not check iat"),
    ("iat-string", false, "iat, when present, must be a NumericDate; jsonwebtoken does not read iat"),
    ("iat-negative", false, "exp minus iat is over the maximum lifetime (24 h); jsonwebtoken has no lifetime limit"),
    ("exp-in-ten-years", false, "over the maximum lifetime (24 h); jsonwebtoken has no lifetime limit"),
    ("exp-2^53+1", false, "over the maximum lifetime (24 h); jsonwebtoken has no lifetime limit"),
    ("exp-i64-max", false, "over the maximum lifetime (24 h); jsonwebtoken has no lifetime limit"),
    ("exp-u64-max", false, "over the maximum lifetime (24 h); jsonwebtoken has no lifetime limit"),
    ("lifetime-two-days", false, "over the maximum lifetime (24 h); jsonwebtoken has no lifetime limit"),
    ("lifetime-two-days-without-iat", false, "over the maximum lifetime (24 h, from now without iat); jsonwebtoken has no lifetime limit"),
    // Other claims.
    ("iss-list-of-ours", false, "RFC 7519 4.1.1: iss is one StringOrURI; jsonwebtoken also accepts a list that contains ours"),
    ("sub-number", false, "RFC 7519 4.1.2: sub is a StringOrURI; jsonwebtoken skips a sub it cannot read as a string"),
    ("cnf-another-certificate", false, "RFC 8705: bound to another client certificate; jsonwebtoken has no certificate binding"),
    ("cnf-padded-thumbprint", false, "RFC 8705: x5t#S256 is unpadded base64url, compared exactly; jsonwebtoken has no binding"),
    ("cnf-not-an-object", false, "a cnf we cannot check is refused; jsonwebtoken has no certificate binding"),
    ("cnf-without-x5t#S256", false, "a cnf we cannot check is refused; jsonwebtoken has no certificate binding"),
    ("seed-json-rsa-lists", false, "its cnf names a certificate that is not the caller's; jsonwebtoken has no certificate binding"),
    ("seed-token-bound-re-signed", false, "its cnf names the fuzz seed's certificate, not the caller's; jsonwebtoken has no binding"),
    ("claims-a-list", false, "RFC 7519 7.2: the claims set is a JSON object; jsonwebtoken reads a list by position (exp, nbf, sub, iss, aud)"),
    ("token-over-8-KiB", false, "over the size limit, refused before decoding; jsonwebtoken has no size limit"),
    // Duplicate member names.
    ("dup-header-alg-none-then-es256", true, "RFC 7515 4: duplicate names read lexically last (ES256); jsonwebtoken fails on the first alg, none"),
    ("dup-header-kid", true, "RFC 7515 4: duplicate names read lexically last; jsonwebtoken refuses a duplicate kid"),
    ("dup-claim-aud-ours-last", true, "RFC 7519 4: duplicate names read lexically last, as VerifiedClaims shows them; jsonwebtoken refuses"),
    ("dup-claim-exp-good-last", true, "RFC 7519 4: duplicate names read lexically last, as VerifiedClaims shows them; jsonwebtoken refuses"),
    ("dup-claim-iss-ours-last", true, "RFC 7519 4: duplicate names read lexically last, as VerifiedClaims shows them; jsonwebtoken refuses"),
];

#[tokio::test]
async fn validator_and_jsonwebtoken_decode_agree_on_the_corpus() {
    install_jsonwebtoken_provider();
    let mut issuer = TokenIssuer::new(ISSUER, KEYS[0].0, KEYS[0].1).unwrap();
    for (kid, alg) in &KEYS[1..] {
        issuer.add_key(*kid, *alg).unwrap();
    }
    let ca = ca("example.org");
    let peer = peer_identity_of(&ca, CLIENT_ID).await;
    let other_peer = peer_identity_of(&ca, CLIENT_ID).await;
    let jwks: JwkSet = serde_json::from_str(&issuer.jwks()).unwrap();

    let mut outcome = None;
    for _ in 0..20 {
        let t0 = unix_now();
        let corpus = Corpus::new(&issuer, t0, &peer, &other_peer).build();
        let clock = Arc::new(TestClock::at(UNIX_EPOCH + Duration::from_secs(t0 as u64)));
        let validator = JwtValidator::access_tokens(AUDIENCE)
            .issuer(ISSUER)
            .key_source(KeySource::from_jwks(issuer.jwks()).unwrap())
            .leeway(Duration::from_secs(LEEWAY))
            .time_provider(clock)
            .cache_capacity(0)
            .build()
            .unwrap();
        let mut rows = Vec::with_capacity(corpus.len());
        for case in corpus {
            let ours = within(validator.validate(&case.token, &peer))
                .await
                .map(drop)
                .map_err(|e| format!("{:?}", e.kind()));
            let theirs = jsonwebtoken_decode(&jwks, &case.token);
            rows.push((case.name, ours, theirs));
        }
        if unix_now() == t0 {
            outcome = Some(rows);
            break;
        }
    }
    let rows = outcome.expect("twenty runs each crossed a second boundary");
    check(&rows);
}

type Row = (String, Result<(), String>, Result<(), String>);

fn check(rows: &[Row]) {
    let expected: BTreeMap<&str, (bool, &str)> = DISAGREEMENTS
        .iter()
        .map(|(name, ours, why)| (*name, (*ours, *why)))
        .collect();
    assert_eq!(
        expected.len(),
        DISAGREEMENTS.len(),
        "a case is listed twice"
    );
    let mut names = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for (name, ours, theirs) in rows {
        assert!(names.insert(name.as_str()), "two cases named {name:?}");
        let listed = expected.get(name.as_str());
        let why = listed.map(|(_, why)| format!(" (listed: {why})"));
        println!(
            "{name:40} ours {ours:?} | jsonwebtoken {theirs:?}{}",
            why.unwrap_or_default()
        );
        match (ours.is_ok() == theirs.is_ok(), listed) {
            (true, None) => {}
            (true, Some(_)) => problems.push(format!(
                "{name}: listed as a disagreement, but both {}",
                if ours.is_ok() { "accept" } else { "refuse" }
            )),
            (false, Some((we_accept, _))) if *we_accept == ours.is_ok() => {}
            (false, _) => problems.push(format!(
                "{name}: NEW disagreement: ours {ours:?}, jsonwebtoken {theirs:?}"
            )),
        }
    }
    for name in expected.keys() {
        if !names.contains(name) {
            problems.push(format!("{name}: listed, but no such case"));
        }
    }
    let accepted_by_both = rows
        .iter()
        .filter(|(_, ours, theirs)| ours.is_ok() && theirs.is_ok())
        .count();
    println!(
        "{} cases: {} accepted by both, {} refused by both, {} disagreements",
        rows.len(),
        accepted_by_both,
        rows.iter()
            .filter(|(_, ours, theirs)| ours.is_err() && theirs.is_err())
            .count(),
        rows.iter()
            .filter(|(_, ours, theirs)| ours.is_ok() != theirs.is_ok())
            .count(),
    );
    for (name, ours, theirs) in rows {
        if name.starts_with("valid-") {
            assert!(
                ours.is_ok() && theirs.is_ok(),
                "{name} is a control both must accept: ours {ours:?}, jsonwebtoken {theirs:?}"
            );
        }
    }
    assert!(
        problems.is_empty(),
        "the validator and jsonwebtoken::decode differ other than listed:\n{}",
        problems.join("\n")
    );
}

/// jsonwebtoken as its documentation wires it: the `kid` of `decode_header` picks the key of
/// the JWK set (`JwkSet::find`, `DecodingKey::from_jwk`), and `decode` runs with the validator's
/// configuration as a `Validation`. jsonwebtoken takes algorithms of the key's family only, so
/// the allow-list is narrowed to the key's family and to the JWK's own `alg`, as ours is.
fn jsonwebtoken_decode(jwks: &JwkSet, token: &str) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or("unknown kid")?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key: {e}"))?;
    let jwk_alg = match jwk.common.key_algorithm {
        Some(alg) => Some(Algorithm::try_from(alg).map_err(|e| format!("key alg: {e}"))?),
        None => None,
    };
    let mut validation = Validation::new(Algorithm::ES256);
    validation.algorithms = DEFAULT_ALGORITHMS
        .into_iter()
        .filter(|alg| alg.family() == key.family() && jwk_alg.is_none_or(|own| own == *alg))
        .collect();
    validation.leeway = LEEWAY;
    validation.validate_nbf = true;
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `decode` uses jsonwebtoken's process-wide provider, which must be chosen when both backends
/// are compiled in (this test runs in its own process; the crate itself never uses it).
fn install_jsonwebtoken_provider() {
    #[cfg(feature = "aws-lc-rs")]
    let provider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
    #[cfg(not(feature = "aws-lc-rs"))]
    let provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    let _ = provider.install_default();
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

struct Case {
    name: String,
    token: String,
}

/// Builds the corpus for the current second `t0`.
struct Corpus<'a> {
    issuer: &'a TokenIssuer,
    t0: i64,
    peer: &'a PeerIdentity,
    other_peer: &'a PeerIdentity,
    cases: Vec<Case>,
}

impl<'a> Corpus<'a> {
    fn new(
        issuer: &'a TokenIssuer,
        t0: i64,
        peer: &'a PeerIdentity,
        other_peer: &'a PeerIdentity,
    ) -> Self {
        Self {
            issuer,
            t0,
            peer,
            other_peer,
            cases: Vec::new(),
        }
    }

    fn build(mut self) -> Vec<Case> {
        self.controls();
        self.header_cases();
        self.time_cases();
        self.claim_cases();
        self.duplicate_members();
        self.json_cases();
        self.structure_cases();
        self.encoding_cases();
        self.fuzz_seeds();
        self.cases
    }

    fn add(&mut self, name: impl Into<String>, token: impl Into<String>) {
        self.cases.push(Case {
            name: name.into(),
            token: token.into(),
        });
    }

    /// Signs the already encoded `header.payload` with key `kid`.
    fn encoded(&mut self, name: &str, kid: &str, header_b64: &str, payload_b64: &str) {
        let token = self
            .issuer
            .sign_input(kid, &format!("{header_b64}.{payload_b64}"))
            .unwrap();
        self.add(name, token);
    }

    /// Encodes the header and payload bytes as they are, and signs them with key `kid`.
    fn bytes(&mut self, name: &str, kid: &str, header: &[u8], payload: &[u8]) {
        self.encoded(name, kid, &b64(header), &b64(payload));
    }

    /// A token with the JSON texts `header` and `payload`, signed with key `kid`.
    fn text(&mut self, name: &str, kid: &str, header: &str, payload: &str) {
        self.bytes(name, kid, header.as_bytes(), payload.as_bytes());
    }

    /// A token with `header` and `payload` as JSON values, signed with key `kid`.
    fn json(&mut self, name: &str, kid: &str, header: Value, payload: Value) {
        self.text(name, kid, &header.to_string(), &payload.to_string());
    }

    /// A good token of key `kid` with `changes` to its header and claims (`null` removes).
    fn with(&mut self, name: &str, kid: &str, header: Value, claims: Value) {
        let header = merge(self.header(kid), header);
        let claims = merge(self.claims(), claims);
        self.json(name, kid, header, claims);
    }

    /// A good token of key `k1` with `changes` to its claims (`null` removes).
    fn claims_with(&mut self, name: &str, changes: Value) {
        self.with(name, "k1", json!({}), changes);
    }

    /// A good token of key `k1` with `changes` to its header (`null` removes).
    fn header_with(&mut self, name: &str, changes: Value) {
        self.with(name, "k1", changes, json!({}));
    }

    fn header(&self, kid: &str) -> Value {
        json!({ "alg": alg_name(kid), "kid": kid })
    }

    fn claims(&self) -> Value {
        json!({ "iss": ISSUER, "aud": AUDIENCE, "iat": self.t0, "exp": self.t0 + 300 })
    }

    /// The standard claims as JSON text without the braces, for hand-written JSON.
    fn claims_text(&self) -> String {
        let text = self.claims().to_string();
        text[1..text.len() - 1].to_owned()
    }

    fn good(&self, kid: &str) -> String {
        let header = self.header(kid).to_string();
        let claims = self.claims().to_string();
        self.issuer
            .sign_input(kid, &format!("{}.{}", b64(header), b64(claims)))
            .unwrap()
    }

    fn controls(&mut self) {
        for (kid, alg) in KEYS {
            let token = self.good(kid);
            self.add(format!("valid-{alg:?}"), token);
        }
        self.claims_with(
            "valid-aud-list",
            json!({ "aud": ["https://other.test", AUDIENCE] }),
        );
        self.claims_with(
            "valid-aud-list-twice",
            json!({ "aud": [AUDIENCE, AUDIENCE] }),
        );
        let thumbprint = self.peer.thumbprint_sha256_base64url();
        self.claims_with(
            "valid-bound-to-this-peer",
            json!({ "cnf": { "x5t#S256": thumbprint } }),
        );
        self.claims_with("valid-sub-any-string", json!({ "sub": "alice" }));
        self.claims_with(
            "valid-exp-fraction",
            json!({ "exp": self.t0 as f64 + 300.5 }),
        );
        self.claims_with(
            "valid-claim-beyond-u64",
            json!({ "n": 123_456_789_012_345_678_901_234_567_890.0_f64 }),
        );
        self.claims_with("valid-unicode-claim", json!({ "name": "Zoë 日本 🙂" }));
        self.header_with("valid-typ-JWT", json!({ "typ": "JWT" }));
        self.header_with("valid-typ-at+jwt", json!({ "typ": "at+jwt" }));
        self.header_with("valid-typ-unknown", json!({ "typ": "weird" }));
        self.header_with(
            "valid-key-urls-in-header-ignored",
            json!({ "jku": "https://evil.test/jwks", "x5u": "https://evil.test/cert" }),
        );
        self.header_with(
            "valid-jwe-params-on-jws",
            json!({ "enc": "A128GCM", "zip": "DEF" }),
        );
        self.header_with("valid-b64-false-without-crit", json!({ "b64": false }));
        self.header_with(
            "valid-unknown-header-param",
            json!({ "foo": [1, { "bar": null }] }),
        );
    }

    fn header_cases(&mut self) {
        let unsigned = self.issuer.token().audience(AUDIENCE).unsigned();
        self.add("alg-none-unsigned", unsigned);
        self.header_with("alg-none-signed", json!({ "alg": "none" }));
        self.header_with("alg-None-signed", json!({ "alg": "None" }));
        let confused = self
            .issuer
            .token()
            .audience(AUDIENCE)
            .hs256_with_public_key()
            .unwrap();
        self.add("alg-hs256-with-ec-public-key", confused);
        let confused = self
            .issuer
            .token()
            .key("k3")
            .audience(AUDIENCE)
            .hs256_with_public_key()
            .unwrap();
        self.add("alg-hs256-with-rsa-public-key", confused);
        self.header_with("alg-lower-case", json!({ "alg": "es256" }));
        self.header_with("alg-missing", json!({ "alg": null }));
        self.header_with("alg-number", json!({ "alg": 256 }));
        self.header_with("alg-unknown", json!({ "alg": "ES512" }));
        self.header_with("alg-of-another-key-type", json!({ "alg": "RS256" }));
        self.header_with("alg-es384-on-a-p256-key", json!({ "alg": "ES384" }));
        self.with(
            "alg-rs256-on-a-ps256-key",
            "k5",
            json!({ "alg": "RS256" }),
            json!({}),
        );
        self.with(
            "alg-rs384-not-allowed",
            "k3",
            json!({ "alg": "RS384" }),
            json!({}),
        );
        self.header_with("kid-missing", json!({ "kid": null }));
        self.header_with("kid-empty", json!({ "kid": "" }));
        self.header_with("kid-unknown", json!({ "kid": "k9" }));
        self.header_with("kid-number", json!({ "kid": 1 }));
        self.header_with("kid-of-another-key", json!({ "kid": "k4" }));
        self.header_with("crit-exp", json!({ "crit": ["exp"] }));
        self.header_with("crit-empty-list", json!({ "crit": [] }));
        self.header_with("crit-not-a-list", json!({ "crit": "exp" }));
        self.header_with(
            "b64-false-with-crit",
            json!({ "b64": false, "crit": ["b64"] }),
        );
        // `merge` removes members set to null; this one keeps it.
        let claims = self.claims().to_string();
        self.text(
            "typ-null",
            "k1",
            r#"{"alg":"ES256","kid":"k1","typ":null}"#,
            &claims,
        );
        self.header_with("typ-number", json!({ "typ": 5 }));
        self.header_with("header-jku-not-a-string", json!({ "jku": 5 }));
        self.header_with("header-jwk-not-an-object", json!({ "jwk": "k1" }));
        self.header_with("header-x5c-not-a-list", json!({ "x5c": "MIIB" }));
    }

    fn time_cases(&mut self) {
        let t0 = self.t0;
        let leeway = LEEWAY as i64;
        self.claims_with("exp-missing", json!({ "exp": null }));
        self.claims_with("exp-string", json!({ "exp": (t0 + 300).to_string() }));
        self.claims_with("exp-bool", json!({ "exp": true }));
        self.claims_with("exp-negative", json!({ "exp": -1 }));
        self.claims_with("exp-zero", json!({ "exp": 0 }));
        self.claims_with("exp-an-hour-ago", json!({ "exp": t0 - 3600 }));
        self.claims_with(
            "exp-one-second-inside-the-leeway",
            json!({ "exp": t0 - leeway + 1 }),
        );
        self.claims_with("exp-at-the-leeway", json!({ "exp": t0 - leeway }));
        self.claims_with(
            "exp-one-second-past-the-leeway",
            json!({ "exp": t0 - leeway - 1 }),
        );
        self.claims_with(
            "exp-fraction-inside-the-leeway",
            json!({ "exp": (t0 - leeway) as f64 + 0.4 }),
        );
        self.claims_with(
            "exp-fraction-past-the-leeway",
            json!({ "exp": (t0 - leeway) as f64 - 0.4 }),
        );
        self.claims_with("exp-in-ten-years", json!({ "exp": t0 + 10 * 365 * 86_400 }));
        self.claims_with("exp-2^53+1", json!({ "exp": 9_007_199_254_740_993_u64 }));
        self.claims_with("exp-i64-max", json!({ "exp": i64::MAX }));
        self.claims_with("exp-u64-max", json!({ "exp": u64::MAX }));
        self.claims_with("exp-1e300", json!({ "exp": 1e300 }));
        let claims =
            format!(r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","exp":18446744073709551616}}"#);
        let header = self.header("k1").to_string();
        self.text("exp-2^64", "k1", &header, &claims);
        let claims = format!(r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","exp":1e400}}"#);
        self.text("exp-1e400", "k1", &header, &claims);
        self.claims_with("lifetime-two-days", json!({ "exp": t0 + 2 * 86_400 }));
        self.claims_with(
            "lifetime-two-days-without-iat",
            json!({ "iat": null, "exp": t0 + 2 * 86_400 }),
        );
        self.claims_with("nbf-past", json!({ "nbf": t0 - 60 }));
        self.claims_with("nbf-at-the-leeway", json!({ "nbf": t0 + leeway }));
        self.claims_with(
            "nbf-one-second-past-the-leeway",
            json!({ "nbf": t0 + leeway + 1 }),
        );
        self.claims_with(
            "nbf-fraction-past-the-leeway",
            json!({ "nbf": (t0 + leeway) as f64 + 0.4 }),
        );
        self.claims_with("nbf-in-a-minute", json!({ "nbf": t0 + 60 }));
        self.claims_with("nbf-string", json!({ "nbf": t0.to_string() }));
        self.claims_with("nbf-negative", json!({ "nbf": -1 }));
        self.claims_with("iat-in-a-minute", json!({ "iat": t0 + 60 }));
        self.claims_with("iat-string", json!({ "iat": t0.to_string() }));
        self.claims_with("iat-negative", json!({ "iat": -1 }));
    }

    fn claim_cases(&mut self) {
        self.claims_with("iss-missing", json!({ "iss": null }));
        self.claims_with("iss-other", json!({ "iss": "https://evil.test" }));
        self.claims_with("iss-empty", json!({ "iss": "" }));
        self.claims_with("iss-number", json!({ "iss": 1 }));
        self.claims_with("iss-list-of-ours", json!({ "iss": [ISSUER] }));
        self.claims_with("iss-case", json!({ "iss": ISSUER.to_uppercase() }));
        self.claims_with("aud-missing", json!({ "aud": null }));
        self.claims_with("aud-other", json!({ "aud": "https://other.test" }));
        self.claims_with("aud-number", json!({ "aud": 1 }));
        self.claims_with("aud-object", json!({ "aud": { "a": AUDIENCE } }));
        self.claims_with("aud-empty-list", json!({ "aud": [] }));
        self.claims_with(
            "aud-list-without-ours",
            json!({ "aud": ["https://other.test"] }),
        );
        self.claims_with("aud-list-with-a-number", json!({ "aud": [AUDIENCE, 5] }));
        self.claims_with("aud-nested-list", json!({ "aud": [[AUDIENCE]] }));
        self.claims_with("sub-number", json!({ "sub": 5 }));
        self.claims_with("sub-object", json!({ "sub": { "id": "alice" } }));
        let thumbprint = self.other_peer.thumbprint_sha256_base64url();
        self.claims_with(
            "cnf-another-certificate",
            json!({ "cnf": { "x5t#S256": thumbprint } }),
        );
        let padded = format!("{}=", self.peer.thumbprint_sha256_base64url());
        self.claims_with(
            "cnf-padded-thumbprint",
            json!({ "cnf": { "x5t#S256": padded } }),
        );
        self.claims_with("cnf-not-an-object", json!({ "cnf": "x" }));
        self.claims_with("cnf-without-x5t#S256", json!({ "cnf": { "jkt": "abc" } }));
        let big = "x".repeat(9 * 1024);
        self.claims_with("token-over-8-KiB", json!({ "pad": big }));
    }

    fn duplicate_members(&mut self) {
        let claims = self.claims().to_string();
        let c = self.claims_text();
        self.text(
            "dup-header-alg-none-then-es256",
            "k1",
            r#"{"alg":"none","alg":"ES256","kid":"k1"}"#,
            &claims,
        );
        self.text(
            "dup-header-alg-es256-then-none",
            "k1",
            r#"{"alg":"ES256","alg":"none","kid":"k1"}"#,
            &claims,
        );
        self.text(
            "dup-header-kid",
            "k1",
            r#"{"alg":"ES256","kid":"k9","kid":"k1"}"#,
            &claims,
        );
        self.text(
            "dup-header-crit",
            "k1",
            r#"{"alg":"ES256","kid":"k1","crit":["exp"],"crit":["b64"]}"#,
            &claims,
        );
        let header = self.header("k1").to_string();
        let other_then_ours = format!(r#"{{"aud":"https://evil.test",{c}}}"#);
        self.text("dup-claim-aud-ours-last", "k1", &header, &other_then_ours);
        let ours_then_other = format!(r#"{{{c},"aud":"https://evil.test"}}"#);
        self.text("dup-claim-aud-ours-first", "k1", &header, &ours_then_other);
        let expired_then_good = format!(r#"{{"exp":{},{c}}}"#, self.t0 - 3600);
        self.text("dup-claim-exp-good-last", "k1", &header, &expired_then_good);
        let other_issuer_then_ours = format!(r#"{{"iss":"https://evil.test",{c}}}"#);
        self.text(
            "dup-claim-iss-ours-last",
            "k1",
            &header,
            &other_issuer_then_ours,
        );
        let scope_twice = format!(r#"{{{c},"scope":"a","scope":"b"}}"#);
        self.text("dup-claim-other-member", "k1", &header, &scope_twice);
    }

    fn json_cases(&mut self) {
        let header = self.header("k1").to_string();
        let claims = self.claims().to_string();
        let c = self.claims_text();
        let pretty_header = serde_json::to_string_pretty(&self.header("k1")).unwrap();
        let pretty_claims = serde_json::to_string_pretty(&self.claims()).unwrap();
        self.text("json-pretty-printed", "k1", &pretty_header, &pretty_claims);
        self.text(
            "json-whitespace-around",
            "k1",
            &format!(" \t\n{header}\r\n "),
            &format!("\n{claims} "),
        );
        let escaped = format!(
            r#"{{"\u0061ud":"{AUDIENCE}","iss":"{ISSUER}","exp":{}}}"#,
            self.t0 + 300
        );
        self.text("json-escaped-member-name", "k1", &header, &escaped);
        self.text(
            "json-escaped-alg",
            "k1",
            r#"{"alg":"ES\u0032\u0035\u0036","kid":"k1"}"#,
            &claims,
        );
        self.text(
            "json-nul-in-a-string",
            "k1",
            &header,
            &format!(r#"{{{c},"x":"a\u0000b"}}"#),
        );
        self.text(
            "json-lone-surrogate",
            "k1",
            &header,
            &format!(r#"{{{c},"x":"\ud800"}}"#),
        );
        self.text(
            "json-trailing-garbage",
            "k1",
            &header,
            &format!("{claims}x"),
        );
        self.text("json-two-objects", "k1", &header, &format!("{claims}{{}}"));
        self.text(
            "json-byte-order-mark",
            "k1",
            &header,
            &format!("\u{feff}{claims}"),
        );
        self.text("json-comment", "k1", &header, &format!("/* c */{claims}"));
        self.text(
            "json-single-quotes",
            "k1",
            &header,
            &claims.replace('"', "'"),
        );
        self.text("json-nan", "k1", &header, &format!(r#"{{{c},"x":NaN}}"#));
        self.text(
            "json-number-1e400",
            "k1",
            &header,
            &format!(r#"{{{c},"x":1e400}}"#),
        );
        self.text("json-trailing-comma", "k1", &header, &format!("{{{c},}}"));
        let mut non_utf8 = format!(r#"{{{c},"x":""#).into_bytes();
        non_utf8.extend_from_slice(&[0xff, 0xfe, b'"', b'}']);
        self.bytes("json-claims-not-utf8", "k1", header.as_bytes(), &non_utf8);
        let mut non_utf8 = br#"{"alg":"ES256","kid":"k1","x":""#.to_vec();
        non_utf8.extend_from_slice(&[0xc3, 0x28, b'"', b'}']);
        self.bytes("json-header-not-utf8", "k1", &non_utf8, claims.as_bytes());
        // jsonwebtoken reads its claims struct from a list by position: exp, nbf, sub, iss, aud.
        let positional = json!([self.t0 + 300, self.t0, "alice", ISSUER, AUDIENCE]);
        self.json("claims-a-list", "k1", self.header("k1"), positional);
        self.json("claims-a-string", "k1", self.header("k1"), json!("text"));
        self.json("claims-null", "k1", self.header("k1"), Value::Null);
        self.json("claims-empty-object", "k1", self.header("k1"), json!({}));
        let claims_value = self.claims();
        self.json(
            "header-a-list",
            "k1",
            json!(["ES256", "k1"]),
            claims_value.clone(),
        );
        self.json(
            "header-a-string",
            "k1",
            json!("ES256"),
            claims_value.clone(),
        );
        self.json("header-null", "k1", Value::Null, claims_value.clone());
        self.json("header-empty-object", "k1", json!({}), claims_value);
        for depth in [64, 127, 129, 200] {
            let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
            let payload = format!(r#"{{{c},"deep":{nested}}}"#);
            self.text(
                &format!("json-nested-{depth}-deep"),
                "k1",
                &header,
                &payload,
            );
        }
    }

    fn structure_cases(&mut self) {
        let good = self.good("k1");
        let (message, signature) = good.rsplit_once('.').unwrap();
        let (header, payload) = message.split_once('.').unwrap();
        let cases = [
            ("structure-empty", String::new()),
            ("structure-one-part", header.to_owned()),
            ("structure-two-parts", message.to_owned()),
            ("structure-four-parts", format!("{good}.{signature}")),
            (
                "structure-jwe-five-parts",
                format!("{header}..{payload}.{signature}.x"),
            ),
            ("structure-trailing-dot", format!("{good}.")),
            ("structure-leading-dot", format!(".{good}")),
            ("structure-empty-payload", format!("{header}..{signature}")),
            ("structure-dots-only", "..".to_owned()),
            ("structure-three-dots", "...".to_owned()),
            ("structure-signature-empty", format!("{message}.")),
            ("structure-signature-not-base64", format!("{message}.!!!")),
            (
                "structure-signature-truncated",
                format!("{message}.{}", &signature[..signature.len() - 4]),
            ),
            ("structure-signature-of-another-token", {
                let other = self.good("k4");
                format!("{message}.{}", other.rsplit_once('.').unwrap().1)
            }),
            ("whitespace-leading", format!(" {good}")),
            ("whitespace-trailing", format!("{good} ")),
            ("whitespace-trailing-newline", format!("{good}\n")),
            (
                "whitespace-after-a-dot",
                format!("{header}. {payload}.{signature}"),
            ),
            (
                "whitespace-inside-base64",
                format!("{} {}", &good[..10], &good[10..]),
            ),
        ];
        for (name, token) in cases {
            self.add(name, token);
        }
        let mut flipped = URL_SAFE_NO_PAD.decode(signature).unwrap();
        flipped[10] ^= 1;
        self.add(
            "signature-bit-flipped",
            format!("{message}.{}", b64(&flipped)),
        );
        let tampered = self
            .issuer
            .token()
            .audience(AUDIENCE)
            .tampered(Map::from_iter([(
                "aud".to_owned(),
                json!("https://other.test"),
            )]))
            .unwrap();
        self.add("payload-tampered", tampered);
    }

    /// Padding, the standard alphabet and non-canonical trailing bits, each in a part that is
    /// then signed as it stands, so that only the base64 decoding decides.
    fn encoding_cases(&mut self) {
        let claims = self.claims().to_string();
        // A header whose encoding has a `-` or `_` and a length that leaves trailing bits.
        let header = (0..12)
            .map(|n| {
                format!(
                    r#"{{"alg":"ES256","kid":"k1","x":"??>>{}"}}"#,
                    " ".repeat(n)
                )
            })
            .find(|h| {
                let e = b64(h);
                e.len() % 4 == 2 && (e.contains('_') || e.contains('-'))
            })
            .expect("a header of the wanted shape");
        let (h, p) = (b64(&header), b64(&claims));
        self.encoded("base64-control", "k1", &h, &p);
        self.encoded("base64-padded-header", "k1", &format!("{h}=="), &p);
        self.encoded("base64-padded-header-one-=", "k1", &format!("{h}="), &p);
        let p_padding = "=".repeat((4 - p.len() % 4) % 4);
        self.encoded(
            "base64-padded-payload",
            "k1",
            &h,
            &format!("{p}{p_padding}="),
        );
        let standard = h.replace('-', "+").replace('_', "/");
        self.encoded("base64-standard-alphabet", "k1", &standard, &p);
        self.encoded(
            "base64-non-canonical-header",
            "k1",
            &flip_trailing_bit(&h),
            &p,
        );
        if p.len() % 4 != 0 {
            self.encoded(
                "base64-non-canonical-payload",
                "k1",
                &h,
                &flip_trailing_bit(&p),
            );
        } else {
            let p2 = b64(format!("{claims} "));
            self.encoded(
                "base64-non-canonical-payload",
                "k1",
                &h,
                &flip_trailing_bit(&p2),
            );
        }
        self.encoded(
            "base64-percent-encoded",
            "k1",
            &h.replace('_', "%5F").replace('-', "%2D"),
            &p,
        );
        self.encoded("base64-one-char-too-many", "k1", &format!("{h}A"), &p);
        let good = self.good("k1");
        let (message, signature) = good.rsplit_once('.').unwrap();
        self.add(
            "base64-padded-signature",
            format!("{message}.{signature}=="),
        );
        self.add(
            "base64-non-canonical-signature",
            format!("{message}.{}", flip_trailing_bit(signature)),
        );
        let standard = signature.replace('-', "+").replace('_', "/");
        if standard != signature {
            self.add(
                "base64-standard-alphabet-signature",
                format!("{message}.{standard}"),
            );
        } else {
            self.add(
                "base64-standard-alphabet-signature",
                format!("{message}.+{}", &signature[1..]),
            );
        }
    }

    /// The `jwt_validate` fuzz target's seeds: raw tokens as they stand (minted with keys of
    /// their own) and re-signed with the keys here, and JSON-mode seeds signed as the target
    /// signs them; times moved to the current second. Structured-mode and JWK-set seeds are not
    /// tokens and are left out.
    fn fuzz_seeds(&mut self) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/jwt_validate");
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("seed-"))
            })
            .collect();
        seeds.sort();
        let mut used = 0;
        for path in seeds {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let data = std::fs::read(&path).unwrap();
            let Some((&selector, rest)) = data.split_first() else {
                continue;
            };
            match selector % 4 {
                0 => {
                    let token = String::from_utf8_lossy(rest).into_owned();
                    self.resigned_seed(&name, &token);
                    self.add(format!("{name}-as-minted"), token);
                }
                1 => self.json_seed(&name, rest),
                _ => continue,
            }
            used += 1;
        }
        assert!(
            used >= 10,
            "only {used} fuzz seeds found in {}",
            dir.display()
        );
    }

    /// A raw-mode seed with the keys here: its header and claims (times moved so that its
    /// `iat` is now), signed with the key its `kid` names (`k1` when not one of ours).
    fn resigned_seed(&mut self, name: &str, token: &str) {
        let mut parts = token.split('.');
        let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
            return;
        };
        let decode = |part: &str| -> Option<Map<String, Value>> {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
        };
        let (Some(header), Some(mut claims)) = (decode(header), decode(payload)) else {
            return;
        };
        if let Some(iat) = claims.get("iat").and_then(Value::as_i64) {
            shift_times(&mut claims, self.t0 - iat);
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .filter(|kid| KEYS.iter().any(|(k, _)| k == kid))
            .unwrap_or("k1")
            .to_owned();
        self.json(
            &format!("{name}-re-signed"),
            &kid,
            Value::Object(header),
            Value::Object(claims),
        );
    }

    /// A JSON-mode seed (key index, header JSON, NUL, claims JSON) as the fuzz target makes
    /// it: two objects are signed with the key of the index (the header's members over `alg`
    /// and `kid`); anything else is encoded as it is, with a junk signature.
    fn json_seed(&mut self, name: &str, data: &[u8]) {
        let (&key, data) = data.split_first().unwrap_or((&0, &[]));
        let (header, payload) = match data.iter().position(|&b| b == 0) {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &[][..]),
        };
        let kid = KEYS[usize::from(key) % 4].0;
        let parsed = (
            serde_json::from_slice::<Map<String, Value>>(header),
            serde_json::from_slice::<Map<String, Value>>(payload),
        );
        match parsed {
            (Ok(header_members), Ok(mut claims)) => {
                shift_times(&mut claims, self.t0 - FUZZ_NOW);
                let mut full = self.header(kid);
                full.as_object_mut().unwrap().extend(header_members);
                self.json(name, kid, full, Value::Object(claims));
            }
            _ => self.add(
                name,
                format!("{}.{}.{}", b64(header), b64(payload), b64([key; 64])),
            ),
        }
    }
}

fn alg_name(kid: &str) -> String {
    let (_, alg) = KEYS.iter().find(|(k, _)| *k == kid).unwrap();
    format!("{alg:?}")
}

/// `base` with the members of `changes` set, or removed where they are `null`.
fn merge(mut base: Value, changes: Value) -> Value {
    let object = base.as_object_mut().unwrap();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    base
}

/// Moves the numeric `exp`, `nbf` and `iat` claims by `by` seconds.
fn shift_times(claims: &mut Map<String, Value>, by: i64) {
    for name in ["exp", "nbf", "iat"] {
        let Some(value) = claims.get_mut(name) else {
            continue;
        };
        if let Some(secs) = value.as_i64() {
            *value = json!(secs + by);
        } else if let Some(secs) = value.as_f64() {
            *value = json!(secs + by as f64);
        }
    }
}

/// Sets the lowest bit of the last base64url character of `encoded`, whose length leaves
/// trailing bits: the same bytes, non-canonically encoded.
fn flip_trailing_bit(encoded: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_ne!(encoded.len() % 4, 0, "no trailing bits in {encoded}");
    let last = *encoded.as_bytes().last().unwrap();
    let index = ALPHABET.iter().position(|&c| c == last).unwrap();
    let flipped = ALPHABET[index ^ 1] as char;
    format!("{}{flipped}", &encoded[..encoded.len() - 1])
}
