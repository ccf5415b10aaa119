//! How a command fails, and the exit code each failure gives.

use std::fmt;
use std::process::ExitCode;

/// Why a command did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The answer is no (a denied request, an invalid SVID): already reported on stdout. Exit 1.
    Negative,
    /// Bad input that was given correctly (a file that cannot be read or is invalid, a proxy that
    /// cannot start): the message names the flag or file. Exit 1.
    Invalid(String),
    /// The command line itself is wrong (flags that contradict each other). Exit 2.
    Usage(String),
}

impl Failure {
    /// An invalid input: `what` names the flag or file.
    pub(crate) fn invalid(what: impl fmt::Display, error: impl fmt::Display) -> Self {
        Self::Invalid(format!("{what}: {error}"))
    }

    /// Prints the message to stderr and gives the exit code.
    pub(crate) fn report(self) -> ExitCode {
        match self {
            Self::Negative => ExitCode::from(1),
            Self::Invalid(message) => {
                eprintln!("secure-channel: error: {message}");
                ExitCode::from(1)
            }
            Self::Usage(message) => {
                eprintln!("secure-channel: usage error: {message}");
                eprintln!("(see secure-channel --help)");
                ExitCode::from(2)
            }
        }
    }
}

/// The result of a command.
pub(crate) type Outcome = Result<(), Failure>;
