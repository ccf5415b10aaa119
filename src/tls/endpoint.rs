//! TLS for SPIFFE bundle endpoints (the `https_spiffe` profile): a client verifier that accepts
//! exactly one SPIFFE ID against one given bundle, and a server configuration that presents
//! the current SVID without asking clients for a certificate.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::time_provider::DefaultTimeProvider;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use spiffe::SpiffeId;

use crate::ConfigError;
use crate::identity::{AllowList, IdMatcher, PeerRejection, inspect_leaf};
use crate::source::{CredentialSource, TrustBundle};
use crate::tls::resolver::SvidResolver;
use crate::tls::verifier::{Side, validate_chain};

/// ALPN protocols of a bundle endpoint's server (hyper-util's auto builder speaks both).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Authenticates a bundle endpoint server by its SPIFFE ID (`https_spiffe`): its X.509-SVID
/// must validate against `bundle` (the endpoint's trust domain's, which the endpoint itself
/// serves) and carry exactly `expected`. The host name dialled plays no part.
///
/// The rejection of the last handshake is kept, so a failed fetch can say why.
#[derive(Debug)]
pub(crate) struct EndpointVerifier {
    bundle: TrustBundle,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
    rejection: Mutex<Option<PeerRejection>>,
}

impl EndpointVerifier {
    /// The verifier, and a client configuration (no client certificate, ALPN `http/1.1`) that
    /// uses it.
    pub(crate) fn client_config(
        bundle: TrustBundle,
        expected: SpiffeId,
    ) -> Result<(Arc<Self>, Arc<ClientConfig>), ConfigError> {
        let provider = crate::crypto::default_provider()?;
        let verifier = Arc::new(Self {
            bundle,
            expected,
            algorithms: provider.signature_verification_algorithms,
            rejection: Mutex::new(None),
        });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ConfigError::TlsConfig)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((verifier, Arc::new(config)))
    }

    /// Why the last handshake refused the server, if it did.
    pub(crate) fn rejection(&self) -> Option<PeerRejection> {
        self.rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), PeerRejection> {
        let leaf = inspect_leaf(end_entity.as_ref()).map_err(PeerRejection::NotSvid)?;
        if leaf.spiffe_id.trust_domain() != self.bundle.trust_domain() {
            return Err(PeerRejection::UnknownTrustDomain {
                presented: leaf.spiffe_id,
            });
        }
        let verified = validate_chain(
            &self.bundle,
            &self.algorithms,
            Side::Servers,
            None,
            leaf,
            end_entity,
            intermediates,
            now,
        )?;
        let presented = verified.identity().spiffe_id();
        if *presented != self.expected {
            let mut expected = AllowList::deny_all();
            expected.push(IdMatcher::exact(self.expected.clone()));
            return Err(PeerRejection::NotAllowed {
                presented: presented.clone(),
                expected,
            });
        }
        Ok(())
    }
}

impl ServerCertVerifier for EndpointVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.check(end_entity, intermediates, now) {
            Ok(()) => Ok(ServerCertVerified::assertion()),
            Err(rejection) => {
                tracing::debug!(%rejection, "bundle endpoint server refused");
                *self
                    .rejection
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(rejection.clone());
                Err(rejection.into_rustls())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A server configuration presenting `source`'s current SVID (read at each handshake, never
/// an expired one) to clients that need not present a certificate: a bundle endpoint's
/// `https_spiffe` profile. TLS 1.3 and 1.2 (rustls defaults), ALPN `h2` and `http/1.1`.
pub(crate) fn svid_server_config(
    source: &CredentialSource,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = crate::crypto::default_provider()?;
    let resolver = Arc::new(SvidResolver::new(
        source.clone(),
        Arc::new(DefaultTimeProvider),
    ));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::TlsConfig)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A server configuration presenting a fixed certificate chain and key (the `https_web`
/// profile: a WebPKI certificate for the endpoint's host name), no client authentication.
pub(crate) fn web_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = crate::crypto::default_provider()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::TlsConfig)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(ConfigError::TlsConfig)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
