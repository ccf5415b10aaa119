//! Secure streams: TLS over any transport, with the verified peer identity attached.

mod stream;

pub use stream::SecureStream;
pub(crate) use stream::{accept, connect};
