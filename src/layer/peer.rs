//! Where layers and handlers find the verified peer identity of a request.

use http::Extensions;

use crate::identity::PeerIdentity;

/// The verified identity of the peer that sent a request, if the request arrived over a
/// secure listener.
///
/// The tonic and hyper integrations put the [`PeerIdentity`] itself into every request's
/// extensions; axum does it as `ConnectInfo<PeerIdentity>` when the app is served with
/// `into_make_service_with_connect_info::<PeerIdentity>()`. Both are found here.
pub fn peer_identity(extensions: &Extensions) -> Option<&PeerIdentity> {
    if let Some(peer) = extensions.get::<PeerIdentity>() {
        return Some(peer);
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<PeerIdentity>>() {
        return Some(&info.0);
    }
    None
}
