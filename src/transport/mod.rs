//! Secure streams: TLS over any transport, with the verified peer identity attached.

mod connector;
mod cutoff;
pub(crate) mod error;
mod handshaker;
mod hyper_io;
mod listener;
mod registry;
pub(crate) mod stream;
mod webpki;

pub use connector::{Connecting, SecureConnection, SecureConnector};
pub use cutoff::{CutOff, CutOffReason, CutOffSignal};
pub(crate) use handshaker::{ClientTls, Handshaker};
pub use listener::{
    DEFAULT_CLIENT_HELLO_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONCURRENT_HANDSHAKES,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKES_PER_SOURCE, ListenerStats, SecureListener,
    SecureListenerBuilder,
};
#[cfg(feature = "testkit")]
#[doc(hidden)]
pub use registry::BenchConnection;
pub(crate) use registry::{CutOffPolicy, Trigger};
pub(crate) use stream::HandshakeDeadlines;
pub use stream::SecureStream;
pub use webpki::{WebPkiConnection, WebPkiConnector};

/// `after` from now on the tokio clock; a duration past what the clock can hold (such as
/// `Duration::MAX` for "never") is a date decades away rather than a panic.
pub(crate) fn instant_after(after: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(FAR_FUTURE_SECS))
}

/// Thirty years, as tokio takes "far future".
const FAR_FUTURE_SECS: u64 = 30 * 365 * 24 * 3600;
