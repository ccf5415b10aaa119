//! A JWKS file on disk, polled and hot reloaded; the last good key set is kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::Location;
use crate::jwt::JwtConfigError;
use crate::jwt::keys::{KeySet, VerifyingKey};
use crate::jwt::source::{BoxFuture, KeyLookup, KeySource, Keys, Published, SwappedKeys};

/// Builds a [`KeySource`] that reads a JWKS file and follows its changes.
///
/// The file is polled (every second by default) and compared by content, which catches
/// write-then-rename and the Kubernetes `..data` symlink swap alike. A changed file is used only
/// when it parses and holds at least one usable key; otherwise the last good keys stay, a
/// warning says why, and [`KeySource::failed_reloads`] counts it.
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
        let contents = read(&self.path)?;
        let set = KeySet::from_jwks_json(&contents, &Location::File(self.path.clone()))?;
        let keys = Arc::new(FileKeys {
            keys: SwappedKeys::new("jwks-file", set),
        });
        let weak = Arc::downgrade(&keys);
        std::thread::Builder::new()
            .name("secure-channel-jwks-file".into())
            .spawn(move || poll(self, weak, contents))
            .map_err(|e| JwtConfigError::Background {
                what: "JWKS file watcher thread",
                reason: e.to_string(),
            })?;
        Ok(KeySource::from_keys(keys))
    }
}

struct FileKeys {
    keys: SwappedKeys,
}

impl Keys for FileKeys {
    fn find(&self, lookup: &KeyLookup<'_>) -> Option<Arc<VerifyingKey>> {
        self.keys.find(lookup.kid)
    }

    fn revision(&self) -> u64 {
        self.keys.published.revision()
    }

    fn refresh_for_unknown_kid(self: Arc<Self>) -> Option<BoxFuture<'static, ()>> {
        // The poller picks changes up within one interval; reading the file per unknown kid
        // would let a flood of tokens turn into a flood of reads.
        None
    }

    fn published(&self) -> &Published {
        &self.keys.published
    }
}

fn read(path: &Path) -> Result<Vec<u8>, JwtConfigError> {
    Ok(crate::error::read_file(path)?)
}

fn poll(config: JwksFileBuilder, keys: Weak<FileKeys>, mut loaded: Vec<u8>) {
    let location = Location::File(config.path.clone());
    // The last content (or read error) refused, so each distinct problem is reported once.
    let mut last_refused: Option<Result<Vec<u8>, String>> = None;
    loop {
        std::thread::sleep(config.poll_interval);
        let Some(keys) = keys.upgrade() else {
            return;
        };
        let contents = match read(&config.path) {
            Ok(contents) => contents,
            Err(error) => {
                let seen = Err(error.to_string());
                if last_refused.as_ref() != Some(&seen) {
                    keys.keys.published.reject(&error);
                    last_refused = Some(seen);
                }
                continue;
            }
        };
        if contents == loaded || last_refused.as_ref() == Some(&Ok(contents.clone())) {
            continue;
        }
        match KeySet::from_jwks_json(&contents, &location) {
            Ok(set) => {
                keys.keys.store(set);
                loaded = contents;
                last_refused = None;
            }
            Err(error) => {
                keys.keys.published.reject(&error);
                last_refused = Some(Ok(contents));
            }
        }
    }
}
