#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::file::{Follower, Polled};
use super::*;

/// Bounds every wait on a notification.
async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("timed out")
}

/// Runs `f` with a subscriber that keeps every log line, and returns them.
fn logged(f: impl FnOnce()) -> String {
    let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || Capture(writer.clone()))
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(lines.lock().unwrap().clone()).unwrap()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// --- The live value -------------------------------------------------------------------------

#[test]
fn publishing_bumps_the_revision_and_notifies() {
    let (live, writer) = Live::new("test", "value", 10);
    let mut revisions = live.notices().subscribe();
    assert_eq!(live.notices().revision(), 1);
    assert_eq!(writer.publish(11), Some(2));
    assert!(revisions.has_changed().unwrap());
    assert_eq!(*revisions.borrow_and_update(), 2);
    assert_eq!(*live.current(), 11);
    assert_eq!(**live.load(), 11);
    assert_eq!(live.notices().failed_reloads(), 0);
}

#[test]
fn an_update_that_declines_changes_nothing() {
    let (live, writer) = Live::new("test", "value", 10);
    let revisions = live.notices().subscribe();
    let mut seen = None;
    assert_eq!(
        writer.update(|current, revision| {
            seen = Some((*current, revision));
            None
        }),
        None
    );
    assert_eq!(
        seen,
        Some((10, 2)),
        "the update saw the value and the next revision"
    );
    assert_eq!(live.notices().revision(), 1);
    assert!(!revisions.has_changed().unwrap());
    assert_eq!(writer.update(|current, _| Some(current + 1)), Some(2));
    assert_eq!(*live.current(), 11);
}

#[test]
fn a_refusal_is_counted_and_notified_and_keeps_the_value() {
    let (live, writer) = Live::new("test", "value", 10);
    let failures = live.notices().subscribe_failed_reloads();
    let log = logged(|| writer.refuse(&"broken"));
    assert_eq!(live.notices().failed_reloads(), 1);
    assert!(failures.has_changed().unwrap());
    assert_eq!(live.notices().revision(), 1);
    assert_eq!(*live.current(), 10);
    assert!(log.contains("value reload refused"), "{log}");
    assert!(
        log.contains("source=\"test\"") || log.contains("source=test"),
        "{log}"
    );
    assert!(log.contains("broken"), "{log}");
}

#[test]
fn a_recovery_after_refused_reloads_is_logged_once() {
    let (live, writer) = Live::new("test", "value", 10);
    let log = logged(|| {
        writer.refuse(&"broken");
        writer.refuse(&"broken");
        assert_eq!(writer.publish(11), Some(2));
        assert_eq!(writer.publish(12), Some(3));
    });
    assert_eq!(live.notices().revision(), 3);
    let recoveries: Vec<_> = log.lines().filter(|l| l.contains("recovered")).collect();
    assert_eq!(recoveries.len(), 1, "{log}");
    assert!(recoveries[0].contains("refused_reloads=2"), "{log}");
    assert!(recoveries[0].contains("revision=2"), "{log}");
}

#[test]
fn a_refused_part_is_counted_but_is_nothing_to_recover_from() {
    let (live, writer) = Live::new("test", "value", 10);
    let log = logged(|| {
        writer.refuse_part("federated bundle", &"broken");
        assert_eq!(writer.publish(11), Some(2));
    });
    assert_eq!(live.notices().failed_reloads(), 1);
    assert!(log.contains("part of a value update refused"), "{log}");
    assert!(!log.contains("recovered"), "{log}");
}

#[tokio::test]
async fn a_writer_without_readers_publishes_nothing_and_says_so() {
    let (live, writer) = Live::new("test", "value", 10);
    let other = writer.clone();
    assert!(writer.is_alive());
    assert_eq!(writer.current().as_deref(), Some(&10));
    let closed = tokio::spawn(async move { other.closed().await });
    // `closed` waits through changes, and completes once the readers are gone.
    tokio::task::yield_now().await;
    writer.publish(11);
    tokio::task::yield_now().await;
    assert!(!closed.is_finished());
    drop(live);
    within(closed).await.unwrap();
    assert!(!writer.is_alive());
    assert_eq!(writer.publish(12), None);
    assert_eq!(writer.current(), None);
    writer.refuse(&"nobody listens");
    within(writer.closed()).await;
}

#[test]
fn concurrent_writers_each_publish_their_own_revision() {
    let (live, writer) = Live::new("test", "value", 1_u64);
    const THREADS: u64 = 8;
    const UPDATES: u64 = 200;
    let start = Arc::new(std::sync::Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (writer, start) = (writer.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                (0..UPDATES)
                    .map(|_| {
                        writer
                            .update(|_, revision| {
                                std::thread::yield_now();
                                Some(revision)
                            })
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut revisions: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(
        revisions.len() as u64,
        THREADS * UPDATES,
        "a revision was published twice"
    );
    assert_eq!(live.notices().revision(), 1 + THREADS * UPDATES);
    assert_eq!(*live.current(), 1 + THREADS * UPDATES);
}

#[test]
fn a_reader_never_pairs_a_new_revision_with_an_old_value() {
    // Each value is its own revision; a reader reading the revision, then the value, must
    // never find a value older than the revision (caches keyed by revision rely on it).
    let (live, writer) = Live::new("test", "value", 1_u64);
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (live, done) = (live.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0_u64;
            while !done.load(Ordering::SeqCst) || reads < 1000 {
                let revision = live.notices().revision();
                let value = *live.current();
                assert!(value >= revision, "revision {revision} with value {value}");
                reads += 1;
            }
        })
    };
    for _ in 0..20_000 {
        writer.update(|_, revision| Some(revision));
    }
    done.store(true, Ordering::SeqCst);
    reader.join().unwrap();
}

// --- The file watcher -----------------------------------------------------------------------

/// The watched value: the files' text, one line per file; content holding "bad" does not parse.
type Text = String;

#[derive(Debug, PartialEq)]
enum TestError {
    Unreadable(PathBuf),
    Unstable(PathBuf),
    Invalid,
    NoThread,
}

impl fmt::Display for TestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl From<crate::ReadError> for TestError {
    fn from(error: crate::ReadError) -> Self {
        Self::Unreadable(error.path)
    }
}

impl FileError for TestError {
    fn unstable(path: &Path) -> Self {
        Self::Unstable(path.to_owned())
    }
    fn no_thread(_: io::Error) -> Self {
        Self::NoThread
    }
}

fn parse(contents: &Contents) -> Result<Text, TestError> {
    let text = contents
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    if text.contains("bad") {
        return Err(TestError::Invalid);
    }
    Ok(text)
}

impl<T: Send + Sync + 'static> Publish<T> for Writer<T> {
    fn publish(&self, value: T) -> bool {
        Writer::publish(self, value).is_some()
    }
    fn refuse(&self, error: &dyn fmt::Display) {
        Writer::refuse(self, error);
    }
    fn is_alive(&self) -> bool {
        Writer::is_alive(self)
    }
}

const POLL: Duration = Duration::from_millis(10);

type TestFollower =
    Follower<Text, TestError, fn(&Contents) -> Result<Text, TestError>, Writer<Text>>;

/// One watched file holding `first`, a live value loaded from it, and its follower (polled by
/// hand: no thread, no timing).
struct Fixture {
    dir: tempfile::TempDir,
    path: PathBuf,
    live: Live<Text>,
    follower: TestFollower,
}

impl Fixture {
    fn new(first: &str) -> Self {
        Self::with(first, |watch, _| watch)
    }

    /// `configure` is given the watch and the path of the file.
    fn with(first: &str, configure: impl FnOnce(FileWatch, &Path) -> FileWatch) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watched");
        std::fs::write(&path, first).unwrap();
        let (live, writer) = Live::new("test", "value", first.to_owned());
        let watch = configure(FileWatch::new(vec![path.clone()], POLL), &path);
        let follower = watch.follower(vec![first.as_bytes().to_vec()], parse as _, writer);
        Self {
            dir,
            path,
            live,
            follower,
        }
    }

    fn value(&self) -> String {
        self.live.current().as_ref().clone()
    }

    fn revision(&self) -> u64 {
        self.live.notices().revision()
    }

    fn failures(&self) -> u64 {
        self.live.notices().failed_reloads()
    }

    /// Replaces the file the careful way: a temporary file, renamed over it.
    fn replace(&self, content: &str) {
        let tmp = self.dir.path().join("watched.tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

#[test]
fn unchanged_content_is_not_published_again() {
    let mut f = Fixture::new("one");
    let revisions = f.live.notices().subscribe();
    assert_eq!(f.follower.poll(), Polled::Unchanged);
    // A new file with the same content (a rewrite, a rename over it) is no change either.
    f.replace("one");
    assert_eq!(f.follower.poll(), Polled::Unchanged);
    assert_eq!(f.revision(), 1);
    assert!(!revisions.has_changed().unwrap());
}

#[test]
fn changed_content_is_applied() {
    let mut f = Fixture::new("one");
    f.replace("two");
    assert_eq!(f.follower.poll(), Polled::Applied);
    assert_eq!((f.value().as_str(), f.revision()), ("two", 2));
    assert_eq!(f.follower.poll(), Polled::Unchanged);
    assert_eq!(f.revision(), 2);
}

#[test]
fn a_half_written_file_is_not_applied() {
    // The writer appends its second half once the watcher has read the first half alone (in
    // the watcher, between its two reads, so the order does not depend on timing).
    let appended = Arc::new(AtomicBool::new(false));
    let mut f = Fixture::with("one", |watch, path| {
        let (appended, path) = (appended.clone(), path.to_owned());
        watch.between_reads(move |first| {
            if first[0] == b"two" && !appended.swap(true, Ordering::SeqCst) {
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                io::Write::write_all(&mut file, b" halves").unwrap();
            }
        })
    });
    std::fs::write(&f.path, "two").unwrap();
    assert_eq!(f.follower.poll(), Polled::Unsettled);
    assert!(
        appended.load(Ordering::SeqCst),
        "the watcher read the first half"
    );
    assert_eq!((f.value().as_str(), f.revision()), ("one", 1));
    assert_eq!(f.failures(), 0);
    assert_eq!(f.follower.poll(), Polled::Applied);
    assert_eq!(f.value(), "two halves");
}

#[test]
fn a_file_gone_between_the_two_reads_is_not_applied_and_reported_at_the_next_poll() {
    let remove = Arc::new(AtomicBool::new(false));
    let mut f = Fixture::with("one", |watch, path| {
        let (remove, path) = (remove.clone(), path.to_owned());
        watch.between_reads(move |_| {
            if remove.swap(false, Ordering::SeqCst) {
                std::fs::remove_file(&path).unwrap();
            }
        })
    });
    f.replace("two");
    remove.store(true, Ordering::SeqCst);
    assert_eq!(f.follower.poll(), Polled::Unsettled);
    assert_eq!((f.value().as_str(), f.failures()), ("one", 0));
    assert_eq!(f.follower.poll(), Polled::Refused);
    assert_eq!((f.value().as_str(), f.failures()), ("one", 1));
}

#[test]
fn a_failed_read_keeps_the_last_good_value_and_is_counted_once() {
    let mut f = Fixture::new("one");
    let failures = f.live.notices().subscribe_failed_reloads();
    std::fs::remove_file(&f.path).unwrap();
    assert_eq!(f.follower.poll(), Polled::Refused);
    assert!(failures.has_changed().unwrap());
    assert_eq!(f.follower.poll(), Polled::Repeated);
    assert_eq!(
        (f.value().as_str(), f.revision(), f.failures()),
        ("one", 1, 1)
    );
}

#[test]
fn invalid_content_keeps_the_last_good_value_and_is_counted_once() {
    let mut f = Fixture::new("one");
    f.replace("bad");
    assert_eq!(f.follower.poll(), Polled::Refused);
    assert_eq!(f.follower.poll(), Polled::Repeated);
    assert_eq!(
        (f.value().as_str(), f.revision(), f.failures()),
        ("one", 1, 1)
    );
}

#[test]
fn recovery_applies_good_content_and_a_problem_that_returns_counts_again() {
    let mut f = Fixture::new("one");
    f.replace("bad");
    assert_eq!(f.follower.poll(), Polled::Refused);
    f.replace("two");
    let log = logged(|| assert_eq!(f.follower.poll(), Polled::Applied));
    assert!(log.contains("recovered"), "{log}");
    assert_eq!(
        (f.value().as_str(), f.revision(), f.failures()),
        ("two", 2, 1)
    );
    f.replace("bad");
    assert_eq!(f.follower.poll(), Polled::Refused);
    assert_eq!(f.failures(), 2);
}

#[test]
fn a_problem_that_returns_after_the_files_were_restored_counts_again() {
    let mut f = Fixture::new("one");
    std::fs::remove_file(&f.path).unwrap();
    assert_eq!(f.follower.poll(), Polled::Refused);
    f.replace("one");
    assert_eq!(f.follower.poll(), Polled::Unchanged);
    std::fs::remove_file(&f.path).unwrap();
    assert_eq!(f.follower.poll(), Polled::Refused);
    assert_eq!((f.revision(), f.failures()), (1, 2));
}

#[test]
fn the_follower_stops_when_nobody_reads() {
    let mut f = Fixture::new("one");
    // The only reader goes.
    f.live = Live::new("other", "value", String::new()).0;
    assert_eq!(f.follower.poll(), Polled::Stopped);
}

#[test]
fn the_wait_between_the_two_reads_is_short_whatever_the_poll_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("watched");
    std::fs::write(&path, "two").unwrap();
    let (live, writer) = Live::new("test", "value", "one".to_owned());
    let mut follower = FileWatch::new(vec![path], Duration::from_secs(600)).follower(
        vec![b"one".to_vec()],
        parse,
        writer,
    );
    let started = std::time::Instant::now();
    assert_eq!(follower.poll(), Polled::Applied);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(*live.current(), "two");
}

#[test]
fn poll_intervals_have_a_floor() {
    let watch = FileWatch::new(Vec::new(), Duration::ZERO);
    assert!(
        format!("{watch:?}").contains("poll_interval: 10ms"),
        "{watch:?}"
    );
}

#[test]
fn the_follower_stops_when_a_publish_finds_nobody() {
    /// A publisher whose readers leave while it publishes.
    struct Leaving;
    impl Publish<Text> for Leaving {
        fn publish(&self, _: Text) -> bool {
            false
        }
        fn refuse(&self, _: &dyn fmt::Display) {}
        fn is_alive(&self) -> bool {
            true
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("watched");
    std::fs::write(&path, "two").unwrap();
    let mut follower =
        FileWatch::new(vec![path], POLL).follower(vec![b"one".to_vec()], parse, Leaving);
    assert_eq!(follower.poll(), Polled::Stopped);
}

#[test]
fn start_refuses_files_that_keep_changing_and_names_the_one_that_does() {
    let dir = tempfile::tempdir().unwrap();
    let (steady, busy) = (dir.path().join("steady"), dir.path().join("busy"));
    std::fs::write(&steady, "steady").unwrap();
    std::fs::write(&busy, "0").unwrap();
    let writes = Arc::new(AtomicUsize::new(0));
    let result = FileWatch::new(vec![steady.clone(), busy.clone()], POLL)
        .between_reads({
            let (busy, writes) = (busy.clone(), writes.clone());
            move |_| {
                let n = writes.fetch_add(1, Ordering::SeqCst) + 1;
                std::fs::write(&busy, n.to_string()).unwrap();
            }
        })
        .start("test-watcher", parse, |text| {
            Live::new("test", "value", text)
        });
    assert_eq!(result.err(), Some(TestError::Unstable(busy.clone())));
    assert_eq!(writes.load(Ordering::SeqCst), 10, "ten attempts");

    // Once they settle, they load.
    let live = FileWatch::new(vec![steady, busy], POLL)
        .start("test-watcher", parse, |text| {
            Live::new("test", "value", text)
        })
        .unwrap();
    assert_eq!(*live.current(), "steady\n10");
}

#[test]
fn start_refuses_unreadable_and_invalid_files() {
    let dir = tempfile::tempdir().unwrap();
    let (good, missing, bad) = (
        dir.path().join("good"),
        dir.path().join("missing"),
        dir.path().join("bad"),
    );
    std::fs::write(&good, "good").unwrap();
    std::fs::write(&bad, "bad").unwrap();
    let start = |paths: Vec<PathBuf>| {
        FileWatch::new(paths, POLL)
            .start("test-watcher", parse, |text| {
                Live::new("test", "value", text)
            })
            .err()
    };
    assert_eq!(
        start(vec![good.clone(), missing.clone()]),
        Some(TestError::Unreadable(missing))
    );
    assert_eq!(start(vec![good, bad]), Some(TestError::Invalid));
}

#[tokio::test]
async fn a_started_watcher_follows_symlink_swaps_and_write_then_rename() {
    // The layout kubelet writes: ..<version>/ with the file, ..data -> ..<version>, and the
    // watched path a link through ..data.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let publish = |version: &str, content: &str| {
        let versioned = root.join(format!("..{version}"));
        std::fs::create_dir(&versioned).unwrap();
        std::fs::write(versioned.join("value"), content).unwrap();
        let tmp_link = root.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &tmp_link).unwrap();
        std::fs::rename(&tmp_link, root.join("..data")).unwrap();
    };
    publish("v1", "one");
    let path = root.join("value");
    std::os::unix::fs::symlink("..data/value", &path).unwrap();
    let live = FileWatch::new(vec![path.clone()], POLL)
        .start("test-watcher", parse, |text| {
            Live::new("test", "value", text)
        })
        .unwrap();
    let mut revisions = live.notices().subscribe();

    publish("v2", "two");
    within(revisions.changed()).await.unwrap();
    assert_eq!(
        (live.current().as_str(), live.notices().revision()),
        ("two", 2)
    );

    // The link replaced by a file, renamed over it.
    let tmp = root.join("value.tmp");
    std::fs::write(&tmp, "three").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    within(revisions.changed()).await.unwrap();
    assert_eq!(
        (live.current().as_str(), live.notices().revision()),
        ("three", 3)
    );

    // Refused content is counted, and the thread goes on to the next good one.
    let mut failures = live.notices().subscribe_failed_reloads();
    std::fs::write(&tmp, "bad").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    within(failures.changed()).await.unwrap();
    std::fs::write(&tmp, "four").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    within(revisions.changed()).await.unwrap();
    assert_eq!(
        (live.current().as_str(), live.notices().failed_reloads()),
        ("four", 1)
    );
}
