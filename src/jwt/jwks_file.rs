//! A JWKS file on disk, polled and hot reloaded; the last good key set is kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::Location;
use crate::jwt::JwtConfigError;
use crate::jwt::keys::KeySet;
use crate::jwt::source::{KeySource, SwappedKeys};
use crate::reload::{FileError, FileWatch};

/// Builds a [`KeySource`] that reads a JWKS file and follows its changes.
///
/// The file is polled (every second by default) and compared by content, which catches
/// write-then-rename and the Kubernetes `..data` symlink swap alike. A changed file is used only
/// when it parses and holds at least one usable key; otherwise the last good keys stay, a
/// warning says why, and [`KeySource::failed_reloads`] counts it. A file being written in place
/// is not read half written: changed content is used only once two reads a short wait apart
/// (the poll interval, at most 100 ms) agree; at start, a file that keeps changing is refused
/// with [`JwtConfigError::Unstable`].
#[derive(Debug, Clone)]
#[must_use]
pub struct JwksFileBuilder {
    path: PathBuf,
    poll_interval: Duration,
}

impl JwksFileBuilder {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            poll_interval: Duration::from_secs(1),
        }
    }

    /// How often the file is checked for changes (default 1 s, at least 10 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Loads the file now (any problem is an error naming the file) and starts following it.
    pub fn start(self) -> Result<KeySource, JwtConfigError> {
        let location = Location::File(self.path.clone());
        FileWatch::new(vec![self.path], self.poll_interval).start(
            "secure-channel-jwks-file",
            move |contents| KeySet::from_jwks_json(&contents[0], &location),
            |set| {
                let (keys, writer) = SwappedKeys::new("jwks-file", set);
                (KeySource::from_keys(Arc::new(keys)), writer)
            },
        )
    }
}

impl FileError for JwtConfigError {
    fn unstable(path: &Path) -> Self {
        JwtConfigError::Unstable {
            path: path.to_owned(),
        }
    }

    fn no_thread(error: std::io::Error) -> Self {
        JwtConfigError::Background {
            what: "JWKS file watcher thread",
            reason: error.to_string(),
        }
    }
}
