//! JWT parsing and validation: bearer tokens through `JwtValidator::validate` with a fixed key
//! set minted once by the testkit's `TokenIssuer`, for a fixed peer.
//!
//! Input: one selector byte (selector % 4), then
//! - 0: the rest is the token, as text;
//! - 1: header JSON, a NUL byte, payload JSON: two JSON objects are signed with the issuer's key
//!   (so the claim checks are reached); anything else is encoded as is, with a junk signature;
//! - 2: a structured token (`arbitrary`): header fields, time claims around the fixed clock,
//!   issuer, audience, subject, scope, certificate binding, signature right or spoiled;
//! - 3: the rest is a JWK set document, for `KeySource::from_jwks` and `JwtBundles::set`.
//!
//! Three validators see every token: access tokens (issuer, audience, a required claim, cache
//! on), certificate-bound `at+jwt` tokens (any issuer, two algorithms, small size limit, cache
//! off) and JWT-SVIDs (keys by trust domain, subject must be the peer). Invariants besides
//! "never panics": whatever a validator accepts satisfies its configuration.
#![no_main]

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use rustls::time_provider::TimeProvider;
use rustls_pki_types::UnixTime;
use secure_channel::jwt::{Algorithm, JwtBundles, JwtValidator, KeySource, VerifiedClaims};
use secure_channel::testkit::{DevCa, TokenIssuer};
use secure_channel::{PeerIdentity, SpiffeId, TrustDomain};
use serde_json::{Map, Value, json};

/// The fixed clock of the validators (2026-01-01T00:00:00Z).
const NOW: i64 = 1_767_225_600;
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "https://api.test";
const PEER_ID: &str = "spiffe://example.org/client";
const LEEWAY: f64 = 5.0;

#[derive(Debug)]
struct FixedClock;

impl TimeProvider for FixedClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(NOW as u64)))
    }
}

struct Fixture {
    issuer: TokenIssuer,
    peer: PeerIdentity,
    other_peer: PeerIdentity,
    access: JwtValidator,
    bound: JwtValidator,
    svids: JwtValidator,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256).expect("issuer");
        issuer.add_key("k2", Algorithm::EdDSA).expect("key");
        issuer.add_key("k3", Algorithm::RS256).expect("key");
        issuer.add_key("k4", Algorithm::ES384).expect("key");

        let ca = DevCa::new("example.org").expect("dev CA");
        let id = SpiffeId::new(PEER_ID).expect("id");
        let not_after = std::time::UNIX_EPOCH + Duration::from_secs(NOW as u64 + 3600);
        let svid = ca.svid(PEER_ID).issue().expect("svid");
        let peer =
            secure_channel::fuzzing::peer_identity(id.clone(), svid.leaf().clone(), not_after);
        let other = ca.svid(PEER_ID).issue().expect("svid");
        let other_peer =
            secure_channel::fuzzing::peer_identity(id, other.leaf().clone(), not_after);

        let clock = Arc::new(FixedClock);
        let jwks = KeySource::from_jwks(issuer.jwks()).expect("jwks");
        let access = JwtValidator::access_tokens(AUDIENCE)
            .issuer(ISSUER)
            .key_source(jwks.clone())
            .require_claim("scope")
            .time_provider(clock.clone())
            .cache_capacity(64)
            .build()
            .expect("validator");
        let bound = JwtValidator::access_tokens(AUDIENCE)
            .audience("https://other.test")
            .any_issuer()
            .key_source(jwks)
            .algorithms([Algorithm::ES256, Algorithm::EdDSA])
            .require_type("at+jwt")
            .require_certificate_binding()
            .max_token_size(1024)
            .leeway(Duration::ZERO)
            .time_provider(clock.clone())
            .cache_capacity(0)
            .build()
            .expect("validator");
        let bundles = JwtBundles::new();
        bundles
            .set(
                TrustDomain::new("example.org").expect("td"),
                issuer.jwt_bundle(),
            )
            .expect("bundle");
        let svids = JwtValidator::jwt_svids(AUDIENCE)
            .key_source(KeySource::jwt_bundles(&bundles))
            .require_subject_matches_peer()
            .max_lifetime(Duration::from_secs(3600))
            .time_provider(clock)
            .build()
            .expect("validator");
        Fixture {
            issuer,
            peer,
            other_peer,
            access,
            bound,
            svids,
        }
    })
}

/// Polls a future once: validation with a static key source never waits.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("validation with a static key source must not wait"),
    }
}

fn thumbprint(peer: &PeerIdentity) -> String {
    URL_SAFE_NO_PAD.encode(peer.thumbprint_sha256())
}

fn check_common(claims: &VerifiedClaims, peer: &PeerIdentity, leeway: f64) {
    let exp = claims
        .claim("exp")
        .and_then(Value::as_f64)
        .expect("accepted without exp");
    assert!((NOW as f64) < exp + leeway, "accepted an expired token");
    if let Some(cnf) = claims.claim("cnf") {
        let bound = cnf.get("x5t#S256").and_then(Value::as_str);
        assert_eq!(
            bound,
            Some(thumbprint(peer).as_str()),
            "accepted a token bound elsewhere"
        );
    }
    assert!(
        claims
            .audiences()
            .any(|a| a == AUDIENCE || a == "https://other.test"),
        "accepted a token for another audience"
    );
}

fn validate_all(fx: &Fixture, token: &str, peer: &PeerIdentity) {
    match ready(fx.access.validate(token, peer)) {
        Ok(claims) => {
            check_common(&claims, peer, LEEWAY);
            assert_eq!(claims.issuer(), Some(ISSUER));
            assert!(claims.claim("scope").is_some_and(|s| !s.is_null()));
        }
        Err(error) => {
            let _ = (error.kind(), error.to_string());
        }
    }
    match ready(fx.bound.validate(token, peer)) {
        Ok(claims) => {
            check_common(&claims, peer, 0.0);
            assert!(claims.claim("cnf").is_some(), "accepted an unbound token");
            assert!(token.len() <= 1024);
        }
        Err(error) => {
            let _ = (error.kind(), error.to_string());
        }
    }
    match ready(fx.svids.validate(token, peer)) {
        Ok(claims) => {
            check_common(&claims, peer, LEEWAY);
            assert_eq!(claims.subject(), Some(PEER_ID), "accepted another subject");
        }
        Err(error) => {
            let _ = (error.kind(), error.to_string());
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs `header` and `claims` with the issuer's key `kid` (header entries override `alg` and
/// `kid`); `None` when the issuer has no such key.
fn sign(
    fx: &Fixture,
    kid: &str,
    header: Map<String, Value>,
    claims: Map<String, Value>,
) -> Option<String> {
    let mut builder = fx
        .issuer
        .token()
        .key(kid)
        .without_claim("iss")
        .without_claim("iat")
        .without_claim("exp");
    for (name, value) in header {
        builder = builder.header(name, value);
    }
    for (name, value) in claims {
        builder = builder.claim(name, value);
    }
    builder.sign().ok()
}

fn json_mode(fx: &Fixture, data: &[u8], peer: &PeerIdentity) {
    let (&key, data) = data.split_first().unwrap_or((&0, &[]));
    let (header, payload) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let parsed = (
        serde_json::from_slice::<Map<String, Value>>(header),
        serde_json::from_slice::<Map<String, Value>>(payload),
    );
    let token = match parsed {
        (Ok(header), Ok(claims)) => {
            let kid = ["k1", "k2", "k3", "k4"][usize::from(key) % 4];
            match sign(fx, kid, header, claims) {
                Some(token) => token,
                None => return,
            }
        }
        _ => format!("{}.{}.{}", b64(header), b64(payload), b64(&[key; 64])),
    };
    validate_all(fx, &token, peer);
}

#[derive(Arbitrary, Debug)]
enum Text {
    Good,
    Other,
    Raw(String),
    Number(i64),
    Null,
}

#[derive(Arbitrary, Debug)]
enum Time {
    Offset(i16),
    FarOffset(i32),
    Fraction(i16, u16),
    Absolute(i64),
    Float(f64),
    Text(String),
}

impl Time {
    fn value(&self) -> Value {
        match self {
            Self::Offset(d) => json!(NOW + i64::from(*d)),
            Self::FarOffset(d) => json!(NOW + i64::from(*d)),
            Self::Fraction(d, f) => json!(NOW as f64 + f64::from(*d) + f64::from(*f) / 65536.0),
            Self::Absolute(t) => json!(t),
            Self::Float(f) => json!(f),
            Self::Text(s) => json!(s),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Audience {
    One(Text),
    List(Vec<Text>),
}

#[derive(Arbitrary, Debug)]
enum Binding {
    Peer,
    OtherPeer,
    Raw(String),
    NotObject(Text),
    WithoutThumbprint,
    NotString(i64),
}

#[derive(Arbitrary, Debug)]
enum Signature {
    Valid,
    FlipBit(u16),
    Empty,
    Junk(Vec<u8>),
    NotBase64,
}

#[derive(Arbitrary, Debug)]
struct Spec {
    key: u8,
    alg: Option<Text>,
    kid: Option<Text>,
    typ: Option<Text>,
    crit: bool,
    exp: Option<Time>,
    nbf: Option<Time>,
    iat: Option<Time>,
    iss: Option<Text>,
    aud: Option<Audience>,
    sub: Option<Text>,
    scope: Option<Text>,
    cnf: Option<Binding>,
    extra: Vec<(String, i64)>,
    signature: Signature,
    other_peer: bool,
}

fn text(t: &Text, good: &str, other: &str) -> Value {
    match t {
        Text::Good => json!(good),
        Text::Other => json!(other),
        Text::Raw(s) => json!(s),
        Text::Number(n) => json!(n),
        Text::Null => Value::Null,
    }
}

fn structured_mode(fx: &Fixture, data: &[u8]) {
    let Ok(spec) = Spec::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let peer = if spec.other_peer {
        &fx.other_peer
    } else {
        &fx.peer
    };
    let kid = ["k1", "k2", "k3", "k4"][usize::from(spec.key) % 4];
    let mut header = Map::new();
    if let Some(alg) = &spec.alg {
        header.insert("alg".into(), text(alg, "ES256", "none"));
    }
    if let Some(k) = &spec.kid {
        header.insert("kid".into(), text(k, kid, "unknown"));
    }
    if let Some(typ) = &spec.typ {
        header.insert("typ".into(), text(typ, "at+jwt", "JWT"));
    }
    if spec.crit {
        header.insert("crit".into(), json!(["exp"]));
    }
    let mut claims = Map::new();
    for (name, time) in [("exp", &spec.exp), ("nbf", &spec.nbf), ("iat", &spec.iat)] {
        if let Some(time) = time {
            claims.insert(name.into(), time.value());
        }
    }
    if let Some(iss) = &spec.iss {
        claims.insert("iss".into(), text(iss, ISSUER, "https://evil.test"));
    }
    match &spec.aud {
        Some(Audience::One(t)) => {
            claims.insert("aud".into(), text(t, AUDIENCE, "https://other.test"));
        }
        Some(Audience::List(list)) => {
            let list: Vec<Value> = list
                .iter()
                .map(|t| text(t, AUDIENCE, "https://elsewhere.test"))
                .collect();
            claims.insert("aud".into(), Value::Array(list));
        }
        None => {}
    }
    if let Some(sub) = &spec.sub {
        claims.insert(
            "sub".into(),
            text(sub, PEER_ID, "spiffe://example.org/other"),
        );
    }
    if let Some(scope) = &spec.scope {
        claims.insert("scope".into(), text(scope, "read write", ""));
    }
    if let Some(cnf) = &spec.cnf {
        let value = match cnf {
            Binding::Peer => json!({ "x5t#S256": thumbprint(&fx.peer) }),
            Binding::OtherPeer => json!({ "x5t#S256": thumbprint(&fx.other_peer) }),
            Binding::Raw(s) => json!({ "x5t#S256": s }),
            Binding::NotObject(t) => text(t, "x", "y"),
            Binding::WithoutThumbprint => json!({ "jkt": "abc" }),
            Binding::NotString(n) => json!({ "x5t#S256": n }),
        };
        claims.insert("cnf".into(), value);
    }
    for (name, value) in &spec.extra {
        claims.insert(name.clone(), json!(value));
    }
    let Some(token) = sign(fx, kid, header, claims) else {
        return;
    };
    let Some((message, signature)) = token.rsplit_once('.') else {
        return;
    };
    let signature = match &spec.signature {
        Signature::Valid => signature.to_owned(),
        Signature::FlipBit(at) => {
            let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap_or_default();
            if !bytes.is_empty() {
                let at = usize::from(*at) % (bytes.len() * 8);
                bytes[at / 8] ^= 1 << (at % 8);
            }
            b64(&bytes)
        }
        Signature::Empty => String::new(),
        Signature::Junk(junk) => b64(junk),
        Signature::NotBase64 => "!!".to_owned(),
    };
    let token = format!("{message}.{signature}");
    validate_all(fx, &token, peer);
}

fn jwks_mode(data: &[u8]) {
    if let Ok(source) = KeySource::from_jwks(data) {
        let _ = format!("{source:?}");
    }
    let bundles = JwtBundles::new();
    let _ = bundles.set(TrustDomain::new("example.org").expect("td"), data);
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let peer = if selector & 0x80 != 0 {
        &fx.other_peer
    } else {
        &fx.peer
    };
    match selector % 4 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            validate_all(fx, &token, peer);
        }
        1 => json_mode(fx, rest, peer),
        2 => structured_mode(fx, rest),
        _ => jwks_mode(rest),
    }
});
