//! Secure streams: TLS over any transport, with the verified peer identity attached.

mod connector;
mod hyper_io;
mod listener;
pub(crate) mod stream;
mod webpki;

pub use connector::{Connecting, SecureConnection, SecureConnector};
pub use listener::{
    DEFAULT_CLIENT_HELLO_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONCURRENT_HANDSHAKES,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKES_PER_SOURCE, ListenerStats, SecureListener,
    SecureListenerBuilder,
};
pub use stream::SecureStream;
pub(crate) use stream::{HandshakeDeadlines, accept, connect};
pub use webpki::{WebPkiConnection, WebPkiConnector};
