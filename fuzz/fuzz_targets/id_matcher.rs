//! SPIFFE ID matchers: arbitrary strings through `IdMatcher::parse` and, when valid, `matches`
//! against arbitrary `SpiffeId`s.
//!
//! Input, split on NUL bytes: the matcher text, then candidate IDs. IDs derived from the matcher
//! text (the parent, a child, a sibling with a longer last segment) are tried too.
//!
//! Invariants besides "never panics":
//! - only canonical text parses, so a matcher displays as exactly the text it was parsed from,
//!   and that text parses back to an equal matcher (`FromStr` agrees with `parse`);
//! - `matches` agrees with a string reference: exact ID; whole trust domain; or whole segments
//!   below a path (never the parent itself, never a longer segment such as `/billingx`);
//! - a matched ID is in `trust_domain_of_matches()`, and an `AllowList` of the matcher allows
//!   exactly what it matches.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secure_channel::{AllowList, IdMatcher, SpiffeId};

/// What `text` (a matcher that parsed) should match, by string comparison of canonical IDs.
fn reference_matches(text: &str, id: &str) -> bool {
    if let Some(parent) = text.strip_suffix('*') {
        // `spiffe://td/path/*` (parent ends with `/`): strictly below, on a segment boundary.
        return id.len() > parent.len() && id.starts_with(parent);
    }
    let rest = &text["spiffe://".len()..];
    if !rest.contains('/') {
        // A trust domain: the IDs of that trust domain.
        return id
            .strip_prefix(text)
            .is_some_and(|tail| tail.is_empty() || tail.starts_with('/'));
    }
    id == text
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let parsed = IdMatcher::parse(&text);
    let from_str = text.parse::<IdMatcher>();
    assert_eq!(parsed, from_str, "FromStr disagrees with parse");
    let matcher = match parsed {
        Ok(matcher) => matcher,
        Err(error) => {
            assert_eq!(error.input(), text);
            let _ = error.to_string();
            return;
        }
    };

    let shown = matcher.to_string();
    assert_eq!(shown, text, "a matcher displays as the text it parsed from");
    let again = IdMatcher::parse(&shown).expect("Display output must parse");
    assert_eq!(again, matcher, "Display does not round-trip through parse");
    let _ = format!("{matcher:?}");

    let mut list = AllowList::deny_all();
    list.push(matcher.clone());

    let base = text.trim_end_matches('*').trim_end_matches('/');
    let derived = [
        base.to_owned(),
        format!("{base}/a"),
        format!("{base}/a/b"),
        format!("{base}x"),
        format!("{base}x/a"),
        match base.rsplit_once('/') {
            Some((parent, _)) => parent.to_owned(),
            None => base.to_owned(),
        },
    ];
    let inputs = parts
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .chain(derived);
    for candidate in inputs {
        let Ok(id) = SpiffeId::new(&candidate) else {
            continue;
        };
        let canonical = id.to_string();
        let matched = matcher.matches(&id);
        assert_eq!(
            matched,
            reference_matches(&text, &canonical),
            "{text} vs {canonical}"
        );
        assert_eq!(list.allows(&id), matched);
        if matched {
            assert_eq!(id.trust_domain(), matcher.trust_domain_of_matches());
        }
    }
});
