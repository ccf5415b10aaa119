//! Where layers and handlers find the verified peer identity of a request.

use http::{Extensions, Request};

use crate::authz::AUDIT_TARGET;
use crate::identity::PeerIdentity;
use crate::layer::{Rejection, RejectionKind};

/// The verified identity of the peer that sent a request, if the request arrived over a
/// secure listener.
///
/// The servers of [`integration`](crate::integration) (hyper, tonic, and axum through
/// [`integration::axum::serve`](crate::integration::axum::serve)) put the [`PeerIdentity`]
/// into every request's extensions, and only they can: anything else a request carries
/// (such as axum's `ConnectInfo`) is not looked at.
pub fn peer_identity(extensions: &Extensions) -> Option<&PeerIdentity> {
    extensions.get::<PeerIdentity>()
}

/// The refusal of a request without a verified identity by a layer that needs one (fail
/// closed), with its audit line.
pub(crate) fn missing_peer_identity<B>(request: &Request<B>) -> Rejection {
    tracing::info!(
        target: AUDIT_TARGET,
        method = %request.method(),
        path = ?request.uri().path(),
        decision = "deny",
        reason = "missing-peer-identity",
        "request refused: no verified peer identity"
    );
    Rejection::new(
        RejectionKind::MissingPeerIdentity,
        "no verified peer identity",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_identity_and_nothing_else() {
        assert!(peer_identity(&Extensions::new()).is_none());

        let mut direct = Extensions::new();
        direct.insert(PeerIdentity::for_tests("spiffe://example.org/direct"));
        direct.insert("something else");
        assert_eq!(
            peer_identity(&direct).map(|p| p.spiffe_id().to_string()),
            Some("spiffe://example.org/direct".to_owned())
        );

        // An identity wrapped in anything else (axum's ConnectInfo, which any make-service
        // can set) is not the verified one.
        #[cfg(feature = "axum")]
        {
            let mut axum = Extensions::new();
            axum.insert(axum::extract::ConnectInfo(PeerIdentity::for_tests(
                "spiffe://example.org/axum",
            )));
            assert!(peer_identity(&axum).is_none());
        }
    }
}
