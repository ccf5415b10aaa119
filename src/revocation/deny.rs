//! Deny-lists: peers refused by SPIFFE ID or by leaf certificate, from code or from a file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use spiffe::SpiffeId;

use crate::error::Location;
use crate::identity::{DenyEntry, PeerIdentity};
use crate::reload::{FileWatch, Live};
use crate::revocation::{LoggedWriter, RevocationError, Summary, notices_accessors};

/// A live, cloneable deny-list: peers refused at the handshake even though their chain
/// validates, by exact SPIFFE ID or by the SHA-256 of their leaf certificate; given to a
/// channel with [`SecureChannelBuilder::deny_list`](crate::SecureChannelBuilder::deny_list).
///
/// For incident response: deny a compromised workload's ID, or one stolen certificate, at
/// once, without waiting for its CA to publish a CRL. Entries come from code
/// ([`deny_id`](Self::deny_id), [`deny_certificate_sha256`](Self::deny_certificate_sha256),
/// [`remove`](Self::remove)) or from a file that is followed ([`from_file`](Self::from_file));
/// each change is a new [`revision`](Self::revision). Cheap to clone: clones share the entries.
///
/// ```
/// # #[cfg(feature = "testkit")]
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use secure_channel::revocation::{DenyEntry, DenyList};
/// use secure_channel::testkit::DevCa;
/// use secure_channel::{MemorySource, SecureChannel, SpiffeId};
///
/// let denied = DenyList::new();
/// let ca = DevCa::new("example.org")?;
/// let source = MemorySource::new(ca.credentials("spiffe://example.org/api")?);
/// let server = SecureChannel::builder(&source)
///     .allow_client("spiffe://example.org")
///     .deny_list(&denied)
///     .build()?;
///
/// // From now on the next handshake of this ID is refused, whatever the allow-list says.
/// let id = SpiffeId::new("spiffe://example.org/compromised")?;
/// assert!(denied.deny_id(id.clone()));
/// assert!(denied.contains(&DenyEntry::SpiffeId(id.clone())));
/// assert_eq!(denied.revision(), 2);
/// // The file form of the same entry:
/// assert_eq!(DenyEntry::SpiffeId(id.clone()).to_string(), "spiffe://example.org/compromised");
/// denied.remove(&DenyEntry::SpiffeId(id));
/// # drop(server);
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "testkit"))]
/// # fn main() {}
/// ```
///
/// # File format
///
/// One entry per line: a SPIFFE ID (`spiffe://example.org/web`, matched exactly), or
/// `sha256:` and the 64 hex digits (either case) of the SHA-256 of the leaf certificate's DER
/// (the value of [`PeerIdentity::thumbprint_sha256_hex`]). Blank lines and lines starting with
/// `#` are ignored; white space around an entry too. Any other line refuses the whole file with
/// [`RevocationError::InvalidDenyEntry`] naming the file and line: at start an error, on a
/// reload the last good list stays (logged, counted in [`failed_reloads`](Self::failed_reloads)).
///
/// # Security
///
/// Deny-lists are consulted after the chain validated (so the ID is authenticated) and before
/// the allow-list, on every handshake, resumed sessions included, and never cached: a change
/// reaches the next handshake. On a list that follows a file, the file's next change replaces
/// what code changed.
#[derive(Clone)]
pub struct DenyList {
    live: Live<DenySet>,
    writer: LoggedWriter<DenySet>,
    file: Option<Arc<Path>>,
}

/// The entries of one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DenySet {
    ids: BTreeSet<SpiffeId>,
    digests: BTreeSet<[u8; 32]>,
}

impl Summary for DenySet {
    fn len(&self) -> usize {
        self.ids.len() + self.digests.len()
    }
}

impl DenySet {
    fn insert(&mut self, entry: DenyEntry) -> bool {
        match entry {
            DenyEntry::SpiffeId(id) => self.ids.insert(id),
            DenyEntry::CertificateSha256(digest) => self.digests.insert(digest),
        }
    }

    fn remove(&mut self, entry: &DenyEntry) -> bool {
        match entry {
            DenyEntry::SpiffeId(id) => self.ids.remove(id),
            DenyEntry::CertificateSha256(digest) => self.digests.remove(digest),
        }
    }

    fn contains(&self, entry: &DenyEntry) -> bool {
        match entry {
            DenyEntry::SpiffeId(id) => self.ids.contains(id),
            DenyEntry::CertificateSha256(digest) => self.digests.contains(digest),
        }
    }

    /// The entry that denies `identity`: its ID first, then (computed only when some digest is
    /// listed) its leaf's SHA-256.
    fn denying(&self, identity: &PeerIdentity) -> Option<DenyEntry> {
        let id = identity.spiffe_id();
        if self.ids.contains(id) {
            return Some(DenyEntry::SpiffeId(id.clone()));
        }
        if self.digests.is_empty() {
            return None;
        }
        let digest = identity.thumbprint_sha256();
        self.digests
            .contains(digest)
            .then_some(DenyEntry::CertificateSha256(*digest))
    }
}

impl Default for DenyList {
    fn default() -> Self {
        Self::new()
    }
}

impl DenyList {
    /// An empty deny-list, changed from code.
    pub fn new() -> Self {
        Self::with_set(DenySet::default(), None)
    }

    fn with_set(set: DenySet, file: Option<Arc<Path>>) -> Self {
        let (live, writer) = Live::new("deny-list", "deny-list", set);
        Self {
            live,
            writer: LoggedWriter::new(writer),
            file,
        }
    }

    /// A deny-list read from a file and following its changes (see the file format above).
    pub fn from_file(path: impl Into<PathBuf>) -> DenyListFileBuilder {
        DenyListFileBuilder {
            path: path.into(),
            poll_interval: Duration::from_secs(1),
        }
    }

    /// Denies `entry`; returns whether it was new (a new revision is published only then).
    pub fn deny(&self, entry: DenyEntry) -> bool {
        self.change(|set| set.insert(entry))
    }

    /// Denies every certificate carrying exactly `id`; returns whether it was new.
    pub fn deny_id(&self, id: SpiffeId) -> bool {
        self.deny(DenyEntry::SpiffeId(id))
    }

    /// Denies the one leaf certificate whose DER has SHA-256 `digest`; returns whether it was
    /// new.
    pub fn deny_certificate_sha256(&self, digest: [u8; 32]) -> bool {
        self.deny(DenyEntry::CertificateSha256(digest))
    }

    /// Lifts `entry`; returns whether it was there (a new revision is published only then).
    pub fn remove(&self, entry: &DenyEntry) -> bool {
        self.change(|set| set.remove(entry))
    }

    fn change(&self, edit: impl FnOnce(&mut DenySet) -> bool) -> bool {
        let mut changed = false;
        self.writer.update(|current| {
            let mut next = current.clone();
            changed = edit(&mut next);
            changed.then_some(next)
        });
        changed
    }

    /// Whether `entry` is on the list.
    pub fn contains(&self, entry: &DenyEntry) -> bool {
        self.live.load().contains(entry)
    }

    /// The entry that denies `identity`, if any.
    pub fn denying(&self, identity: &PeerIdentity) -> Option<DenyEntry> {
        self.live.load().denying(identity)
    }

    /// The entries, IDs first, each group sorted.
    pub fn entries(&self) -> Vec<DenyEntry> {
        let set = self.live.load();
        let ids = set.ids.iter().cloned().map(DenyEntry::SpiffeId);
        let digests = set
            .digests
            .iter()
            .copied()
            .map(DenyEntry::CertificateSha256);
        ids.chain(digests).collect()
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.live.load().len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    notices_accessors!("entries");
}

impl std::fmt::Debug for DenyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenyList")
            .field("file", &self.file)
            .field("revision", &self.revision())
            .field("entries", &self.len())
            .finish()
    }
}

/// Loads a deny-list file and follows its changes.
///
/// The file is polled (every second by default) and compared by content; content is used only
/// once two reads a short wait apart agree. A change is applied only when every line parses;
/// otherwise the last good list stays in force, a warning says why, and
/// [`DenyList::failed_reloads`] counts it.
#[derive(Debug, Clone)]
#[must_use]
pub struct DenyListFileBuilder {
    path: PathBuf,
    poll_interval: Duration,
}

impl DenyListFileBuilder {
    /// How often the file is checked (default 1 s, at least 10 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Loads the file now (any problem is an error naming the file and line) and starts
    /// following it.
    pub fn start(self) -> Result<DenyList, RevocationError> {
        let path: Arc<Path> = self.path.clone().into();
        let location = Location::File(self.path.clone());
        FileWatch::new(vec![self.path], self.poll_interval).start(
            "secure-channel-deny-list",
            move |contents| parse_deny_list(&contents[0], &location),
            |set| {
                let list = DenyList::with_set(set, Some(path));
                let writer = list.writer.clone();
                (list, writer)
            },
        )
    }
}

/// Parses a deny-list file's content; any bad line refuses the whole.
pub(crate) fn parse_deny_list(
    bytes: &[u8],
    location: &Location,
) -> Result<DenySet, RevocationError> {
    let invalid = |line: usize, problem: String| RevocationError::InvalidDenyEntry {
        location: location.clone(),
        line,
        problem,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        invalid(line, "not UTF-8".into())
    })?;
    let mut set = DenySet::default();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = parse_entry(line).map_err(|problem| invalid(index + 1, problem))?;
        set.insert(entry);
    }
    Ok(set)
}

/// One entry: `sha256:<64 hex digits>` or a SPIFFE ID.
fn parse_entry(line: &str) -> Result<DenyEntry, String> {
    let shown = || {
        let cut: String = line.chars().take(80).collect();
        format!("{cut:?}")
    };
    if let Some((scheme, hex)) = line.split_once(':')
        && scheme.eq_ignore_ascii_case("sha256")
    {
        return parse_digest(hex)
            .map(DenyEntry::CertificateSha256)
            .ok_or_else(|| {
                format!(
                    "{}: a certificate digest is `sha256:` and 64 hex digits",
                    shown()
                )
            });
    }
    let id = SpiffeId::new(line).map_err(|e| {
        format!(
            "{}: neither a SPIFFE ID ({e}) nor `sha256:` and 64 hex digits",
            shown()
        )
    })?;
    // As the allow-list's matchers: only the canonical form, so the file says what is matched.
    if id.to_string() != line {
        return Err(format!(
            "{}: SPIFFE ID is not canonical (canonical form: {id})",
            shown()
        ));
    }
    Ok(DenyEntry::SpiffeId(id))
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    // Digits only: `from_str_radix` would also take a sign.
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}
