//! A server channel and a client channel of one development CA, for the benchmarks that make
//! connections between them (each includes this file as a module).

use secure_channel::testkit::{DevCa, IssuedSvid};
use secure_channel::{Credentials, MemorySource, SecureChannel, TrustBundles};

/// The two channels and the sources they read.
pub(crate) struct Pair {
    /// Presents `server_id`, allows the client's ID.
    pub(crate) server: SecureChannel,
    /// Presents the client's SVID, expects `server_id`.
    pub(crate) client: SecureChannel,
    _sources: (MemorySource, MemorySource),
}

/// A server of `server_id` allowing `client_id`, and a client presenting `client` (an SVID of
/// `client_id`) that expects `server_id`.
pub(crate) fn pair(ca: &DevCa, server_id: &str, client: &IssuedSvid, client_id: &str) -> Pair {
    let bundles = TrustBundles::new().with(ca.bundle().unwrap());
    let server_source = MemorySource::new(ca.credentials(server_id).unwrap());
    let client_source = MemorySource::new(Credentials::new(client.to_svid().unwrap(), bundles));
    let server = SecureChannel::builder(&server_source)
        .allow_client(client_id)
        .build()
        .unwrap();
    let client = SecureChannel::builder(&client_source)
        .expect_server(server_id)
        .build()
        .unwrap();
    Pair {
        server,
        client,
        _sources: (server_source, client_source),
    }
}
