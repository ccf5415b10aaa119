//! SPIFFE bundle documents (what a federation partner's bundle endpoint serves): arbitrary
//! bytes through `SpiffeBundle::parse` for trust domain `example.org`.
//!
//! Invariants besides "never panics":
//! - a refused document is refused with an error that displays;
//! - a document that parses is written again (`to_json`) and parses back to the same X.509 and
//!   JWT authorities, sequence and refresh hint (whole seconds);
//! - the size limit holds: a document over it is refused as `TooLarge`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secure_channel::TrustDomain;
use secure_channel::federation::{BundleError, SpiffeBundle};

/// Small, so that the fuzzer reaches it.
const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(trust_domain) = TrustDomain::new("example.org") else {
        return;
    };
    let bundle = match SpiffeBundle::parse(&trust_domain, data, LIMIT) {
        Ok(bundle) => bundle,
        Err(error) => {
            if data.len() > LIMIT {
                assert!(matches!(error, BundleError::TooLarge { .. }), "{error}");
            }
            let _ = error.to_string();
            return;
        }
    };
    assert!(data.len() <= LIMIT);
    let _ = format!("{bundle:?}");
    // A CA certificate this crate accepted but cannot describe as a JWK (an unusual key) may
    // refuse to be written; it must never panic.
    let Ok(written) = bundle.to_json() else {
        return;
    };
    let again =
        SpiffeBundle::parse(&trust_domain, &written, usize::MAX).expect("a written bundle parses");
    assert_eq!(
        again.x509_authorities().certificates(),
        bundle.x509_authorities().certificates()
    );
    assert_eq!(again.jwt_authorities_jwks(), bundle.jwt_authorities_jwks());
    assert_eq!(again.sequence(), bundle.sequence());
    assert_eq!(
        again.refresh_hint().map(|h| h.as_secs()),
        bundle.refresh_hint().map(|h| h.as_secs())
    );
});
