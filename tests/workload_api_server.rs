//! Tests of the Workload API test server against the real `spiffe` client.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType, string::Ia5String,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use secure_channel::testkit::workload_api::{WorkloadApiServer, X509SvidResponse};
use spiffe::{BundleSource, TrustDomain, X509Source};
use tokio::time::timeout;
use tonic::codegen::http::uri::PathAndQuery;

const LIMIT: Duration = Duration::from_secs(20);

type Ca = CertifiedIssuer<'static, KeyPair>;

/// A self-signed SPIFFE CA for `trust_domain`.
fn ca(trust_domain: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.subject_alt_names = vec![SanType::URI(
        Ia5String::try_from(format!("spiffe://{trust_domain}")).unwrap(),
    )];
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{trust_domain} CA"));
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// An X.509-SVID for `spiffe_id` issued by `ca`, with `ca` as its bundle.
fn svid(ca: &Ca, spiffe_id: &str) -> X509SvidResponse {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(spiffe_id).unwrap())];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    X509SvidResponse::new(
        spiffe_id,
        vec![cert.der().clone()],
        PrivatePkcs8KeyDer::from(key.serialize_der()),
        vec![ca_der(ca)],
    )
}

fn ca_der(ca: &Ca) -> CertificateDer<'static> {
    ca.der().clone()
}

#[tokio::test]
async fn x509_source_receives_svid_and_rotation() {
    let example = ca("example.org");
    let other = ca("other.org");
    let server = WorkloadApiServer::start(svid(&example, "spiffe://example.org/svc"))
        .await
        .unwrap();
    assert!(server.endpoint().starts_with("unix:/"));
    assert!(server.socket_path().is_absolute());

    let source = timeout(
        LIMIT,
        X509Source::builder().endpoint(server.endpoint()).build(),
    )
    .await
    .expect("X509Source::build timed out")
    .unwrap();

    let first = source.svid().unwrap();
    assert_eq!(first.spiffe_id().to_string(), "spiffe://example.org/svc");
    let example_td = TrustDomain::new("example.org").unwrap();
    let bundle = source
        .bundle_for_trust_domain(&example_td)
        .unwrap()
        .expect("bundle for example.org");
    assert_eq!(bundle.authorities().len(), 1);
    assert_eq!(
        bundle.authorities()[0].as_bytes(),
        ca_der(&example).as_ref()
    );
    let other_td = TrustDomain::new("other.org").unwrap();
    assert!(source.try_bundle_for_trust_domain(&other_td).is_none());

    let mut updates = source.updated();
    server.rotate(
        svid(&example, "spiffe://example.org/svc2")
            .with_federated_bundle("other.org", vec![ca_der(&other)]),
    );
    timeout(LIMIT, async {
        loop {
            if source.svid().unwrap().spiffe_id().to_string() == "spiffe://example.org/svc2" {
                break;
            }
            updates.changed().await.unwrap();
        }
    })
    .await
    .expect("rotation not observed in time");

    let federated = source
        .bundle_for_trust_domain(&other_td)
        .unwrap()
        .expect("bundle for other.org");
    assert_eq!(
        federated.authorities()[0].as_bytes(),
        ca_der(&other).as_ref()
    );
    assert!(source.try_bundle_for_trust_domain(&other_td).is_some());
    assert_eq!(server.refused_calls(), 0);

    // Shutting down with a stream still open ends it promptly (no abort needed).
    timeout(Duration::from_secs(4), server.shutdown())
        .await
        .expect("server shutdown was not graceful");
    timeout(LIMIT, source.shutdown())
        .await
        .expect("source shutdown timed out");
}

/// A message with no fields, enough to send a request and read a status.
#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

async fn raw_client(server: &WorkloadApiServer) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

#[tokio::test]
async fn call_without_security_header_is_refused() {
    let example = ca("example.org");
    let server = WorkloadApiServer::start(svid(&example, "spiffe://example.org/svc"))
        .await
        .unwrap();

    let status = timeout(LIMIT, async {
        let mut grpc = raw_client(&server).await;
        grpc.ready().await.unwrap();
        grpc.server_streaming(
            tonic::Request::new(Empty {}),
            PathAndQuery::from_static("/SpiffeWorkloadAPI/FetchX509SVID"),
            tonic_prost::ProstCodec::<Empty, Empty>::default(),
        )
        .await
        .expect_err("a call without the header must be refused")
    })
    .await
    .expect("call timed out");

    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "security header missing from request");
    assert_eq!(server.refused_calls(), 1);
    timeout(LIMIT, server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn other_methods_are_unimplemented() {
    let example = ca("example.org");
    let server = WorkloadApiServer::start(svid(&example, "spiffe://example.org/svc"))
        .await
        .unwrap();

    let status = timeout(LIMIT, async {
        let mut grpc = raw_client(&server).await;
        grpc.ready().await.unwrap();
        let mut request = tonic::Request::new(Empty {});
        request
            .metadata_mut()
            .insert("workload.spiffe.io", "true".parse().unwrap());
        grpc.unary(
            request,
            PathAndQuery::from_static("/SpiffeWorkloadAPI/ValidateJWTSVID"),
            tonic_prost::ProstCodec::<Empty, Empty>::default(),
        )
        .await
        .expect_err("ValidateJWTSVID is not implemented")
    })
    .await
    .expect("call timed out");

    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert_eq!(server.refused_calls(), 0);
    drop(server);
}
