//! The rooms of `src/` depend one way (README "Architecture"): no room imports from a room
//! above it. Test modules are left out: they may use the testkit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

/// The rooms, lowest first; each may use only those before it.
const ORDER: &[&str] = &[
    "telemetry",
    "identity",
    "error",
    "crypto",
    "reload",
    "limit",
    "source",
    "revocation",
    "tls",
    "transport",
    "jwt",
    "authz",
    "layer",
    "integration",
    "oauth",
    "federation",
    "workload_api",
    "channel",
    "testkit",
    "fuzzing",
    "lib",
];

/// Where the types re-exported at the crate root live.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("ConfigError", "error"),
    ("Location", "error"),
    ("ReadError", "error"),
    ("WorkloadApiProblem", "error"),
    ("PeerIdentity", "identity"),
    ("AllowList", "identity"),
    ("IdMatcher", "identity"),
    ("CredentialSource", "source"),
    ("Credentials", "source"),
    ("MemorySource", "source"),
    ("CredentialStatus", "source"),
    ("Svid", "source"),
    ("TrustBundle", "source"),
    ("TrustBundles", "source"),
    ("ConnectionError", "transport"),
    ("ConnectionErrorKind", "transport"),
    ("SecureConnector", "transport"),
    ("SecureListener", "transport"),
    ("SecureStream", "transport"),
    ("SecureChannel", "channel"),
    ("SecureChannelBuilder", "channel"),
];

fn rank(room: &str) -> usize {
    ORDER
        .iter()
        .position(|r| *r == room)
        .unwrap_or_else(|| panic!("room {room} is not in ORDER: add it where it belongs"))
}

/// The code of a file without its test module (which by lint comes last).
fn code_without_tests(text: &str) -> &str {
    let end = ["#[cfg(test)]", "#[cfg(all(test"]
        .iter()
        .filter_map(|marker| text.find(marker))
        .min()
        .unwrap_or(text.len());
    &text[..end]
}

/// The rooms a file's code names through `crate::` paths (in `use` and inline), comments left out.
fn rooms_used(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (index, _) in line.match_indices("crate::") {
            let rest = &line[index + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                // `use crate::{A, b::C}`: each part.
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or("");
                    for part in group.split(',') {
                        used.extend(room_of_path(part.trim()));
                    }
                }
                continue;
            }
            used.extend(room_of_path(rest));
        }
    }
    used
}

fn room_of_path(path: &str) -> Option<String> {
    let name: String = path
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if name.is_empty() {
        return None;
    }
    if name.starts_with(|c: char| c.is_uppercase()) {
        let (_, room) = ROOT_ITEMS
            .iter()
            .find(|(item, _)| *item == name)
            .unwrap_or_else(|| panic!("crate::{name}: add it to ROOT_ITEMS"));
        return Some((*room).to_owned());
    }
    Some(name)
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn rooms_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let name = relative.to_string_lossy();
        if name.ends_with("tests.rs") || name.ends_with("test_support.rs") {
            continue;
        }
        let room = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        let text = std::fs::read_to_string(file).unwrap();
        for used in rooms_used(code_without_tests(&text)) {
            if used != room && rank(&used) > rank(&room) {
                upward.push(format!("{name}: {room} uses {used}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "rooms must depend one way:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_use() {
    let code = "use crate::identity::PeerIdentity;\nuse crate::{ConfigError, layer::Jwt};\n";
    let used = rooms_used(code);
    assert!(used.contains("identity") && used.contains("error") && used.contains("layer"));
    assert!(rooms_used("// crate::layer in a comment\n").is_empty());
    assert_eq!(
        code_without_tests("a\n#[cfg(test)]\nmod tests { use crate::testkit; }"),
        "a\n"
    );
}
