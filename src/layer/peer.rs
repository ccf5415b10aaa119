//! Where layers and handlers find the verified peer identity of a request.

use http::Extensions;

use crate::identity::PeerIdentity;

/// The verified identity of the peer that sent a request, if the request arrived over a
/// secure listener.
///
/// The tonic and hyper integrations put the [`PeerIdentity`] itself into every request's
/// extensions; axum does it as `ConnectInfo<PeerIdentity>` when the app is served with
/// `into_make_service_with_connect_info::<PeerIdentity>()` (or `::<PeerConnectInfo>()`, which
/// carries the socket address too). All are found here (with the
/// `axum` feature, axum's form is looked for first: a build with that feature most likely
/// serves axum, and each probe is a map lookup and two dynamic calls).
pub fn peer_identity(extensions: &Extensions) -> Option<&PeerIdentity> {
    #[cfg(feature = "axum")]
    {
        use crate::integration::axum::PeerConnectInfo;
        if let Some(info) = extensions.get::<axum::extract::ConnectInfo<PeerIdentity>>() {
            return Some(&info.0);
        }
        if let Some(info) = extensions.get::<axum::extract::ConnectInfo<PeerConnectInfo>>() {
            return Some(info.0.identity());
        }
    }
    extensions.get::<PeerIdentity>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_identity_in_either_form_and_nothing_else() {
        assert!(peer_identity(&Extensions::new()).is_none());

        let mut direct = Extensions::new();
        direct.insert(PeerIdentity::for_tests("spiffe://example.org/direct"));
        direct.insert("something else");
        assert_eq!(
            peer_identity(&direct).map(|p| p.spiffe_id().to_string()),
            Some("spiffe://example.org/direct".to_owned())
        );

        #[cfg(feature = "axum")]
        {
            let mut axum = Extensions::new();
            axum.insert(axum::extract::ConnectInfo(PeerIdentity::for_tests(
                "spiffe://example.org/axum",
            )));
            assert_eq!(
                peer_identity(&axum).map(|p| p.spiffe_id().to_string()),
                Some("spiffe://example.org/axum".to_owned())
            );
        }
    }
}
