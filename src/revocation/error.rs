//! The configuration errors of revocation lists and deny-lists.

use std::io;
use std::path::Path;

use crate::error::{Location, ReadError};
use crate::reload::FileError;

/// Revocation lists or a deny-list that cannot be loaded.
///
/// Each names the file or field it comes from ([`Location`]), and for a deny-list the line.
/// At start this is the error of `start()`/`new()`; on a reload the last good lists stay in
/// force, a warning logs this error, and `failed_reloads()` counts it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// A file could not be read (missing, unreadable).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A file kept changing while being read at start: it is being written. Write the new
    /// file beside the old one and rename it over it.
    #[error("{location}: kept changing while being read (is it being written?)")]
    Unstable {
        /// The file.
        location: Location,
    },
    /// The thread that follows the files could not be started.
    #[error("{what}: cannot be started: {error}")]
    Background {
        /// What was to be started.
        what: &'static str,
        /// Why not.
        error: io::Error,
    },
    /// The input looks like PEM (it holds `-----BEGIN X509 CRL-----`) but a block is
    /// malformed.
    #[error("{location}: not PEM: {problem}")]
    NotPem {
        /// Where the input came from.
        location: Location,
        /// What is wrong.
        problem: String,
    },
    /// A revocation list file or value holds no CRL at all. An empty file is refused rather
    /// than read as "nothing is revoked": a truncated file must not lift revocations.
    #[error(
        "{location}: holds no revocation list (to revoke nothing, publish a CRL without entries)"
    )]
    NoCrl {
        /// Where the input came from.
        location: Location,
    },
    /// A CRL cannot be parsed, or uses a feature rustls-webpki does not support (CRL versions
    /// other than 2, no nextUpdate, delta or indirect CRLs).
    #[error("{location}: revocation list #{index} cannot be used: {reason}")]
    InvalidCrl {
        /// Where the list came from.
        location: Location,
        /// The list's position in the input, from 0.
        index: usize,
        /// Why it was refused.
        reason: String,
    },
    /// A line of a deny-list is neither a SPIFFE ID nor `sha256:` with 64 hex digits.
    #[error("{location}, line {line}: {problem}")]
    InvalidDenyEntry {
        /// Where the deny-list came from.
        location: Location,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
}

impl FileError for RevocationError {
    fn unstable(path: &Path) -> Self {
        Self::Unstable {
            location: Location::File(path.to_owned()),
        }
    }

    fn no_thread(error: io::Error) -> Self {
        Self::Background {
            what: "revocation file watcher thread",
            error,
        }
    }
}
