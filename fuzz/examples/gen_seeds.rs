//! Writes the seed corpora under `fuzz/corpus/<target>/seed-*` (SVID chains and tokens minted by
//! the testkit, example policies, matcher strings).
//!
//! Usage (from `fuzz/`, on stable): `cargo run --example gen_seeds`
//!
//! Keys are generated afresh on every run, so regenerated seeds differ byte for byte; they only
//! need to be well-formed starting points for the fuzzers.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use secure_channel::jwt::Algorithm;
use secure_channel::testkit::{DevCa, ExtendedKeyUsage, IssuedSvid, KeyAlgorithm, TokenIssuer};
use serde_json::json;

/// The fixed clock of the `jwt_validate` target.
const NOW: i64 = 1_767_225_600;
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "https://api.test";
const PEER_ID: &str = "spiffe://example.org/client";

struct Corpus {
    dir: PathBuf,
}

impl Corpus {
    fn new(target: &str) -> Result<Self, Box<dyn Error>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
            {
                fs::remove_file(path)?;
            }
        }
        Ok(Self { dir })
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> Result<(), Box<dyn Error>> {
        fs::write(self.dir.join(format!("seed-{name}")), bytes)?;
        Ok(())
    }
}

/// The raw-mode input of `svid_verify`: a selector, then length-prefixed certificates.
fn chain_input(selector: u8, certs: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![selector];
    for cert in certs {
        let len = u16::try_from(cert.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&cert[..usize::from(len)]);
    }
    out
}

fn chain_of(issued: &IssuedSvid) -> Vec<&[u8]> {
    issued.chain().iter().map(|c| c.as_ref()).collect()
}

fn svid_seeds() -> Result<(), Box<dyn Error>> {
    let corpus = Corpus::new("svid_verify")?;
    let ca = DevCa::new("example.org")?;
    let inter = ca.intermediate()?;
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);

    let web = ca.svid("spiffe://example.org/web").issue()?;
    corpus.write("client-leaf", chain_input(2, &chain_of(&web)))?;
    let batch = inter.svid("spiffe://example.org/batch/job").issue()?;
    corpus.write("client-intermediate", chain_input(2, &chain_of(&batch)))?;
    let api = ca.svid("spiffe://example.org/api").issue()?;
    corpus.write("server-leaf", chain_input(0, &chain_of(&api)))?;
    corpus.write("resumed-leaf", chain_input(3, &chain_of(&web)))?;
    let mut with_root = chain_of(&batch);
    with_root.push(ca.root_certificate().as_ref());
    corpus.write("chain-with-root", chain_input(2, &with_root))?;
    corpus.write(
        "root-as-leaf",
        chain_input(2, &[ca.root_certificate().as_ref()]),
    )?;
    let rsa = ca
        .svid("spiffe://example.org/web")
        .key_algorithm(KeyAlgorithm::Rsa2048)
        .issue()?;
    corpus.write("rsa-leaf", chain_input(2, &chain_of(&rsa)))?;
    let ed = ca
        .svid("spiffe://example.org/web")
        .key_algorithm(KeyAlgorithm::Ed25519)
        .extended_key_usage(ExtendedKeyUsage::Absent)
        .issue()?;
    corpus.write("ed25519-leaf", chain_input(2, &chain_of(&ed)))?;
    let eku = ca
        .svid("spiffe://example.org/web")
        .extended_key_usage(ExtendedKeyUsage::ServerOnly)
        .issue()?;
    corpus.write("server-only-eku", chain_input(2, &chain_of(&eku)))?;
    let two_uris = ca
        .svid("spiffe://example.org/web")
        .extra_uri("spiffe://example.org/admin")
        .dns_name("web.example.org")
        .issue()?;
    corpus.write("two-uri-sans", chain_input(2, &chain_of(&two_uris)))?;
    let expired = ca
        .svid("spiffe://example.org/web")
        .validity(now - 2 * hour, now - hour)
        .issue()?;
    corpus.write("expired", chain_input(2, &chain_of(&expired)))?;
    let key_cert_sign = ca
        .svid("spiffe://example.org/web")
        .as_ca()
        .with_key_cert_sign()
        .issue()?;
    corpus.write("leaf-is-ca", chain_input(2, &chain_of(&key_cert_sign)))?;
    let mut junk = chain_of(&web);
    junk.push(b"\x30\x03\x02\x01\x00");
    corpus.write("junk-intermediate", chain_input(2, &junk))?;

    // Template mode: selector 1, template index, edit byte, patches, extra certificates.
    for index in 0..15u8 {
        corpus.write(&format!("template-{index}"), [1, index, 0])?;
    }
    corpus.write("template-server", [1, 2, 0x80])?;
    corpus.write("template-resumed", [1, 1, 0xc0])?;
    corpus.write("template-patched", [1, 0, 0x01, 0x01, 0x00, 0x40])?;
    corpus.write("template-truncated", [1, 0, 0x20, 0x00, 0x80])?;
    corpus.write("template-reordered", [1, 1, 0x18])?;
    let mut extra = vec![1, 0, 0x04];
    extra.extend_from_slice(&chain_input(0, &[ca.root_certificate().as_ref()])[1..]);
    corpus.write("template-extra-cert", extra)?;
    Ok(())
}

fn jwt_seeds() -> Result<(), Box<dyn Error>> {
    let corpus = Corpus::new("jwt_validate")?;
    let mut issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256)?;
    issuer.add_key("k2", Algorithm::EdDSA)?;
    let ca = DevCa::new("example.org")?;
    let svid = ca.svid(PEER_ID).issue()?;

    let raw = |token: String| {
        let mut out = vec![0u8];
        out.extend_from_slice(token.as_bytes());
        out
    };
    let access = issuer
        .token()
        .audience(AUDIENCE)
        .scope("read")
        .typ("at+jwt")
        .bound_to_svid(&svid)
        .sign()?;
    corpus.write("token-bound", raw(access))?;
    let svid_token = issuer
        .token()
        .key("k2")
        .audiences(&[AUDIENCE, "https://other.test"])
        .subject(PEER_ID)
        .sign()?;
    corpus.write("token-jwt-svid", raw(svid_token))?;
    corpus.write(
        "token-alg-none",
        raw(issuer.token().audience(AUDIENCE).unsigned()),
    )?;
    corpus.write(
        "token-hs256-confusion",
        raw(issuer.token().audience(AUDIENCE).hs256_with_public_key()?),
    )?;
    corpus.write("token-three-dots", raw("a.b.c".into()))?;
    corpus.write("token-empty-parts", raw("..".into()))?;

    // JSON mode: selector 1, key index, header JSON, NUL, payload JSON.
    let json_input = |key: u8, header: serde_json::Value, payload: serde_json::Value| {
        let mut out = vec![1u8, key];
        out.extend_from_slice(header.to_string().as_bytes());
        out.push(0);
        out.extend_from_slice(payload.to_string().as_bytes());
        out
    };
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": PEER_ID, "scope": "read write",
        "iat": NOW - 10, "exp": NOW + 300,
    });
    corpus.write("json-access", json_input(0, json!({}), claims.clone()))?;
    corpus.write(
        "json-typed",
        json_input(1, json!({ "typ": "at+jwt" }), claims.clone()),
    )?;
    corpus.write(
        "json-rsa-lists",
        json_input(
            2,
            json!({ "typ": "JWT" }),
            json!({
                "iss": ISSUER, "aud": [AUDIENCE, "x"], "sub": PEER_ID, "scope": null,
                "nbf": NOW - 5, "exp": NOW as f64 + 3599.5, "cnf": { "x5t#S256": "AAAA" },
            }),
        ),
    )?;
    corpus.write(
        "json-crit-alg",
        json_input(3, json!({ "crit": ["b64"], "alg": "none" }), claims.clone()),
    )?;
    corpus.write(
        "json-expired",
        json_input(
            0,
            json!({ "kid": "k2" }),
            json!({ "iss": ISSUER, "aud": AUDIENCE, "exp": NOW - 60, "scope": "x" }),
        ),
    )?;
    corpus.write("json-not-objects", b"\x01\x00[1,2]\x00\"text\"")?;

    // Structured mode: selector 2, bytes for `arbitrary`.
    corpus.write(
        "structured-zeros",
        [2u8; 1]
            .iter()
            .chain(&[0u8; 96])
            .copied()
            .collect::<Vec<_>>(),
    )?;
    corpus.write(
        "structured-ones",
        [2u8; 1]
            .iter()
            .chain(&[1u8; 96])
            .copied()
            .collect::<Vec<_>>(),
    )?;
    let pattern: Vec<u8> = std::iter::once(2u8)
        .chain((0..128u8).map(|i| i.wrapping_mul(37)))
        .collect();
    corpus.write("structured-pattern", pattern)?;

    // JWK set mode: selector 3, a JWKS document.
    let jwks = |doc: String| {
        let mut out = vec![3u8];
        out.extend_from_slice(doc.as_bytes());
        out
    };
    corpus.write("jwks", jwks(issuer.jwks()))?;
    corpus.write("jwt-bundle", jwks(issuer.jwt_bundle()))?;
    let mut rsa = TokenIssuer::new(ISSUER, "r1", Algorithm::PS256)?;
    rsa.add_key("e1", Algorithm::ES384)?;
    corpus.write("jwks-rsa", jwks(rsa.jwks()))?;
    corpus.write(
        "jwks-oct",
        jwks(json!({ "keys": [{ "kty": "oct", "kid": "h", "k": "c2VjcmV0" }] }).to_string()),
    )?;
    Ok(())
}

fn policy_seeds() -> Result<(), Box<dyn Error>> {
    let corpus = Corpus::new("policy_parse")?;
    let input = |toml: &str, method: &str, path: &str, caller: &str, claims: &str| {
        [toml, method, path, caller, claims].join("\0")
    };
    let example = r#"mode = "enforce"

[[rule]]
name = "web-reads-orders"
effect = "allow"
principals = ["spiffe://example.org/web", "spiffe://example.org/batch/*"]
routes = [
  { methods = ["GET"], path = "/orders/*" },
  { path = "/orders.v1.Orders/Get" },
]
[rule.when]
scopes = ["orders.read"]
claims = { tenant = "acme" }

[[rule]]
name = "nobody-on-admin"
effect = "deny"
principals = ["*"]
routes = [{ path = "/orders/admin/*" }]

[[rule]]
name = "partner-writes"
effect = "allow"
shadow = true
principals = ["spiffe://partner.example"]
routes = [{ methods = ["POST"], path = "/orders" }]
"#;
    corpus.write(
        "docs-example",
        input(
            example,
            "GET",
            "/orders/42",
            "spiffe://example.org/web",
            r#"{"scope":"orders.read","tenant":"acme"}"#,
        ),
    )?;
    corpus.write(
        "docs-example-admin",
        input(
            example,
            "GET",
            "/orders/x/%2e%2e/admin/users/",
            "spiffe://example.org/batch/job",
            "{}",
        ),
    )?;
    let simple = r#"[[rule]]
name = "any-read"
effect = "allow"
principals = ["spiffe://example.org"]
routes = [{ methods = ["GET", "HEAD"], path = "/*" }, { path = "/" }]

[[rule]]
name = "grpc"
effect = "allow"
principals = ["spiffe://example.org/web"]
routes = [{ path = "/pkg.v1.Svc/*" }]
"#;
    corpus.write(
        "simple",
        input(simple, "HEAD", "/a//b/./c", "spiffe://example.org/web", ""),
    )?;
    corpus.write(
        "simple-grpc",
        input(
            simple,
            "POST",
            "/pkg.v1.Svc/Get",
            "spiffe://example.org/web",
            "",
        ),
    )?;
    corpus.write(
        "dry-run",
        input(
            "mode = \"dry-run\"\n[[rule]]\nname = \"r\"\neffect = \"deny\"\nprincipals = [\"spiffe://example.org/web/*\"]\nroutes = [{ methods = [\"DELETE\"], path = \"/a\" }]\n",
            "DELETE",
            "/a/",
            "spiffe://example.org/web/x",
            "",
        ),
    )?;
    corpus.write(
        "bad-paths",
        input(
            simple,
            "GET",
            "/a%2Fb/..%5c/%00",
            "spiffe://example.org/web",
            "",
        ),
    )?;
    corpus.write("empty", input("", "GET", "/", "", ""))?;
    corpus.write(
        "invalid",
        input(
            "[[rule]]\nname = \"bad name!\"\neffect = \"allow\"\nprincipals = []\nroutes = [{ path = \"/a/\" }]\n",
            "get",
            "*",
            "",
            "",
        ),
    )?;
    Ok(())
}

fn matcher_seeds() -> Result<(), Box<dyn Error>> {
    let corpus = Corpus::new("id_matcher")?;
    let seeds: &[(&str, &[&str])] = &[
        (
            "spiffe://example.org/billing/*",
            &[
                "spiffe://example.org/billing",
                "spiffe://example.org/billing/api",
                "spiffe://example.org/billingx/api",
            ],
        ),
        ("spiffe://example.org", &["spiffe://example.org.evil/a"]),
        ("spiffe://example.org/*", &["spiffe://example.org"]),
        ("spiffe://example.org/web", &["spiffe://example.org/web/x"]),
        ("spiffe://Example.org", &[]),
        ("spiffe://example.org/bill*", &[]),
        ("spiffe://example.org/a/../b", &[]),
        ("spiffe://example.org/a/", &[]),
        ("spiffe://", &[]),
        ("https://example.org/web", &[]),
    ];
    for (i, (matcher, ids)) in seeds.iter().enumerate() {
        let mut text = (*matcher).to_owned();
        for id in *ids {
            text.push('\0');
            text.push_str(id);
        }
        corpus.write(&format!("{i:02}"), text)?;
    }
    Ok(())
}

/// SPIFFE bundle documents of example.org: X.509 authorities of each key type, JWT
/// authorities, sequence and refresh hint; and a few that are refused.
fn bundle_seeds() -> Result<(), Box<dyn Error>> {
    use secure_channel::federation::SpiffeBundle;
    let corpus = Corpus::new("bundle_parse")?;
    let ca = DevCa::new("example.org")?;
    let plain = SpiffeBundle::new(ca.bundle()?);
    corpus.write("x509", plain.to_json()?)?;
    let full = plain
        .clone()
        .with_sequence(7)
        .with_refresh_hint(Duration::from_secs(300));
    let mut document: serde_json::Value = serde_json::from_slice(&full.to_json()?)?;
    let mut issuer = TokenIssuer::new(ISSUER, "k1", Algorithm::ES256)?;
    issuer.add_key("k2", Algorithm::EdDSA)?;
    let jwks: serde_json::Value = serde_json::from_str(&issuer.jwt_bundle())?;
    if let (Some(keys), Some(jwt)) = (document["keys"].as_array_mut(), jwks["keys"].as_array()) {
        keys.extend(jwt.iter().cloned());
    }
    corpus.write("x509-jwt-sequence-hint", document.to_string())?;
    corpus.write("empty", r#"{"keys":[]}"#)?;
    corpus.write("other-use", r#"{"keys":[{"use":"wit-svid","kty":"EC"}]}"#)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    svid_seeds()?;
    jwt_seeds()?;
    policy_seeds()?;
    matcher_seeds()?;
    bundle_seeds()?;
    println!("seed corpora written under fuzz/corpus/");
    Ok(())
}
