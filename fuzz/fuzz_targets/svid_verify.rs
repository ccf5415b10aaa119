//! X.509-SVID verification on arbitrary DER chains: leaf inspection, then chain validation
//! against a fixed bundle (rustls-webpki), then the allow-list, as a channel's handshake runs it.
//!
//! Input: one selector byte, then
//! - raw modes (selector % 4 = 0 server side, 2 client side, 3 resumed client session): a chain
//!   of certificates, each as a big-endian u16 length and that many bytes (the last one takes
//!   what is left);
//! - template mode (selector % 4 = 1): a template index, an edit byte, byte patches and extra
//!   length-prefixed certificates, applied to one of the chains minted at start-up by the
//!   testkit's development CAs. This reaches the accepted path (and the verified-chain cache),
//!   which random bytes cannot: a signature cannot be guessed.
//!
//! Invariants checked besides "never panics": an accepted chain names the SPIFFE ID of its
//! leaf, is allowed by the verifier's allow-list, and never comes from a CA outside the bundle
//! of the leaf's trust domain.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::UnixTime;
use secure_channel::fuzzing::{ChainVerifier, chain_validity, inspect_leaf};
use secure_channel::testkit::{DevCa, ExtendedKeyUsage, KeyAlgorithm};
use secure_channel::{AllowList, Credentials, IdMatcher, MemorySource, TrustBundles};

const MAX_CERTS: usize = 8;

struct Template {
    chain: Vec<Vec<u8>>,
    /// Issued by a CA outside the bundle of the leaf's trust domain: must never be accepted.
    must_fail: bool,
}

struct Fixture {
    verifier: ChainVerifier,
    allowed_clients: AllowList,
    expected_servers: AllowList,
    templates: Vec<Template>,
    now: UnixTime,
}

fn allow_list(matchers: &[&str]) -> AllowList {
    let mut list = AllowList::deny_all();
    for m in matchers {
        list.push(IdMatcher::parse(m).expect("fixed matcher"));
    }
    list
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ca = DevCa::new("example.org").expect("dev CA");
        let inter = ca.intermediate().expect("intermediate CA");
        let other = DevCa::new("other.org").expect("dev CA");
        // Same trust domain name, not in the bundle: an impostor CA.
        let rogue = DevCa::new("example.org").expect("dev CA");

        let own = ca.svid("spiffe://example.org/api").issue().expect("svid");
        let bundles = TrustBundles::new()
            .with(ca.bundle().expect("bundle"))
            .with(other.bundle().expect("bundle"));
        let source = MemorySource::new(Credentials::new(own.to_svid().expect("svid"), bundles));
        let allowed_clients = allow_list(&[
            "spiffe://example.org/web",
            "spiffe://example.org/batch/*",
            "spiffe://other.org",
        ]);
        let expected_servers = allow_list(&["spiffe://example.org/api"]);
        let verifier = ChainVerifier::new(
            source.source(),
            allowed_clients.clone(),
            expected_servers.clone(),
        )
        .expect("verifier");

        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let chain = |issued: secure_channel::testkit::IssuedSvid| -> Vec<Vec<u8>> {
            issued.chain().iter().map(|c| c.as_ref().to_vec()).collect()
        };
        let tpl = |b: secure_channel::testkit::SvidBuilder<'_>| Template {
            chain: chain(b.issue().expect("svid")),
            must_fail: false,
        };
        let impostor = |b: secure_channel::testkit::SvidBuilder<'_>| Template {
            chain: chain(b.issue().expect("svid")),
            must_fail: true,
        };
        let templates = vec![
            tpl(ca.svid("spiffe://example.org/web")),
            tpl(inter.svid("spiffe://example.org/batch/job")),
            tpl(ca.svid("spiffe://example.org/api")),
            tpl(other.svid("spiffe://other.org/web")),
            tpl(ca
                .svid("spiffe://example.org/web")
                .key_algorithm(KeyAlgorithm::Ed25519)),
            tpl(ca
                .svid("spiffe://example.org/web")
                .key_algorithm(KeyAlgorithm::EcdsaP384)
                .extended_key_usage(ExtendedKeyUsage::Absent)),
            tpl(ca
                .svid("spiffe://example.org/web")
                .extended_key_usage(ExtendedKeyUsage::ClientOnly)),
            tpl(ca.svid("spiffe://example.org/web").without_key_usage()),
            tpl(ca.svid("spiffe://example.org/web").as_ca()),
            tpl(ca
                .svid("spiffe://example.org/web")
                .extra_uri("spiffe://example.org/admin")),
            tpl(ca
                .svid("spiffe://example.org/web")
                .validity(now - 2 * hour, now - hour)),
            tpl(ca.svid("spiffe://Example.org/web")),
            impostor(rogue.svid("spiffe://example.org/web")),
            impostor(other.svid("spiffe://example.org/web")),
            impostor(other.svid("spiffe://example.org/batch/job")),
        ];
        Fixture {
            verifier,
            allowed_clients,
            expected_servers,
            templates,
            now: UnixTime::since_unix_epoch(
                now.duration_since(SystemTime::UNIX_EPOCH)
                    .expect("clock after 1970"),
            ),
        }
    })
}

/// Splits `data` into length-prefixed certificates.
fn split_chain(mut data: &[u8], chain: &mut Vec<Vec<u8>>) {
    while !data.is_empty() && chain.len() < MAX_CERTS {
        if data.len() < 2 {
            chain.push(data.to_vec());
            return;
        }
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let take = len.min(rest.len());
        chain.push(rest[..take].to_vec());
        data = &rest[take..];
    }
}

#[derive(Clone, Copy)]
enum Side {
    Clients,
    Servers,
    ResumedClients,
}

fn from_template(fx: &Fixture, data: &[u8]) -> Option<(Vec<Vec<u8>>, bool, Side)> {
    let (&index, data) = data.split_first()?;
    let template = &fx.templates[usize::from(index) % fx.templates.len()];
    let (&edits, mut data) = data.split_first().unwrap_or((&0, &[]));
    let mut chain = template.chain.clone();
    // Byte patches to the leaf: (offset u16, xor u8), up to 4.
    for _ in 0..(edits & 0x3) {
        let [a, b, x, rest @ ..] = data else { break };
        let leaf = &mut chain[0];
        if !leaf.is_empty() {
            let at = usize::from(u16::from_be_bytes([*a, *b])) % leaf.len();
            leaf[at] ^= *x;
        }
        data = rest;
    }
    if edits & 0x04 != 0 {
        chain.truncate(1);
    }
    if edits & 0x08 != 0 && chain.len() > 1 {
        chain[1..].reverse();
    }
    if edits & 0x10 != 0 && chain.len() > 1 {
        chain.swap(0, 1);
    }
    if edits & 0x20 != 0
        && let [a, b, rest @ ..] = data
    {
        let leaf = &mut chain[0];
        let at = usize::from(u16::from_be_bytes([*a, *b]));
        leaf.truncate(at.min(leaf.len()));
        data = rest;
    }
    split_chain(data, &mut chain);
    chain.truncate(MAX_CERTS);
    let side = match edits >> 6 {
        0 | 1 => Side::Clients,
        2 => Side::Servers,
        _ => Side::ResumedClients,
    };
    Some((chain, template.must_fail, side))
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (chain, must_fail, side) = match selector % 4 {
        1 => match from_template(fx, rest) {
            Some(parts) => parts,
            None => return,
        },
        mode => {
            let mut chain = Vec::new();
            split_chain(rest, &mut chain);
            let side = match mode {
                0 => Side::Servers,
                2 => Side::Clients,
                _ => Side::ResumedClients,
            };
            (chain, false, side)
        }
    };
    // Optionally far from the fixed time, for the validity checks.
    let now = match selector >> 2 {
        0..=59 => fx.now,
        60 => UnixTime::since_unix_epoch(Duration::ZERO),
        61 => UnixTime::since_unix_epoch(Duration::from_secs(u64::from(u32::MAX) * 4)),
        62 => {
            UnixTime::since_unix_epoch(Duration::from_secs(fx.now.as_secs().saturating_sub(7200)))
        }
        _ => UnixTime::since_unix_epoch(Duration::from_secs(fx.now.as_secs() + 400 * 86_400)),
    };

    let leaf = chain.first().map(|der| inspect_leaf(der));
    let _ = chain_validity(&chain);
    let (result, allowed) = match side {
        Side::Clients => (
            fx.verifier.verify_client_chain(&chain, now),
            &fx.allowed_clients,
        ),
        Side::Servers => (
            fx.verifier.verify_server_chain(&chain, now),
            &fx.expected_servers,
        ),
        Side::ResumedClients => (
            fx.verifier.identify_resumed_client(&chain, now),
            &fx.allowed_clients,
        ),
    };
    match result {
        Ok(identity) => {
            assert!(!must_fail, "accepted a chain from outside the bundle");
            assert!(
                allowed.allows(identity.spiffe_id()),
                "accepted a peer not allowed"
            );
            assert_eq!(identity.leaf_certificate().as_ref(), &chain[0][..]);
            match leaf {
                Some(Ok((id, not_after))) => {
                    assert_eq!(&id, identity.spiffe_id());
                    assert_eq!(not_after, identity.not_after());
                }
                other => panic!("accepted a leaf that inspection refuses: {other:?}"),
            }
        }
        Err(rejection) => {
            let _ = rejection.to_string();
        }
    }
});
