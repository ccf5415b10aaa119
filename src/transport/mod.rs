//! Secure streams: TLS over any transport, with the verified peer identity attached.

mod connector;
mod listener;
mod stream;
mod webpki;

pub use connector::{Connecting, SecureConnection, SecureConnector};
pub use listener::{
    DEFAULT_MAX_CONCURRENT_HANDSHAKES, ListenerStats, SecureListener, SecureListenerBuilder,
};
pub use stream::SecureStream;
pub(crate) use stream::{accept, connect};
pub use webpki::{WebPkiConnection, WebPkiConnector};
