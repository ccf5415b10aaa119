//! Parsing of CRL inputs and deny-list files, and the live values' revisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use spiffe::SpiffeId;

use super::crl::parse_crls;
use super::deny::parse_deny_list;
use super::*;
use crate::error::Location;

fn file() -> Location {
    Location::File(PathBuf::from("/etc/deny.txt"))
}

fn digest_hex(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

#[test]
fn a_deny_list_file_takes_ids_digests_comments_and_blank_lines() {
    let text = format!(
        "# incident 42\n\n  spiffe://example.org/web  \nsha256:{}\nSHA256:{}\n",
        digest_hex(0xab),
        digest_hex(0xCD).to_uppercase()
    );
    let set = parse_deny_list(text.as_bytes(), &file()).unwrap();
    let list = DenyList::new();
    // The parsed set, seen through a list's entries.
    let entries: Vec<String> = {
        for entry in [
            DenyEntry::SpiffeId(SpiffeId::new("spiffe://example.org/web").unwrap()),
            DenyEntry::CertificateSha256([0xab; 32]),
            DenyEntry::CertificateSha256([0xcd; 32]),
        ] {
            list.deny(entry);
        }
        list.entries().iter().map(ToString::to_string).collect()
    };
    assert_eq!(
        entries,
        [
            "spiffe://example.org/web".to_owned(),
            format!("sha256:{}", digest_hex(0xab)),
            format!("sha256:{}", digest_hex(0xcd)),
        ]
    );
    assert_eq!(Summary::len(&set), 3);
    // An empty file is an empty list.
    assert_eq!(
        Summary::len(&parse_deny_list(b"# nothing\n", &file()).unwrap()),
        0
    );
}

#[test]
fn a_bad_line_refuses_the_whole_file_naming_file_and_line() {
    for (text, line) in [
        ("spiffe://example.org/ok\nhttps://example.org/web\n", 2),
        ("# c\n\nsha256:abcd\n", 3),
        (&*format!("sha256:{}zz\n", "0".repeat(62)), 1),
        (&*format!("sha256:+{}\n", "0".repeat(63)), 1),
        (&*format!("sha256:{}\n", "0".repeat(66)), 1),
        ("spiffe://Example.org/upper\n", 1),
        ("spiffe://example.org/a b\n", 1),
        ("md5:0123\n", 1),
    ] {
        match parse_deny_list(text.as_bytes(), &file()) {
            Err(RevocationError::InvalidDenyEntry {
                location,
                line: found,
                problem,
            }) => {
                assert_eq!((location, found), (file(), line), "{text:?}: {problem}");
                let message = parse_deny_list(text.as_bytes(), &file())
                    .unwrap_err()
                    .to_string();
                assert!(
                    message.starts_with(&format!("file /etc/deny.txt, line {line}: ")),
                    "{message}"
                );
            }
            other => panic!("{text:?}: expected InvalidDenyEntry, got {other:?}"),
        }
    }
    // Not UTF-8: the line of the first bad byte.
    match parse_deny_list(b"spiffe://example.org/a\n\xff\n", &file()) {
        Err(RevocationError::InvalidDenyEntry { line, .. }) => assert_eq!(line, 2),
        other => panic!("expected InvalidDenyEntry, got {other:?}"),
    }
}

#[test]
fn deny_list_changes_publish_revisions_only_when_they_change_something() {
    let list = DenyList::new();
    let id = SpiffeId::new("spiffe://example.org/web").unwrap();
    let changes = list.subscribe();
    assert_eq!(list.revision(), 1);
    assert!(list.deny_id(id.clone()));
    assert_eq!(list.revision(), 2);
    assert!(changes.has_changed().unwrap());
    assert!(!list.deny_id(id.clone()));
    assert_eq!(list.revision(), 2);
    assert!(list.deny_certificate_sha256([1; 32]));
    assert!(list.contains(&DenyEntry::CertificateSha256([1; 32])));
    assert_eq!(list.len(), 2);
    assert!(list.remove(&DenyEntry::SpiffeId(id.clone())));
    assert!(!list.remove(&DenyEntry::SpiffeId(id)));
    assert_eq!(list.revision(), 4);
    assert_eq!(list.failed_reloads(), 0);
}

#[cfg(feature = "testkit")]
mod with_crls {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::testkit::DevCa;

    fn field() -> Location {
        Location::Field("crls")
    }

    #[test]
    fn der_and_pem_with_several_blocks_parse() {
        let ca = DevCa::new("example.org").unwrap();
        let other = DevCa::new("other.org").unwrap();
        let der = ca.crl(&[b"\x01\x02"]).der().unwrap();
        assert_eq!(parse_crls(&der, &field()).unwrap().len(), 1);
        let pem = format!(
            "# two lists\n{}{}",
            ca.crl(&[]).pem().unwrap(),
            other.crl(&[b"\x05"]).pem().unwrap()
        );
        assert_eq!(parse_crls(pem.as_bytes(), &field()).unwrap().len(), 2);
        let lists = RevocationLists::new([der.as_slice(), pem.as_bytes()]).unwrap();
        assert_eq!(lists.len(), 3);
        assert!(lists.enforces_next_update());
        assert!(!lists.clone().ignore_next_update().enforces_next_update());
    }

    #[test]
    fn the_earliest_next_update_is_kept() {
        let ca = DevCa::new("example.org").unwrap();
        let soon = SystemTime::now() + Duration::from_secs(600);
        let later = SystemTime::now() + Duration::from_secs(6000);
        let lists = RevocationLists::new([
            ca.crl(&[]).next_update(later).der().unwrap(),
            ca.crl(&[]).next_update(soon).der().unwrap(),
        ])
        .unwrap();
        let earliest = lists.earliest_next_update().unwrap();
        let seconds = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(seconds(earliest), seconds(soon));
        assert_eq!(
            RevocationLists::new(Vec::<Vec<u8>>::new())
                .unwrap()
                .earliest_next_update(),
            None
        );
    }

    #[test]
    fn garbage_empty_and_broken_pem_are_refused() {
        let ca = DevCa::new("example.org").unwrap();
        assert!(matches!(
            parse_crls(b"not a crl", &field()),
            Err(RevocationError::InvalidCrl { index: 0, .. })
        ));
        assert!(parse_crls(b"  \n", &field()).unwrap().is_empty());
        assert!(matches!(
            RevocationLists::new([b"".as_slice()]),
            Err(RevocationError::NoCrl { .. })
        ));
        // A PEM block cut short.
        let pem = ca.crl(&[]).pem().unwrap();
        let cut = &pem[..pem.len() - 30];
        assert!(matches!(
            parse_crls(cut.as_bytes(), &field()),
            Err(RevocationError::NotPem { .. })
        ));
        // The second block is a certificate, not a CRL: refused as the second list.
        let mixed = format!(
            "{}-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
            pem,
            base64_of(ca.certificate().as_ref())
        );
        assert!(matches!(
            parse_crls(mixed.as_bytes(), &field()),
            Err(RevocationError::InvalidCrl { index: 1, .. })
        ));
        // A refused replacement changes nothing.
        let lists = RevocationLists::new([pem.as_bytes()]).unwrap();
        assert!(lists.replace([b"junk".as_slice()]).is_err());
        assert_eq!((lists.revision(), lists.len()), (1, 1));
    }

    fn base64_of(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}
