//! A live policy: swapped atomically, optionally reloaded from a file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use spiffe::SpiffeId;
use tokio::sync::watch;

use crate::authz::{Policy, PolicyError, PolicyStats};

/// A live, watchable handle on the current [`Policy`]; what [`AuthorizeLayer`] reads per
/// request (one atomic load, no lock).
///
/// Cheap to clone. A policy file is followed by a background thread that stops when the last
/// handle (and every layer built from it) is dropped.
///
/// [`AuthorizeLayer`]: crate::layer::authorize::AuthorizeLayer
#[derive(Clone)]
pub struct PolicySource {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<Policy>,
    revisions: watch::Sender<u64>,
    failed_reloads: watch::Sender<u64>,
    file: Option<PathBuf>,
}

impl PolicySource {
    /// A source holding `policy` until [`replace`](Self::replace)d.
    pub fn new(policy: Policy) -> Self {
        Self::with_file(policy, None)
    }

    fn with_file(policy: Policy, file: Option<PathBuf>) -> Self {
        let (revisions, _) = watch::channel(1);
        let (failed_reloads, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(policy),
                revisions,
                failed_reloads,
                file,
            }),
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
        self.shared.current.load_full()
    }

    /// The current policy without touching its reference count (for the request path).
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Policy>> {
        self.shared.current.load()
    }

    /// Replaces the policy; rules keeping their names keep their counters.
    pub fn replace(&self, policy: Policy) {
        replace(&self.shared, policy);
    }

    /// The revision of the current policy: 1 for the first, one more per change.
    pub fn revision(&self) -> u64 {
        *self.shared.revisions.borrow()
    }

    /// A receiver that sees each new revision; `changed().await` waits for a reload.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.revisions.subscribe()
    }

    /// How many reloads of the policy file were refused (unreadable or invalid), keeping the
    /// last good policy.
    pub fn failed_reloads(&self) -> u64 {
        *self.shared.failed_reloads.borrow()
    }

    /// A receiver that sees the count of refused reloads change.
    pub fn subscribe_failed_reloads(&self) -> watch::Receiver<u64> {
        self.shared.failed_reloads.subscribe()
    }

    /// Whether the current policy could ever allow `caller` (see
    /// [`Policy::could_ever_allow`]).
    pub fn could_ever_allow(&self, caller: &SpiffeId) -> bool {
        self.shared.current.load().could_ever_allow(caller)
    }

    /// The decision counts of the current policy.
    pub fn stats(&self) -> PolicyStats {
        self.shared.current.load().stats()
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

fn replace(shared: &Shared, mut policy: Policy) {
    policy.carry_counters_from(&shared.current.load());
    let rules = policy.len();
    let mode = policy.mode();
    shared.current.store(Arc::new(policy));
    shared.revisions.send_modify(|r| *r += 1);
    tracing::info!(
        target: crate::authz::AUDIT_TARGET,
        revision = *shared.revisions.borrow(),
        rules,
        mode = mode.as_str(),
        "authorization policy loaded"
    );
}

impl From<Policy> for PolicySource {
    fn from(policy: Policy) -> Self {
        Self::new(policy)
    }
}

impl std::fmt::Debug for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySource")
            .field("file", &self.shared.file)
            .field("revision", &self.revision())
            .field("policy", &*self.shared.current.load())
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

    /// The wait between the two reads of a stability check.
    fn settle(&self) -> Duration {
        self.poll_interval.min(MAX_SETTLE)
    }

    /// Whether the file still holds `first` (what was just read from it) after
    /// [`settle`](Self::settle): `false` while it is being written.
    fn is_stable(&self, first: &[u8]) -> Result<bool, PolicyError> {
        std::thread::sleep(self.settle());
        #[cfg(test)]
        if let Some(hook) = &self.between_reads {
            hook(first);
        }
        Ok(read(&self.path)? == first)
    }

    /// Loads the file now (any problem is an error naming the file, line and field) and starts
    /// following it.
    pub fn start(self) -> Result<PolicySource, PolicyError> {
        let mut stable = None;
        for _ in 0..START_ATTEMPTS {
            let contents = read(&self.path)?;
            if self.is_stable(&contents)? {
                stable = Some(contents);
                break;
            }
        }
        let Some(contents) = stable else {
            return Err(PolicyError::Unstable {
                path: self.path.clone(),
            });
        };
        let policy = parse(&self.path, &contents)?;
        let source = PolicySource::with_file(policy, Some(self.path.clone()));
        let weak = Arc::downgrade(&source.shared);
        std::thread::Builder::new()
            .name("secure-channel-policy".into())
            .spawn(move || poll(self, weak, contents))
            .map_err(|source| PolicyError::Watcher { source })?;
        Ok(source)
    }
}

/// A test hook called with the first read, between the two reads of a stability check.
#[cfg(test)]
type BetweenReads = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The longest wait between the two reads of a stability check.
const MAX_SETTLE: Duration = Duration::from_millis(100);
/// How many stability checks `start` makes before refusing a file that keeps changing.
const START_ATTEMPTS: usize = 10;

fn read(path: &Path) -> Result<Vec<u8>, PolicyError> {
    Ok(crate::error::read_file(path)?)
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

fn reject(shared: &Shared, error: &PolicyError) {
    tracing::warn!(
        target: crate::authz::AUDIT_TARGET,
        error = %error,
        "policy reload refused; keeping the last good policy"
    );
    shared.failed_reloads.send_modify(|n| *n += 1);
}

fn poll(config: PolicyFileBuilder, shared: Weak<Shared>, mut loaded: Vec<u8>) {
    // The last refused content (or read error), so that each distinct problem is reported once.
    let mut last_refused: Option<Result<Vec<u8>, String>> = None;
    loop {
        std::thread::sleep(config.poll_interval);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let contents = match read(&config.path) {
            Ok(contents) => contents,
            Err(error) => {
                let seen = Err(error.to_string());
                if last_refused.as_ref() != Some(&seen) {
                    reject(&shared, &error);
                    last_refused = Some(seen);
                }
                continue;
            }
        };
        if contents == loaded
            || last_refused
                .as_ref()
                .is_some_and(|r| r.as_ref() == Ok(&contents))
        {
            continue;
        }
        // Changed: applied only once it reads the same twice. Still being written, it is
        // looked at again at the next poll; the last good policy stays in force meanwhile.
        match config.is_stable(&contents) {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(
                    target: crate::authz::AUDIT_TARGET,
                    path = %config.path.display(),
                    "policy file changed while being read; waiting for it to settle"
                );
                continue;
            }
            // Gone or unreadable between the two reads: the next poll reports it.
            Err(_) => continue,
        }
        match parse(&config.path, &contents) {
            Ok(policy) => {
                replace(&shared, policy);
                loaded = contents;
                last_refused = None;
            }
            Err(error) => {
                reject(&shared, &error);
                last_refused = Some(Ok(contents));
            }
        }
    }
}
