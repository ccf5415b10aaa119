//! Errors of policy loading and validation.

use std::io;
use std::path::{Path, PathBuf};

/// Why a policy could not be built or loaded.
///
/// Every variant says where the problem is: the file (when loaded from one), the line (when
/// known) and, for rule problems, the rule and the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy file could not be read.
    #[error(transparent)]
    Read(#[from] crate::ReadError),
    /// The file is not valid TOML, or does not fit the schema: unknown field, missing field,
    /// wrong type, unknown `mode` or `effect` value.
    #[error("{}{message}", at(.file.as_deref(), *.line))]
    Parse {
        /// The file, when loaded from one.
        file: Option<PathBuf>,
        /// The line (from 1) where the problem is, when known.
        line: Option<u32>,
        /// The parser's description, naming the field.
        message: String,
    },
    /// A rule field holds a value that is invalid or unsafe (a partial-segment principal
    /// wildcard, a non-canonical route path, an unknown method, an empty list, ...).
    #[error("{}rule {rule:?}, field `{field}`: {problem} (got {value:?})", at(.file.as_deref(), *.line))]
    InvalidRule {
        /// The file, when loaded from one.
        file: Option<PathBuf>,
        /// The line (from 1) of the offending value, when loaded from a file.
        line: Option<u32>,
        /// The name of the rule.
        rule: String,
        /// The field: `name`, `principals`, `routes`, `methods`, `path`, `scopes`, `claims`,
        /// `rate`, `burst` or `concurrency`.
        field: &'static str,
        /// The value presented.
        value: String,
        /// What is wrong with it and what is expected.
        problem: String,
    },
    /// Two rules have the same name (names label audit events and counters).
    #[error("{}rule name {name:?} is used more than once", at(.file.as_deref(), *.line))]
    DuplicateRuleName {
        /// The file, when loaded from one.
        file: Option<PathBuf>,
        /// The line of the second use, when loaded from a file.
        line: Option<u32>,
        /// The name.
        name: String,
    },
    /// The policy file kept changing between reads at start: it is being written. Write the
    /// new file beside the old one and rename it over it.
    #[error("policy file {}: kept changing while being read (is it being written?); write it elsewhere and rename it into place", path.display())]
    Unstable {
        /// The file.
        path: PathBuf,
    },
    /// The thread that polls a policy file could not be started.
    #[error("policy file watcher thread cannot be started: {source}")]
    Watcher {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn at(file: Option<&Path>, line: Option<u32>) -> String {
    match (file, line) {
        (Some(file), Some(line)) => format!("{}:{line}: ", file.display()),
        (Some(file), None) => format!("{}: ", file.display()),
        (None, Some(line)) => format!("line {line}: "),
        (None, None) => String::new(),
    }
}

impl PolicyError {
    /// The line (from 1) the error points at, when known.
    pub fn line(&self) -> Option<u32> {
        match self {
            Self::Parse { line, .. }
            | Self::InvalidRule { line, .. }
            | Self::DuplicateRuleName { line, .. } => *line,
            Self::Read(_) | Self::Unstable { .. } | Self::Watcher { .. } => None,
        }
    }

    /// The rule field the error is about, when it is about one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidRule { field, .. } => Some(field),
            Self::DuplicateRuleName { .. } => Some("name"),
            _ => None,
        }
    }

    pub(crate) fn set_file(&mut self, path: &Path) {
        match self {
            Self::Parse { file, .. }
            | Self::InvalidRule { file, .. }
            | Self::DuplicateRuleName { file, .. } => *file = Some(path.to_owned()),
            Self::Read(_) | Self::Unstable { .. } | Self::Watcher { .. } => {}
        }
    }
}
