//! The file watcher: reads a set of files, parses them into a value, and follows their changes.

use std::fmt::Display;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{ReadError, read_file};

/// The content of a watcher's files: one entry per path, in the order of the paths.
pub(crate) type Contents = Vec<Vec<u8>>;

/// The shortest poll interval; shorter ones are raised to it.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The longest wait between the two reads of a stability check.
const MAX_SETTLE: Duration = Duration::from_millis(100);
/// How many stability checks a start makes before refusing files that keep changing.
const START_ATTEMPTS: usize = 10;

/// The error type of a watched source: a file that cannot be read is the crate's one
/// [`ReadError`]; the rest it names in its own terms.
pub(crate) trait FileError: Display + Sized + From<ReadError> {
    /// `path` kept changing while being read at start: it is being written.
    fn unstable(path: &Path) -> Self;
    /// The thread that follows the files could not be started.
    fn no_thread(error: io::Error) -> Self;
}

/// Where a watcher's values go: a [`Writer`](super::Writer), or a source's own wrapper around
/// one that adds its log lines and metrics.
pub(crate) trait Publish<T>: Send + 'static {
    /// Applies a new value; `false` when nobody reads it any more (the watcher then stops).
    fn publish(&self, value: T) -> bool;
    /// Records a refused reload; the last good value stays.
    fn refuse(&self, error: &dyn Display);
    /// Whether anybody still reads the value.
    fn is_alive(&self) -> bool;
}

/// Files to read, parse into one value, and follow.
///
/// The files are polled and compared by content, which catches every way of replacing them:
/// in place, write-then-rename, and the Kubernetes `..data` symlink swap that file-watch
/// events often miss (each read follows the path anew).
///
/// # Security
///
/// A file being written in place can be read half written, and half a file can parse (half a
/// policy is a valid policy that lacks its trailing deny rules). So content is used only once
/// it is stable: read, read again after a short wait (the poll interval, at most 100 ms), and
/// used only when both reads agree. Changed content that is still changing is looked at again
/// at the next poll, the last good value staying meanwhile; at start, files that keep changing
/// are refused ([`FileError::unstable`]). Content that does not parse is refused once (and
/// again only after the files held something else), keeping the last good value.
#[derive(Clone)]
pub(crate) struct FileWatch {
    paths: Vec<PathBuf>,
    poll_interval: Duration,
    /// Called between the two reads of every stability check (tests write there).
    #[cfg(test)]
    between_reads: Option<BetweenReads>,
}

/// A test hook called with the first read, between the two reads of a stability check.
#[cfg(test)]
type BetweenReads = std::sync::Arc<dyn Fn(&Contents) + Send + Sync>;

impl FileWatch {
    /// Watches `paths`, polled every `poll_interval` (at least 10 ms).
    pub(crate) fn new(paths: Vec<PathBuf>, poll_interval: Duration) -> Self {
        Self {
            paths,
            poll_interval: poll_interval.max(MIN_POLL_INTERVAL),
            #[cfg(test)]
            between_reads: None,
        }
    }

    /// Calls `hook` with the first read between the two reads of every stability check.
    #[cfg(test)]
    pub(crate) fn between_reads(
        mut self,
        hook: impl Fn(&Contents) + Send + Sync + 'static,
    ) -> Self {
        self.between_reads = Some(std::sync::Arc::new(hook));
        self
    }

    /// Loads the files now (stable content, parsed), hands the value to `live` to make the
    /// reading handle and the publisher, and follows the files on a thread named `thread`
    /// that stops once the publisher has nobody left to publish to.
    pub(crate) fn start<T, E, F, R, P>(
        self,
        thread: &str,
        parse: F,
        live: impl FnOnce(T) -> (R, P),
    ) -> Result<R, E>
    where
        T: 'static,
        E: FileError + 'static,
        F: Fn(&Contents) -> Result<T, E> + Send + 'static,
        P: Publish<T>,
    {
        let contents = self.read_stable::<E>()?;
        let value = parse(&contents)?;
        let (reader, publisher) = live(value);
        let follower = self.follower(contents, parse, publisher);
        std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || follower.run())
            .map_err(E::no_thread)?;
        Ok(reader)
    }

    /// What follows the files from `loaded`, the content of the value published now.
    pub(crate) fn follower<T, E, F, P>(
        self,
        loaded: Contents,
        parse: F,
        publisher: P,
    ) -> Follower<T, E, F, P> {
        Follower {
            watch: self,
            loaded,
            last_refused: None,
            parse,
            publisher,
            _value: PhantomData,
        }
    }

    fn read<E: FileError>(&self) -> Result<Contents, E> {
        self.paths
            .iter()
            .map(|path| read_file(path).map_err(E::from))
            .collect()
    }

    /// Reads until two reads in a row agree, at most [`START_ATTEMPTS`] times.
    fn read_stable<E: FileError>(&self) -> Result<Contents, E> {
        let mut attempts = 0;
        loop {
            let contents = self.read::<E>()?;
            let Some(changing) = self.changing::<E>(&contents)? else {
                return Ok(contents);
            };
            attempts += 1;
            if attempts == START_ATTEMPTS {
                return Err(E::unstable(changing));
            }
        }
    }

    /// Reads again after a short wait: the first file that no longer holds what `first` read
    /// from it (it is being written), `None` when they all still do.
    fn changing<E: FileError>(&self, first: &Contents) -> Result<Option<&Path>, E> {
        std::thread::sleep(self.poll_interval.min(MAX_SETTLE));
        #[cfg(test)]
        if let Some(hook) = &self.between_reads {
            hook(first);
        }
        let second = self.read::<E>()?;
        Ok(self
            .paths
            .iter()
            .zip(first.iter().zip(&second))
            .find(|(_, (first, second))| first != second)
            .map(|(path, _)| path.as_path()))
    }
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("paths", &self.paths)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// What one look at the files found (tests read it; the thread only stops on `Stopped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Polled {
    /// Nobody reads the value any more.
    Stopped,
    /// The files hold the content of the value in force.
    Unchanged,
    /// The files hold what was refused last (or fail to read the same way): not reported again.
    Repeated,
    /// The files changed while being read; looked at again at the next poll.
    Unsettled,
    /// A new value was published.
    Applied,
    /// The files could not be read or parsed; the last good value stays.
    Refused,
}

/// Follows a [`FileWatch`]'s files: each [`poll`](Self::poll) reads them and publishes or
/// refuses what changed.
pub(crate) struct Follower<T, E, F, P> {
    watch: FileWatch,
    /// The content of the value in force.
    loaded: Contents,
    /// The content (or read error) refused last, so that each distinct problem is reported
    /// once.
    last_refused: Option<Result<Contents, String>>,
    parse: F,
    publisher: P,
    _value: PhantomData<fn() -> (T, E)>,
}

impl<T, E, F, P> Follower<T, E, F, P>
where
    E: FileError,
    F: Fn(&Contents) -> Result<T, E>,
    P: Publish<T>,
{
    /// Polls until nobody reads the value any more.
    fn run(mut self) {
        loop {
            std::thread::sleep(self.watch.poll_interval);
            if self.poll() == Polled::Stopped {
                return;
            }
        }
    }

    /// Looks at the files once.
    pub(crate) fn poll(&mut self) -> Polled {
        if !self.publisher.is_alive() {
            return Polled::Stopped;
        }
        let contents = match self.watch.read::<E>() {
            Ok(contents) => contents,
            // Mid-swap a file can be briefly missing: each distinct problem is reported once.
            Err(error) => {
                let seen = Err(error.to_string());
                if self.last_refused.as_ref() == Some(&seen) {
                    return Polled::Repeated;
                }
                return self.refuse(&error, seen);
            }
        };
        if contents == self.loaded {
            // Back to the value in force: a problem seen before counts again when it recurs.
            self.last_refused = None;
            return Polled::Unchanged;
        }
        if matches!(&self.last_refused, Some(Ok(refused)) if *refused == contents) {
            return Polled::Repeated;
        }
        match self.watch.changing::<E>(&contents) {
            Ok(None) => {}
            Ok(Some(path)) => {
                tracing::debug!(
                    target: "secure_channel::reload",
                    path = %path.display(),
                    "file changed while being read; waiting for it to settle"
                );
                return Polled::Unsettled;
            }
            // Gone or unreadable between the two reads: the next poll reports it.
            Err(_) => return Polled::Unsettled,
        }
        match (self.parse)(&contents) {
            Ok(value) => {
                if !self.publisher.publish(value) {
                    return Polled::Stopped;
                }
                self.loaded = contents;
                self.last_refused = None;
                Polled::Applied
            }
            Err(error) => self.refuse(&error, Ok(contents)),
        }
    }

    fn refuse(&mut self, error: &E, seen: Result<Contents, String>) -> Polled {
        self.publisher.refuse(error);
        self.last_refused = Some(seen);
        Polled::Refused
    }
}
