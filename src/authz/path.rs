//! Request path normalization and route path patterns.
//!
//! Request paths are matched after normalization:
//!
//! 1. the path must start with `/`;
//! 2. each segment is percent-decoded; a malformed escape (`%4`, `%zz`), a decoded `/` or `\`
//!    (`%2F`, `%5C`), a raw `\`, any control character (raw or decoded, NUL included) or a
//!    segment that is not UTF-8 once decoded makes the path unsafe: it is refused, never guessed;
//! 3. empty segments (`//`) and `.` segments are dropped; `..` removes the segment before it, and a
//!    `..` that would climb above the root makes the path unsafe (decoded dot segments such as
//!    `%2e%2e` count as dot segments, because some servers decode before resolving);
//! 4. a trailing slash is dropped: `/a/` is the same path as `/a` (only `/` keeps its slash).
//!
//! The result is a sequence of decoded segments written as `/seg/seg`. Paths compare
//! case-sensitively.

use std::borrow::Cow;
use std::fmt;

/// Why a request path cannot be normalized safely; such a request is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/` (asterisk-form or authority-form requests).
    NotAbsolute,
    /// A `%` is not followed by two hexadecimal digits.
    MalformedEscape,
    /// A percent-encoded `/` or `\` (`%2F`, `%5C`): it would hide a segment boundary.
    EncodedSeparator,
    /// A raw `\`, which some servers treat as a separator.
    Backslash,
    /// A control character (NUL included), raw or percent-encoded.
    ControlCharacter,
    /// A segment that is not UTF-8 once percent-decoded.
    InvalidUtf8,
    /// A `..` segment that would climb above the root.
    EscapesRoot,
}

impl PathError {
    /// A short, stable name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotAbsolute => "not-absolute",
            Self::MalformedEscape => "malformed-escape",
            Self::EncodedSeparator => "encoded-separator",
            Self::Backslash => "backslash",
            Self::ControlCharacter => "control-character",
            Self::InvalidUtf8 => "invalid-utf8",
            Self::EscapesRoot => "escapes-root",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for PathError {}

/// Normalizes a request path (without query) as described in the module docs.
///
/// Returns the input unchanged (borrowed, no allocation) when it is already canonical.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical_request_path(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    normalize_segments(raw).map(Cow::Owned)
}

/// The general case of [`normalize_path`], for a path that starts with `/`.
fn normalize_segments(raw: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    // Byte offsets in `out` where each kept segment's leading `/` starts.
    let mut starts: Vec<usize> = Vec::new();
    for segment in raw.get(1..).unwrap_or_default().split('/') {
        let decoded = decode_segment(segment)?;
        match decoded.as_ref() {
            "" | "." => {}
            ".." => {
                let start = starts.pop().ok_or(PathError::EscapesRoot)?;
                out.truncate(start);
            }
            text => {
                starts.push(out.len());
                out.push('/');
                out.push_str(text);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Whether `raw` needs no work: no escapes, no backslash or control characters, no empty or dot
/// segments, no trailing slash. One pass over the bytes (`raw` starts with `/`).
fn is_canonical_request_path(raw: &str) -> bool {
    if raw == "/" {
        return true;
    }
    // The current segment's length so far and whether it holds only dots.
    let mut length = 0usize;
    let mut dots = true;
    for &b in raw.as_bytes().iter().skip(1) {
        match b {
            b'/' => {
                // An empty, `.` or `..` segment before this slash.
                if dots && length <= 2 {
                    return false;
                }
                length = 0;
                dots = true;
            }
            b'%' | b'\\' | 0x00..=0x1f | 0x7f => return false,
            b'.' => length += 1,
            _ => {
                length += 1;
                dots = false;
            }
        }
    }
    // The last segment: not empty (a trailing slash), not `.` or `..`.
    !(dots && length <= 2)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_segment(segment: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = segment.as_bytes();
    for &b in bytes {
        if b == b'\\' {
            return Err(PathError::Backslash);
        }
        if b < 0x20 || b == 0x7f {
            return Err(PathError::ControlCharacter);
        }
    }
    if !bytes.contains(&b'%') {
        return Ok(Cow::Borrowed(segment));
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::MalformedEscape);
        };
        let byte = hi << 4 | lo;
        match byte {
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            0x00..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ => decoded.push(byte),
        }
        i += 3;
    }
    String::from_utf8(decoded)
        .map(Cow::Owned)
        .map_err(|_| PathError::InvalidUtf8)
}

/// Writes a normalized (decoded) path in canonical URI form: every byte outside RFC 3986
/// `pchar` (unreserved, sub-delims, `:` and `@`) is percent-encoded with upper-case hex.
pub(crate) fn encode_normalized(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        if keep {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// A compiled route path: an exact path, or every path one or more whole segments below a
/// prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum PathPattern {
    /// Exactly this normalized path.
    Exact(Box<str>),
    /// Paths below this prefix (written without the `/*`; the root is `""`). `""` also matches
    /// `/` itself.
    Prefix(Box<str>),
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(path) => f.write_str(path),
            Self::Prefix(prefix) => write!(f, "{prefix}/*"),
        }
    }
}

impl PathPattern {
    /// Whether a normalized path matches (used by tests and `could_ever` checks; evaluation
    /// goes through the index).
    #[cfg(test)]
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(exact) => exact.as_ref() == path,
            Self::Prefix(prefix) if prefix.is_empty() => true,
            Self::Prefix(prefix) => path
                .strip_prefix(prefix.as_ref())
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/')),
        }
    }
}

/// Parses a route path written in a policy: canonical and decoded, `*` only as a whole last
/// segment. Returns the reason when refused.
pub(crate) fn parse_route_path(text: &str) -> Result<PathPattern, String> {
    if !text.starts_with('/') {
        return Err("must start with `/`".into());
    }
    if let Some(c) = text
        .chars()
        .find(|&c| c.is_control() || matches!(c, '%' | '\\' | '?' | '#'))
    {
        return Err(format!(
            "must be written decoded and without {c:?} (no `%`, `\\`, `?`, `#` or control characters)"
        ));
    }
    if let Some(problem) = axum_pattern(text) {
        return Err(problem);
    }
    let (body, prefix) = match text.strip_suffix("/*") {
        Some(body) => (body, true),
        None => (text, false),
    };
    if body.contains('*') {
        return Err(
            "a wildcard must be a whole last segment (`/api/*`); partial segments such as `/api*` are refused"
                .into(),
        );
    }
    if body == "/" && !prefix {
        return Ok(PathPattern::Exact("/".into()));
    }
    if !body.is_empty() {
        if body.ends_with('/') {
            return Err(
                "must not end with `/` (`/a/` and `/a` are the same path; write `/a`)".into(),
            );
        }
        for segment in body[1..].split('/') {
            match segment {
                "" => return Err("must not contain empty segments (`//`)".into()),
                "." | ".." => return Err("must not contain `.` or `..` segments".into()),
                _ => {}
            }
        }
    }
    Ok(if prefix {
        PathPattern::Prefix(body.into())
    } else {
        PathPattern::Exact(body.into())
    })
}

/// A route path written as an axum route pattern (`/orders/{id}`, `/files/{*rest}`): policy
/// paths are matched against request paths, where such a pattern never appears, so the rule
/// would never match. The problem, with the wildcard form to write instead.
fn axum_pattern(text: &str) -> Option<String> {
    let segments: Vec<&str> = text.split('/').collect();
    let first = segments
        .iter()
        .position(|s| s.contains('{') || s.contains('}'))?;
    let base = segments.get(..first).unwrap_or_default().join("/");
    let below = if base.is_empty() { "/" } else { base.as_str() };
    Some(format!(
        "looks like an axum route pattern (`{}`), which never matches: policy paths match \
         request paths; write `{base}/*` (every path below `{below}`, in whole segments)",
        segments.get(first).copied().unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/a", Ok("/a")),
            ("/a/", Ok("/a")),
            ("/a//b", Ok("/a/b")),
            ("//a", Ok("/a")),
            ("//", Ok("/")),
            ("/a/./b", Ok("/a/b")),
            ("/a/.", Ok("/a")),
            ("/./", Ok("/")),
            ("/a/b/../c", Ok("/a/c")),
            ("/a/..", Ok("/")),
            ("/a/%2e%2e/b", Ok("/b")),
            ("/a/%2E/b", Ok("/a/b")),
            ("/a/.%2e/b", Ok("/b")),
            ("/%61dmin", Ok("/admin")),
            ("/a%20b", Ok("/a b")),
            ("/caf%C3%A9", Ok("/café")),
            ("/A/B", Ok("/A/B")),
            ("/a/...", Ok("/a/...")),
            ("/a/.b", Ok("/a/.b")),
            ("/pkg.Svc/Method", Ok("/pkg.Svc/Method")),
            ("", Err(PathError::NotAbsolute)),
            ("*", Err(PathError::NotAbsolute)),
            ("a/b", Err(PathError::NotAbsolute)),
            ("/..", Err(PathError::EscapesRoot)),
            ("/a/../..", Err(PathError::EscapesRoot)),
            ("/a/../../b", Err(PathError::EscapesRoot)),
            ("/%2e%2e/a", Err(PathError::EscapesRoot)),
            ("/a%2Fb", Err(PathError::EncodedSeparator)),
            ("/a%2fb", Err(PathError::EncodedSeparator)),
            ("/a%5Cb", Err(PathError::EncodedSeparator)),
            ("/a%5cb", Err(PathError::EncodedSeparator)),
            ("/a\\b", Err(PathError::Backslash)),
            ("/a%00", Err(PathError::ControlCharacter)),
            ("/a\0", Err(PathError::ControlCharacter)),
            ("/a%0A", Err(PathError::ControlCharacter)),
            ("/a%7F", Err(PathError::ControlCharacter)),
            ("/a\t", Err(PathError::ControlCharacter)),
            ("/a%", Err(PathError::MalformedEscape)),
            ("/a%4", Err(PathError::MalformedEscape)),
            ("/a%zz", Err(PathError::MalformedEscape)),
            ("/a%4g", Err(PathError::MalformedEscape)),
            ("/a%FF", Err(PathError::InvalidUtf8)),
            ("/a%C3", Err(PathError::InvalidUtf8)),
        ];
        for (raw, expected) in cases {
            let got = normalize_path(raw);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                *expected,
                "normalizing {raw:?}"
            );
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for raw in ["/", "/a", "/a/b.c", "/pkg.Svc/Method"] {
            assert!(matches!(normalize_path(raw), Ok(Cow::Borrowed(_))), "{raw}");
        }
        for raw in ["/a/", "/a//b", "/%61"] {
            assert!(matches!(normalize_path(raw), Ok(Cow::Owned(_))), "{raw}");
        }
    }

    /// The one-pass check lets a path through unchanged only when the general normalization
    /// would also leave it unchanged, and takes every such path without `%`, `\` or control
    /// characters: all paths of up to seven bytes over an alphabet of the bytes that matter.
    #[test]
    fn the_canonical_check_agrees_with_normalization() {
        const ALPHABET: &[u8] = b"/.a%2f\\\0";
        let mut checked = 0;
        for length in 0..=6u32 {
            for n in 0..ALPHABET.len().pow(length) {
                let mut path = vec![b'/'];
                let mut rest = n;
                for _ in 0..length {
                    path.push(ALPHABET[rest % ALPHABET.len()]);
                    rest /= ALPHABET.len();
                }
                let path = String::from_utf8(path).unwrap();
                let unchanged = normalize_segments(&path).is_ok_and(|out| out == path);
                let plain = !path.bytes().any(|b| b == b'%' || b == b'\\' || b < 0x20);
                assert_eq!(
                    is_canonical_request_path(&path),
                    unchanged && plain,
                    "{path:?}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, (0..=6).map(|l| 8usize.pow(l)).sum::<usize>());
    }

    #[test]
    fn encoding_round_trips() {
        for path in ["/a b", "/café", "/50%", "/a/b~c", "/x?y#z"] {
            let encoded = encode_normalized(path);
            assert_eq!(normalize_path(&encoded).as_deref(), Ok(path), "{encoded}");
        }
        assert_eq!(encode_normalized("/a b/%"), "/a%20b/%25");
    }

    #[test]
    fn route_patterns() {
        let ok: &[(&str, PathPattern)] = &[
            ("/", PathPattern::Exact("/".into())),
            ("/*", PathPattern::Prefix("".into())),
            ("/api", PathPattern::Exact("/api".into())),
            ("/api/*", PathPattern::Prefix("/api".into())),
            ("/pkg.Svc/*", PathPattern::Prefix("/pkg.Svc".into())),
            (
                "/pkg.Svc/Method",
                PathPattern::Exact("/pkg.Svc/Method".into()),
            ),
        ];
        for (text, expected) in ok {
            assert_eq!(parse_route_path(text).as_ref(), Ok(expected), "{text}");
            assert_eq!(expected.to_string(), *text);
        }
        // axum route patterns are refused with the wildcard form to write instead.
        for (pattern, wildcard) in [
            ("/orders/{id}", "`/orders/*`"),
            ("/admin/{*rest}", "`/admin/*`"),
            ("/orders/{id}/items", "`/orders/*`"),
            ("/{tenant}/orders", "`/*`"),
            ("/files/a}", "`/files/*`"),
        ] {
            let problem = parse_route_path(pattern).unwrap_err();
            assert!(
                problem.contains("axum route pattern"),
                "{pattern}: {problem}"
            );
            assert!(problem.contains(wildcard), "{pattern}: {problem}");
        }
        for bad in [
            "", "api", "/api/", "/api*", "/a/*/b", "/a/**", "/*/a", "//a", "/a//b", "/a/./b",
            "/a/../b", "/..", "/a%2Fb", "/a\\b", "/a?b", "/a#b", "/a\0", "*",
        ] {
            assert!(parse_route_path(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn prefix_matching_is_on_whole_segments() {
        let p = parse_route_path("/a/b/*").unwrap();
        assert!(p.matches("/a/b/c"));
        assert!(p.matches("/a/b/c/d"));
        assert!(!p.matches("/a/b"));
        assert!(!p.matches("/a/bc"));
        assert!(!p.matches("/a/bc/d"));
        assert!(!p.matches("/A/b/c"));
        let root = parse_route_path("/*").unwrap();
        assert!(root.matches("/"));
        assert!(root.matches("/x/y"));
    }
}
