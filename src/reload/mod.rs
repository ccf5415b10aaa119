//! The one way values are reloaded: a live value and the file watcher that feeds it.
//!
//! - [`Live`] holds the current snapshot of a value for readers (one atomic load), its revision,
//!   and the notifications of changes and refused reloads ([`Notices`]); its [`Writer`] is held
//!   apart, by whatever produces new values, and logs a recovery after refused reloads.
//! - [`LiveMap`] is a live value that is a map, set and removed one key at a time (bundles by
//!   trust domain).
//! - [`FileWatch`] reads a set of files, parses them into a value, and follows their changes:
//!   compared by content, applied only once stable, the last good value kept on any problem.
//!
//! Every source that follows a file or a remote goes through these: credential files, JWKS
//! files and URLs, JWT bundles, policy files, revocation lists, federation bundles. The sources keep what is their own: parsing, and their log lines and metrics for a
//! value applied.
//!
//! This room sits below every other: it uses nothing from the crate.

mod file;
mod live;
mod map;
#[cfg(test)]
mod tests;

pub(crate) use file::{Contents, FileError, FileWatch, Publish};
pub(crate) use live::{Live, Notices, Writer};
pub(crate) use map::LiveMap;
