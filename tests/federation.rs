//! SPIFFE Federation: our bundle endpoint client against our bundle endpoint server (and
//! against scripted servers that misbehave), over real TLS on 127.0.0.1 with certificates
//! minted at test time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use rustls::RootCertStore;
use secure_channel::federation::{
    BundleEndpointClient, BundleEndpointServer, BundleEndpointService, BundleError,
    FederationError, FetchError, SpiffeBundle,
};
use secure_channel::identity::PeerRejection;
use secure_channel::jwt::JwtBundles;
use secure_channel::source::FederatedBundles;
use secure_channel::testkit::DevCa;
use secure_channel::transport::{CutOffReason, WebPkiConnector};
use secure_channel::{
    Credentials, MemorySource, SecureChannel, SpiffeId, TrustBundle, TrustBundles, TrustDomain,
};
use support::{ca, within};
use tower::ServiceExt;

const ENDPOINT_ID: &str = "spiffe://b.test/bundle-endpoint";

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"b-key-1","alg":"ES256",
    "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

/// Credentials for `spiffe_id` issued by `issuer`, trusting the CAs of `bundle` for the own
/// trust domain.
fn creds(issuer: &DevCa, spiffe_id: &str, bundle: &[&DevCa]) -> Credentials {
    let issued = issuer.svid(spiffe_id).issue().unwrap();
    let svid = secure_channel::Svid::from_der(
        issued.chain().to_vec(),
        rustls_pki_types::PrivateKeyDer::Pkcs8(issued.key().clone_key()),
    )
    .unwrap();
    let certs = bundle
        .iter()
        .map(|ca| ca.root_certificate().clone())
        .collect();
    let bundle = TrustBundle::from_der(issuer.trust_domain().clone(), certs).unwrap();
    Credentials::new(svid, TrustBundles::new().with(bundle))
}

/// A server on 127.0.0.1, stopped when dropped.
struct Running {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    fn url(&self) -> String {
        format!("https://{}/bundle", self.addr)
    }
}

async fn serve<S, B>(server: BundleEndpointServer, service: S) -> Running
where
    S: tower::Service<Request<hyper::body::Incoming>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, service, async move {
        let _ = stopped.await;
    }));
    Running { addr, _stop: stop }
}

/// The remote trust domain b.test: its CA, its credential source (the endpoint's SVID and the
/// bundle it serves) and its JWT authorities.
struct Remote {
    ca: DevCa,
    source: MemorySource,
    jwt: JwtBundles,
}

impl Remote {
    fn new() -> Self {
        let ca = ca("b.test");
        let source = MemorySource::new(creds(&ca, ENDPOINT_ID, &[&ca]));
        let jwt = JwtBundles::new();
        jwt.set(td("b.test"), JWKS).unwrap();
        Self { ca, source, jwt }
    }

    fn service(&self) -> BundleEndpointService {
        BundleEndpointService::new(&self.source.source()).jwt_authorities(&self.jwt)
    }

    async fn serve_spiffe(&self) -> Running {
        let server = BundleEndpointServer::https_spiffe(&self.source.source()).unwrap();
        serve(server, self.service()).await
    }

    fn client(&self, url: &str) -> secure_channel::federation::BundleEndpointClientBuilder {
        BundleEndpointClient::https_spiffe(url, id(ENDPOINT_ID), self.ca.bundle().unwrap())
    }
}

fn certs_of(bundles: &FederatedBundles, name: &str) -> Vec<Vec<u8>> {
    bundles
        .get(&td(name))
        .map(|b| b.certificates().iter().map(|c| c.to_vec()).collect())
        .unwrap_or_default()
}

fn der(ca: &DevCa) -> Vec<u8> {
    ca.root_certificate().to_vec()
}

/// https_spiffe end to end: the first fetch (authenticated with the bootstrap bundle), the
/// X.509 authorities in a channel's credentials (a b.test peer admitted), the JWT authorities
/// in the JWT bundles, then a CA rotation carried over two fetches: the new CA announced, then
/// the endpoint's SVID issued by it and authenticated with the bundle fetched before; the
/// partner's open connection under the retired CA is cut off.
#[tokio::test]
async fn https_spiffe_fetches_feeds_and_follows_a_ca_rotation() {
    support::init_tracing();
    let remote = Remote::new();
    let running = remote.serve_spiffe().await;
    let federated = FederatedBundles::new();
    let jwt = JwtBundles::new();
    let client = within(
        remote
            .client(&running.url())
            .x509_bundles(&federated)
            .jwt_bundles(&jwt)
            .start(),
    )
    .await
    .unwrap();
    assert_eq!(certs_of(&federated, "b.test"), vec![der(&remote.ca)]);
    assert_eq!(jwt.trust_domains(), vec![td("b.test")]);
    let first_sequence = client.current().sequence().unwrap();

    // Our workload (a.test) admits a b.test client through the federated bundle.
    let ours = ca("a.test");
    let own = MemorySource::new(ours.credentials("spiffe://a.test/api").unwrap());
    let merged = own.source().with_federated_bundles(&federated).unwrap();
    assert_eq!(merged.current().bundles().len(), 2);
    let server = SecureChannel::builder(merged.clone())
        .allow_client("spiffe://b.test/billing")
        .build()
        .unwrap();
    let partner = MemorySource::new(creds(&remote.ca, "spiffe://b.test/billing", &[&remote.ca]));
    let partner_creds = partner.source().current();
    let mut with_ours = partner_creds.bundles().clone();
    with_ours.insert(ours.bundle().unwrap());
    let partner = MemorySource::new(Credentials::new(partner_creds.svid().clone(), with_ours));
    let partner = SecureChannel::builder(&partner)
        .expect_server("spiffe://a.test/api")
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await
    });
    let _stream = within(partner.connect_tcp(addr)).await.unwrap();
    let accepted = within(accept).await.unwrap().unwrap();
    assert_eq!(
        accepted.peer_identity().spiffe_id().to_string(),
        "spiffe://b.test/billing"
    );
    let partner_signal = accepted.cut_off_signal();

    // The same bundle again: nothing changes.
    assert!(!within(client.refresh_now()).await.unwrap());
    assert_eq!(client.revision(), 1);

    // Rotation, step 1: b.test announces its next CA.
    let next_ca = ca("b.test");
    remote
        .source
        .update(creds(&remote.ca, ENDPOINT_ID, &[&remote.ca, &next_ca]));
    assert!(within(client.refresh_now()).await.unwrap());
    assert_eq!(
        certs_of(&federated, "b.test"),
        vec![der(&remote.ca), der(&next_ca)]
    );
    assert!(client.current().sequence().unwrap() > first_sequence);
    let mut merged_changes = merged.subscribe();
    within(merged_changes.wait_for(|_| {
        merged
            .current()
            .bundles()
            .get(&td("b.test"))
            .unwrap()
            .certificates()
            .len()
            == 2
    }))
    .await
    .unwrap();

    // Step 2: the endpoint's SVID is issued by the new CA, the old one retired. Only the
    // bundle fetched in step 1 vouches for it.
    remote
        .source
        .update(creds(&next_ca, ENDPOINT_ID, &[&next_ca]));
    assert!(within(client.refresh_now()).await.unwrap());
    assert_eq!(certs_of(&federated, "b.test"), vec![der(&next_ca)]);
    assert_eq!(client.revision(), 3);
    assert_eq!(client.failed_fetches(), 0);
    // The partner's open connection, whose SVID the retired CA issued, is cut off.
    let cut = within(partner_signal.cut_off()).await;
    assert_eq!(cut.reason(), CutOffReason::UntrustedChain, "{cut}");

    // Trust follows the bundle: an endpoint whose SVID the retired CA issued is refused now.
    remote
        .source
        .update(creds(&remote.ca, ENDPOINT_ID, &[&remote.ca]));
    let error = within(client.refresh_now()).await.unwrap_err();
    assert!(
        matches!(
            &error,
            FetchError::EndpointRefused {
                rejection: PeerRejection::InvalidChain { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(certs_of(&federated, "b.test"), vec![der(&next_ca)]);
    assert_eq!(client.failed_fetches(), 1);
}

/// The https_spiffe endpoint must present exactly the configured SPIFFE ID: another ID of the
/// same trust domain, an ID of another trust domain, or a b.test ID from a CA the bootstrap
/// bundle does not hold are refused.
#[tokio::test]
async fn https_spiffe_refuses_an_endpoint_with_another_identity() {
    support::init_tracing();
    let remote = Remote::new();
    let impostor_ca = ca("b.test");
    let other_td = ca("c.test");
    for (endpoint_creds, expect) in [
        (
            creds(
                &remote.ca,
                "spiffe://b.test/not-the-endpoint",
                &[&remote.ca],
            ),
            "not_allowed",
        ),
        (
            creds(&other_td, "spiffe://c.test/bundle-endpoint", &[&other_td]),
            "unknown_trust_domain",
        ),
        (
            creds(&impostor_ca, ENDPOINT_ID, &[&impostor_ca]),
            "invalid_chain",
        ),
    ] {
        let endpoint = MemorySource::new(endpoint_creds);
        let server = BundleEndpointServer::https_spiffe(&endpoint.source()).unwrap();
        // It serves a perfectly good bundle of b.test: the identity alone is refused.
        let running = serve(server, remote.service()).await;
        let federated = FederatedBundles::new();
        let error = within(
            remote
                .client(&running.url())
                .x509_bundles(&federated)
                .start(),
        )
        .await
        .unwrap_err();
        let FederationError::FirstFetch { error: failed, .. } = &error else {
            panic!("{expect}: {error:?}");
        };
        let FetchError::EndpointRefused { rejection, .. } = &**failed else {
            panic!("{expect}: {error:?}");
        };
        let got = match rejection {
            PeerRejection::NotAllowed { .. } => "not_allowed",
            PeerRejection::UnknownTrustDomain { .. } => "unknown_trust_domain",
            PeerRejection::InvalidChain { .. } => "invalid_chain",
            other => panic!("{other:?}"),
        };
        assert_eq!(got, expect, "{error}");
        assert!(federated.trust_domains().is_empty());
    }
}

#[tokio::test]
async fn an_endpoint_id_outside_the_bundles_trust_domain_is_a_configuration_error() {
    let remote = Remote::new();
    let error = BundleEndpointClient::https_spiffe(
        "https://127.0.0.1:1/bundle",
        id("spiffe://c.test/bundle-endpoint"),
        remote.ca.bundle().unwrap(),
    )
    .start()
    .await
    .unwrap_err();
    assert!(
        matches!(error, FederationError::EndpointOutsideTrustDomain { .. }),
        "{error:?}"
    );
    let error = remote
        .client("http://127.0.0.1:1/bundle")
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(error, FederationError::InvalidUrl { .. }),
        "{error:?}"
    );
}

/// A WebPKI certificate for 127.0.0.1 from a "web" CA that is not a SPIFFE CA.
fn web_server(web_ca: &DevCa) -> BundleEndpointServer {
    let issued = web_ca
        .svid("spiffe://web.test/unused")
        .without_uri()
        .ip_address("127.0.0.1".parse().unwrap())
        .issue()
        .unwrap();
    BundleEndpointServer::https_web(
        issued.chain().to_vec(),
        rustls_pki_types::PrivateKeyDer::Pkcs8(issued.key().clone_key()),
    )
    .unwrap()
}

fn web_connector(web_ca: &DevCa) -> WebPkiConnector {
    let mut roots = RootCertStore::empty();
    roots.add(web_ca.root_certificate().clone()).unwrap();
    WebPkiConnector::with_roots(roots).unwrap()
}

/// https_web: the server authenticated by a WebPKI certificate for the URL's host; one the
/// client's roots do not vouch for is refused.
#[tokio::test]
async fn https_web_fetches_from_a_webpki_server_and_refuses_an_untrusted_one() {
    support::init_tracing();
    let remote = Remote::new();
    let web_ca = ca("web.test");
    let running = serve(web_server(&web_ca), remote.service()).await;
    let federated = FederatedBundles::new();
    let client = within(
        BundleEndpointClient::https_web(running.url(), td("b.test"), web_connector(&web_ca))
            .x509_bundles(&federated)
            .start(),
    )
    .await
    .unwrap();
    assert_eq!(certs_of(&federated, "b.test"), vec![der(&remote.ca)]);
    assert_eq!(client.current().jwt_authority_count(), 1);

    let untrusted = ca("web.test");
    let error = within(
        BundleEndpointClient::https_web(running.url(), td("b.test"), web_connector(&untrusted))
            .start(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, FederationError::FirstFetch { error, .. } if matches!(**error, FetchError::Connect { .. })),
        "{error:?}"
    );
}

/// What a scripted endpoint answers next.
#[derive(Clone)]
enum Answer {
    Body(Vec<u8>),
    /// A body sent in chunks, without Content-Length.
    Streamed(Vec<u8>),
    Status(StatusCode),
    /// Answers after this long.
    Late(Duration),
}

/// An https_web endpoint whose answers the test scripts; counts the requests.
#[derive(Clone)]
struct Scripted {
    answer: Arc<Mutex<Answer>>,
    requests: Arc<Mutex<u64>>,
}

impl Scripted {
    fn new(first: Answer) -> Self {
        Self {
            answer: Arc::new(Mutex::new(first)),
            requests: Arc::new(Mutex::new(0)),
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn requests(&self) -> u64 {
        *self.requests.lock().unwrap()
    }

    fn service(
        self,
    ) -> impl tower::Service<
        Request<hyper::body::Incoming>,
        Response = Response<Chunks>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        let script = self;
        tower::service_fn(move |_request: Request<hyper::body::Incoming>| {
            let script = script.clone();
            async move {
                *script.requests.lock().unwrap() += 1;
                let answer = script.answer.lock().unwrap().clone();
                let response = match answer {
                    Answer::Body(body) => Response::new(Chunks::whole(body)),
                    Answer::Streamed(body) => Response::new(Chunks::streamed(body)),
                    Answer::Status(status) => {
                        let mut response = Response::new(Chunks::whole(Vec::new()));
                        *response.status_mut() = status;
                        response
                    }
                    Answer::Late(delay) => {
                        tokio::time::sleep(delay).await;
                        Response::new(Chunks::whole(Vec::new()))
                    }
                };
                Ok::<_, Infallible>(response)
            }
        })
    }
}

/// A response body: whole (with its length known, so Content-Length is sent) or in chunks of
/// unknown total length.
struct Chunks {
    chunks: VecDeque<Bytes>,
    known_length: Option<u64>,
}

impl Chunks {
    fn whole(body: Vec<u8>) -> Self {
        Self {
            known_length: Some(body.len() as u64),
            chunks: VecDeque::from([Bytes::from(body)]),
        }
    }

    fn streamed(body: Vec<u8>) -> Self {
        Self {
            known_length: None,
            chunks: body.chunks(16 * 1024).map(Bytes::copy_from_slice).collect(),
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.chunks
                .pop_front()
                .map(|c| Ok(http_body::Frame::data(c))),
        )
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.known_length {
            Some(length) => http_body::SizeHint::with_exact(length),
            None => http_body::SizeHint::default(),
        }
    }
}

/// A bundle document of `ca`'s certificate with `sequence`.
fn document(ca: &DevCa, sequence: Option<u64>) -> Vec<u8> {
    let mut bundle = SpiffeBundle::new(ca.bundle().unwrap());
    if let Some(sequence) = sequence {
        bundle = bundle.with_sequence(sequence);
    }
    bundle.to_json().unwrap()
}

/// A client of a scripted https_web endpoint that first serves a good b.test bundle.
async fn scripted_client(
    remote_ca: &DevCa,
    federated: &FederatedBundles,
) -> (Scripted, Running, BundleEndpointClient) {
    let web_ca = ca("web.test");
    let script = Scripted::new(Answer::Body(document(remote_ca, Some(10))));
    let running = serve(web_server(&web_ca), script.clone().service()).await;
    let client = within(
        BundleEndpointClient::https_web(running.url(), td("b.test"), web_connector(&web_ca))
            .x509_bundles(federated)
            .fetch_timeout(Duration::from_millis(500))
            .start(),
    )
    .await
    .unwrap();
    (script, running, client)
}

/// Whether a fetch failed for the reason a case expects.
type IsExpected = fn(&FetchError) -> bool;

/// Every way a fetch can fail keeps the last good bundle, is counted, and says why.
#[tokio::test]
async fn a_failed_fetch_keeps_the_last_good_bundle_and_says_why() {
    support::init_tracing();
    let remote_ca = ca("b.test");
    let federated = FederatedBundles::new();
    let (script, _running, client) = scripted_client(&remote_ca, &federated).await;
    let good = vec![der(&remote_ca)];
    assert_eq!(certs_of(&federated, "b.test"), good);

    let huge = {
        let mut doc = String::from(r#"{"keys":[],"padding":""#);
        doc.push_str(&"x".repeat(300 * 1024));
        doc.push_str("\"}");
        doc.into_bytes()
    };
    let lying = document(&ca("c.test"), Some(11));
    let cases: Vec<(&str, Answer, IsExpected)> = vec![
        (
            "status",
            Answer::Status(StatusCode::INTERNAL_SERVER_ERROR),
            |e| matches!(e, FetchError::Status { status: 500, .. }),
        ),
        (
            "garbage",
            Answer::Body(b"<html>not a bundle</html>".to_vec()),
            |e| {
                matches!(
                    e,
                    FetchError::Bundle {
                        error: BundleError::NotJson { .. },
                        ..
                    }
                )
            },
        ),
        (
            "not a bundle",
            Answer::Body(br#"{"kid":"x"}"#.to_vec()),
            |e| {
                matches!(
                    e,
                    FetchError::Bundle {
                        error: BundleError::Malformed { .. },
                        ..
                    }
                )
            },
        ),
        (
            "no X.509 authority",
            Answer::Body(br#"{"keys":[]}"#.to_vec()),
            |e| {
                matches!(
                    e,
                    FetchError::Bundle {
                        error: BundleError::NoX509Authority,
                        ..
                    }
                )
            },
        ),
        (
            "huge, with Content-Length",
            Answer::Body(huge.clone()),
            |e| {
                matches!(
                    e,
                    FetchError::Bundle {
                        error: BundleError::TooLarge { .. },
                        ..
                    }
                )
            },
        ),
        ("huge, streamed", Answer::Streamed(huge), |e| {
            matches!(
                e,
                FetchError::Bundle {
                    error: BundleError::TooLarge { .. },
                    ..
                }
            )
        }),
        ("another trust domain's bundle", Answer::Body(lying), |e| {
            matches!(
                e,
                FetchError::Bundle {
                    error: BundleError::TrustDomainMismatch { .. },
                    ..
                }
            )
        }),
        ("too slow", Answer::Late(Duration::from_secs(30)), |e| {
            matches!(e, FetchError::Timeout { .. })
        }),
        (
            "sequence backwards",
            Answer::Body(document(&ca("b.test"), Some(9))),
            |e| {
                matches!(
                    e,
                    FetchError::SequenceBackwards {
                        last: 10,
                        presented: Some(9),
                        ..
                    }
                )
            },
        ),
        (
            "sequence dropped",
            Answer::Body(document(&ca("b.test"), None)),
            |e| {
                matches!(
                    e,
                    FetchError::SequenceBackwards {
                        last: 10,
                        presented: None,
                        ..
                    }
                )
            },
        ),
    ];
    for (count, (name, answer, expected)) in cases.into_iter().enumerate() {
        script.set(answer);
        let error = within(client.refresh_now()).await.unwrap_err();
        assert!(expected(&error), "{name}: {error:?}");
        assert_eq!(certs_of(&federated, "b.test"), good, "{name}");
        assert_eq!(client.failed_fetches(), count as u64 + 1, "{name}");
        assert_eq!(client.current().sequence(), Some(10), "{name}");
    }

    // The endpoint recovers: a higher sequence is applied.
    let next = ca("b.test");
    script.set(Answer::Body(document(&next, Some(11))));
    assert!(within(client.refresh_now()).await.unwrap());
    assert_eq!(certs_of(&federated, "b.test"), vec![der(&next)]);
}

/// One remote trust domain's trouble leaves the others' bundles alone, and a federated bundle
/// never replaces the workload's own trust domain's.
#[tokio::test]
async fn one_partners_trouble_touches_no_other_bundle_nor_our_own() {
    support::init_tracing();
    let federated = FederatedBundles::new();
    let b = ca("b.test");
    let (_b_script, _b_running, _b_client) = scripted_client(&b, &federated).await;
    let c = ca("c.test");
    let web_ca = ca("web.test");
    let c_script = Scripted::new(Answer::Body(document(&c, Some(1))));
    let c_running = serve(web_server(&web_ca), c_script.clone().service()).await;
    let c_client = within(
        BundleEndpointClient::https_web(c_running.url(), td("c.test"), web_connector(&web_ca))
            .x509_bundles(&federated)
            .start(),
    )
    .await
    .unwrap();
    assert_eq!(certs_of(&federated, "b.test"), vec![der(&b)]);
    assert_eq!(certs_of(&federated, "c.test"), vec![der(&c)]);

    // c.test's endpoint serves b.test's CA: refused, b.test's bundle unchanged.
    c_script.set(Answer::Body(document(&b, Some(2))));
    within(c_client.refresh_now()).await.unwrap_err();
    assert_eq!(certs_of(&federated, "b.test"), vec![der(&b)]);
    assert_eq!(certs_of(&federated, "c.test"), vec![der(&c)]);

    // Our own trust domain is the credential source's alone.
    let ours = ca("a.test");
    let rogue = ca("a.test");
    federated.set(rogue.bundle().unwrap());
    let own = MemorySource::new(ours.credentials("spiffe://a.test/api").unwrap());
    let merged = own.source().with_federated_bundles(&federated).unwrap();
    let current = merged.current();
    assert_eq!(
        current.bundles().get(&td("a.test")).unwrap().certificates(),
        &[ours.root_certificate().clone()]
    );
    assert!(current.bundles().get(&td("b.test")).is_some());
    assert!(current.bundles().get(&td("c.test")).is_some());
}

/// The background refresh follows the refresh hint within the bounds: a far hint is cut to the
/// upper bound (the change is picked up), a zero hint raised to the lower bound (no fetch
/// storm).
#[tokio::test]
async fn the_refresh_hint_is_followed_within_bounds() {
    support::init_tracing();
    let remote = Remote::new();
    let server = BundleEndpointServer::https_spiffe(&remote.source.source()).unwrap();
    let service = remote
        .service()
        .refresh_hint(Duration::from_secs(24 * 3600));
    let running = serve(server, service).await;
    let federated = FederatedBundles::new();
    let client = within(
        remote
            .client(&running.url())
            .x509_bundles(&federated)
            .refresh_bounds(Duration::from_millis(50), Duration::from_millis(200))
            .start(),
    )
    .await
    .unwrap();
    assert_eq!(
        client.current().refresh_hint(),
        Some(Duration::from_secs(24 * 3600))
    );
    let next_ca = ca("b.test");
    remote
        .source
        .update(creds(&remote.ca, ENDPOINT_ID, &[&remote.ca, &next_ca]));
    let mut revisions = client.subscribe();
    within(revisions.wait_for(|revision| *revision == 2))
        .await
        .unwrap();
    assert_eq!(certs_of(&federated, "b.test").len(), 2);

    // A zero hint with a lower bound of an hour: one fetch (the first), however long we look.
    let script = Scripted::new(Answer::Body(
        SpiffeBundle::new(remote.ca.bundle().unwrap())
            .with_refresh_hint(Duration::ZERO)
            .to_json()
            .unwrap(),
    ));
    let web_ca = ca("web.test");
    let running = serve(web_server(&web_ca), script.clone().service()).await;
    let _client = within(
        BundleEndpointClient::https_web(running.url(), td("b.test"), web_connector(&web_ca))
            .refresh_bounds(Duration::from_secs(3600), Duration::from_secs(7200))
            .start(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(script.requests(), 1);
}

/// The served document: SPIFFE bundle format, sequence growing only when the authorities
/// change, GET and HEAD only; usable as a plain tower service (axum, hyper).
#[tokio::test]
async fn the_service_serves_the_current_bundle_in_the_spiffe_format() {
    let remote = Remote::new();
    let service = remote.service().refresh_hint(Duration::from_secs(42));
    let get = |service: BundleEndpointService, method: Method| async move {
        let response = service
            .oneshot(Request::builder().method(method).body(()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    };
    let (status, body) = get(service.clone(), Method::GET).await;
    assert_eq!(status, StatusCode::OK);
    let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let keys = document["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["use"], "x509-svid");
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["x5c"].as_array().unwrap().len(), 1);
    assert_eq!(keys[1]["use"], "jwt-svid");
    assert_eq!(keys[1]["kid"], "b-key-1");
    assert_eq!(document["spiffe_refresh_hint"], 42);
    let first = document["spiffe_sequence"].as_u64().unwrap();
    let parsed = SpiffeBundle::parse(&td("b.test"), &body, 1 << 20).unwrap();
    assert_eq!(
        parsed.x509_authorities().certificates(),
        &[remote.ca.root_certificate().clone()]
    );

    // The same authorities: the same sequence. A new SVID alone changes nothing served.
    remote
        .source
        .update(creds(&remote.ca, ENDPOINT_ID, &[&remote.ca]));
    let (_, again) = get(service.clone(), Method::GET).await;
    assert_eq!(again, body);
    // A new CA: a higher sequence.
    let next = ca("b.test");
    remote
        .source
        .update(creds(&remote.ca, ENDPOINT_ID, &[&remote.ca, &next]));
    let (_, rotated) = get(service.clone(), Method::GET).await;
    let rotated: serde_json::Value = serde_json::from_slice(&rotated).unwrap();
    assert!(rotated["spiffe_sequence"].as_u64().unwrap() > first);
    assert_eq!(rotated["keys"].as_array().unwrap().len(), 3);

    let (status, body) = get(service.clone(), Method::HEAD).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    let (status, _) = get(service.clone(), Method::POST).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    // Mounted in an axum router.
    let router = axum::Router::new().route_service("/bundle", service);
    let response = router
        .oneshot(
            Request::get("/bundle")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Bundle documents from elsewhere: x5c must hold exactly one certificate, keys of other uses
/// are skipped, a CA must be a CA.
#[test]
fn bundle_documents_are_checked() {
    let b = ca("b.test");
    let cert = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b.root_certificate(),
    );
    let parse = |doc: String| SpiffeBundle::parse(&td("b.test"), doc.as_bytes(), 1 << 20);
    let ok = parse(format!(
        r#"{{"keys":[{{"use":"x509-svid","kty":"EC","x5c":["{cert}"]}},{{"use":"wit-svid","kty":"EC"}}],"spiffe_sequence":3,"spiffe_refresh_hint":60}}"#
    ))
    .unwrap();
    assert_eq!(ok.sequence(), Some(3));
    assert_eq!(ok.refresh_hint(), Some(Duration::from_secs(60)));
    assert_eq!(ok.jwt_authority_count(), 0);
    assert!(matches!(
        parse(format!(
            r#"{{"keys":[{{"use":"x509-svid","kty":"EC","x5c":["{cert}","{cert}"]}}]}}"#
        )),
        Err(BundleError::X509Authority { .. })
    ));
    let leaf = b.svid("spiffe://b.test/leaf").issue().unwrap();
    let leaf = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &leaf.chain()[0]);
    assert!(matches!(
        parse(format!(
            r#"{{"keys":[{{"use":"x509-svid","kty":"EC","x5c":["{leaf}"]}}]}}"#
        )),
        Err(BundleError::X509Authority { .. })
    ));
    assert!(matches!(
        parse(format!(
            r#"{{"keys":[{{"use":"x509-svid","kty":"EC","x5c":["{cert}"]}},{{"use":"jwt-svid","kty":"oct","kid":"h","k":"c2VjcmV0"}}]}}"#
        )),
        Err(BundleError::JwtAuthorities { .. })
    ));
    assert!(matches!(
        parse(format!(
            r#"{{"keys":[{{"use":"x509-svid","x5c":["{cert}"]}}],"spiffe_sequence":-1}}"#
        )),
        Err(BundleError::Malformed { .. })
    ));
}

/// Fetches are counted in `secure_channel_federation_fetches_total` by trust domain, outcome
/// and reason.
#[tokio::test]
async fn fetches_are_counted_by_outcome_and_reason() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let remote_ca = ca("b.test");
    let federated = FederatedBundles::new();
    let (script, _running, client) = scripted_client(&remote_ca, &federated).await;
    assert!(!within(client.refresh_now()).await.unwrap());
    script.set(Answer::Status(StatusCode::BAD_GATEWAY));
    within(client.refresh_now()).await.unwrap_err();

    // Taking a snapshot resets the counters: one snapshot, every question asked of it.
    let recorded = snapshotter.snapshot().into_vec();
    let counted = |outcome: &str, reason: &str| -> u64 {
        let labels = [
            ("trust_domain", "b.test"),
            ("outcome", outcome),
            ("reason", reason),
        ];
        recorded
            .iter()
            .filter(|(key, _, _, _)| {
                let key = key.key();
                key.name() == "secure_channel_federation_fetches_total"
                    && labels
                        .iter()
                        .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
            })
            .map(|(_, _, _, value)| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(counted("applied", "none"), 1);
    assert_eq!(counted("unchanged", "none"), 1);
    assert_eq!(counted("refused", "status"), 1);
}

/// A client that completes the TLS handshake and then sends nothing, or goes quiet on a
/// kept-alive connection after a request, is closed after the server's idle timeout: it cannot
/// hold one of the endpoint's connections.
#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    support::init_tracing();
    let remote = Remote::new();
    let web_ca = ca("web.test");
    let idle = Duration::from_millis(300);
    let running = serve(web_server(&web_ca).idle_timeout(idle), remote.service()).await;
    let mut roots = RootCertStore::empty();
    roots.add(web_ca.root_certificate().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(running.addr).await.unwrap();
        connector.connect(name.clone(), tcp).await.unwrap()
    };

    // Silent after the handshake: closed (with or without close_notify), nothing sent.
    let mut silent = within(connect()).await;
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let _ = within(silent.read_to_end(&mut received)).await;
    assert!(received.is_empty(), "{received:?}");
    assert!(started.elapsed() >= idle / 2, "{:?}", started.elapsed());

    // One request answered, then quiet on the kept-alive connection: closed as well.
    let mut quiet = within(connect()).await;
    within(quiet.write_all(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"))
        .await
        .unwrap();
    let mut received = Vec::new();
    let _ = within(quiet.read_to_end(&mut received)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("spiffe_sequence"), "{text}");
}
