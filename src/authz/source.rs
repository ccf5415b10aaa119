//! A live policy: swapped atomically, optionally reloaded from a file.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use spiffe::SpiffeId;
use tokio::sync::watch;

use crate::authz::{Policy, PolicyError, PolicyStats};
use crate::reload::{FileError, FileWatch, Live, Publish, Writer};

/// A live, watchable handle on the current [`Policy`]; what [`AuthorizeLayer`] reads per
/// request (one atomic load, no lock).
///
/// Cheap to clone. A policy file is followed by a background thread that stops when the last
/// handle (and every layer built from it) is dropped.
///
/// [`AuthorizeLayer`]: crate::layer::authorize::AuthorizeLayer
#[derive(Clone)]
pub struct PolicySource {
    live: Live<Policy>,
    writer: PolicyWriter,
    file: Option<PathBuf>,
}

/// The writing side of a [`PolicySource`]: carries rule counters over and logs each policy.
#[derive(Clone)]
struct PolicyWriter(Writer<Policy>);

impl PolicySource {
    /// A source holding `policy` until [`replace`](Self::replace)d.
    pub fn new(policy: Policy) -> Self {
        Self::with_file(policy, None)
    }

    fn with_file(policy: Policy, file: Option<PathBuf>) -> Self {
        let (live, writer) = Live::new("policy", "policy", policy);
        Self {
            live,
            writer: PolicyWriter(writer),
            file,
        }
    }

    /// Builds a source that loads a TOML policy file and follows its changes.
    pub fn from_file(path: impl Into<PathBuf>) -> PolicyFileBuilder {
        PolicyFileBuilder {
            path: path.into(),
            poll_interval: Duration::from_secs(1),
            #[cfg(test)]
            between_reads: None,
        }
    }

    /// The current policy.
    pub fn current(&self) -> Arc<Policy> {
        self.live.current()
    }

    /// The current policy without touching its reference count (for the request path).
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Policy>> {
        self.live.load()
    }

    /// Replaces the policy; rules keeping their names keep their counters, and rules keeping
    /// their names and limits keep their callers' limit state.
    pub fn replace(&self, policy: Policy) {
        self.writer.publish(policy);
    }

    /// The revision of the current policy: 1 for the first, one more per change.
    pub fn revision(&self) -> u64 {
        self.live.notices().revision()
    }

    /// A receiver that sees each new revision; `changed().await` waits for a reload.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.live.notices().subscribe()
    }

    /// How many reloads of the policy file were refused (unreadable or invalid), keeping the
    /// last good policy.
    pub fn failed_reloads(&self) -> u64 {
        self.live.notices().failed_reloads()
    }

    /// A receiver that sees the count of refused reloads change.
    pub fn subscribe_failed_reloads(&self) -> watch::Receiver<u64> {
        self.live.notices().subscribe_failed_reloads()
    }

    /// Whether the current policy could ever allow `caller` (see
    /// [`Policy::could_ever_allow`]).
    pub fn could_ever_allow(&self, caller: &SpiffeId) -> bool {
        self.live.load().could_ever_allow(caller)
    }

    /// The decision counts of the current policy.
    pub fn stats(&self) -> PolicyStats {
        self.live.load().stats()
    }
}

/// The handshake admits the principals some enforced allow rule names (dry-run: everyone).
impl crate::identity::PeerAdmission for PolicySource {
    fn admits(&self, id: &SpiffeId) -> bool {
        self.could_ever_allow(id)
    }

    fn admitted(&self) -> Option<crate::identity::AllowList> {
        self.current().principals()
    }
}

impl Publish<Policy> for PolicyWriter {
    /// Replaces the policy; rules keeping their names keep their counters, and rules keeping
    /// their names and limits keep their callers' limit state.
    fn publish(&self, mut policy: Policy) -> bool {
        let rules = policy.len();
        let mode = policy.mode();
        let Some(revision) = self.0.update(|current, _| {
            policy.carry_counters_from(current);
            policy.carry_limits_from(current);
            Some(policy)
        }) else {
            return false;
        };
        tracing::info!(
            target: crate::authz::AUDIT_TARGET,
            revision,
            rules,
            mode = mode.as_str(),
            "authorization policy loaded"
        );
        true
    }

    fn refuse(&self, error: &dyn Display) {
        self.0.refuse(error);
    }

    fn is_alive(&self) -> bool {
        self.0.is_alive()
    }
}

impl From<Policy> for PolicySource {
    fn from(policy: Policy) -> Self {
        Self::new(policy)
    }
}

impl std::fmt::Debug for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySource")
            .field("file", &self.file)
            .field("revision", &self.revision())
            .field("policy", &*self.live.load())
            .finish()
    }
}

/// Loads a policy file and follows its changes.
///
/// The file is polled (every second by default) and compared by content, which catches every
/// way of replacing it (write-then-rename, Kubernetes ConfigMap symlink swaps). A changed file
/// is applied only if it loads and validates completely; otherwise the last good policy stays
/// in force, a warning says why, and [`PolicySource::failed_reloads`] counts it.
///
/// # Security
///
/// A file being written in place can be read half written, and half a policy file can be a
/// valid policy that lacks its trailing deny rules. So content is applied only when it is
/// stable: read, read again after a short interval (the poll interval, at most 100 ms), and
/// applied only when both reads are equal; content still changing is looked at again at the
/// next poll, and the last good policy stays in force meanwhile (at start, a file that keeps
/// changing is refused with [`PolicyError::Unstable`]). Every rule must also say its `effect`,
/// so a file cut before a deny rule's `effect` line does not load. Writing the new file beside
/// the old one and renaming it over it remains the way to replace a policy atomically.
#[derive(Clone)]
#[must_use]
pub struct PolicyFileBuilder {
    path: PathBuf,
    poll_interval: Duration,
    /// Called between the two reads of a stability check (tests write the second half there).
    #[cfg(test)]
    between_reads: Option<BetweenReads>,
}

impl std::fmt::Debug for PolicyFileBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyFileBuilder")
            .field("path", &self.path)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl PolicyFileBuilder {
    /// How often the file is checked (default 1 s, at least 10 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Calls `hook` with the first read between the two reads of every stability check.
    #[cfg(test)]
    pub(crate) fn between_reads(mut self, hook: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        self.between_reads = Some(Arc::new(hook));
        self
    }

    /// Loads the file now (any problem is an error naming the file, line and field) and starts
    /// following it.
    pub fn start(self) -> Result<PolicySource, PolicyError> {
        let watch = FileWatch::new(vec![self.path.clone()], self.poll_interval);
        #[cfg(test)]
        let watch = match self.between_reads {
            Some(hook) => watch.between_reads(move |contents| hook(&contents[0])),
            None => watch,
        };
        let path = self.path;
        watch.start(
            "secure-channel-policy",
            {
                let path = path.clone();
                move |contents| parse(&path, &contents[0])
            },
            |policy| {
                let source = PolicySource::with_file(policy, Some(path));
                let writer = source.writer.clone();
                (source, writer)
            },
        )
    }
}

/// A test hook called with the first read, between the two reads of a stability check.
#[cfg(test)]
type BetweenReads = Arc<dyn Fn(&[u8]) + Send + Sync>;

impl FileError for PolicyError {
    fn unstable(path: &Path) -> Self {
        PolicyError::Unstable {
            path: path.to_owned(),
        }
    }

    fn no_thread(source: std::io::Error) -> Self {
        PolicyError::Watcher { source }
    }
}

fn parse(path: &Path, contents: &[u8]) -> Result<Policy, PolicyError> {
    let text = std::str::from_utf8(contents).map_err(|e| PolicyError::Parse {
        file: Some(path.to_owned()),
        line: None,
        message: format!("not UTF-8: {e}"),
    })?;
    Policy::from_toml(text).map_err(|mut e| {
        e.set_file(path);
        e
    })
}
