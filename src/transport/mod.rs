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
