//! A SPIFFE Workload API server for tests.
//!
//! [`WorkloadApiServer`] speaks the real Workload API protocol (gRPC over a
//! Unix domain socket), so code that reads its credentials through
//! `spiffe::X509Source` or `spiffe::JwtSource` can be tested without a SPIRE
//! agent. Implemented: `FetchX509SVID`, `FetchJWTSVID` (JWT-SVIDs signed by a
//! [`TokenIssuer`] set with [`WorkloadApiServer::set_jwt_authority`]) and
//! `FetchJWTBundles`; `FetchX509Bundles` and `ValidateJWTSVID` answer
//! `UNIMPLEMENTED`. Like SPIRE, every call lacking the
//! `workload.spiffe.io: true` metadata is refused with `INVALID_ARGUMENT`.
//!
//! ```no_run
//! # async fn demo(initial: secure_channel::testkit::workload_api::X509SvidResponse)
//! # -> std::io::Result<()> {
//! use secure_channel::testkit::workload_api::WorkloadApiServer;
//!
//! let server = WorkloadApiServer::start(initial).await?;
//! // Point `spiffe::X509Source::builder().endpoint(..)` (or
//! // SPIFFE_ENDPOINT_SOCKET) at `server.endpoint()`.
//! let _endpoint = server.endpoint();
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! JWT-SVIDs and JWT bundles: give the server a JWT authority for the
//! workload's trust domain; rotate by setting another one.
//!
//! ```no_run
//! # async fn demo(server: secure_channel::testkit::WorkloadApiServer)
//! # -> Result<(), secure_channel::testkit::TokenIssuerError> {
//! use secure_channel::jwt::Algorithm;
//! use secure_channel::testkit::TokenIssuer;
//!
//! server.set_jwt_authority("example.org", TokenIssuer::new("spire", "k1", Algorithm::ES256)?);
//! // FetchJWTSVID now answers JWT-SVIDs signed with `k1`; FetchJWTBundles
//! // streams `{"spiffe://example.org": <JWKS with k1>}`. Rotation:
//! server.set_jwt_authority("example.org", TokenIssuer::new("spire", "k2", Algorithm::ES256)?);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http;
use tonic::server::{NamedService, ServerStreamingService, UnaryService};
use tonic::{Status, transport::Server};
use tonic_prost::ProstCodec;

use crate::testkit::TokenIssuer;

/// gRPC metadata key that every Workload API call must carry with value `true`.
const SECURITY_HEADER: &str = "workload.spiffe.io";
/// Status message SPIRE uses when the security header is missing.
const SECURITY_HEADER_MISSING: &str = "security header missing from request";
/// gRPC path of `FetchX509SVID`.
const FETCH_X509_SVID_PATH: &str = "/SpiffeWorkloadAPI/FetchX509SVID";
/// gRPC path of `FetchJWTSVID`.
const FETCH_JWT_SVID_PATH: &str = "/SpiffeWorkloadAPI/FetchJWTSVID";
/// gRPC path of `FetchJWTBundles`.
const FETCH_JWT_BUNDLES_PATH: &str = "/SpiffeWorkloadAPI/FetchJWTBundles";
/// Lifetime of minted JWT-SVIDs unless [`WorkloadApiServer::set_jwt_svid_lifetime`] changes it
/// (SPIRE's default JWT-SVID TTL).
const DEFAULT_JWT_SVID_LIFETIME: Duration = Duration::from_secs(300);
/// How long [`WorkloadApiServer::shutdown`] waits for the server task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Hand-written protobuf messages of `workload.proto` (only those used here).
mod pb {
    use std::collections::HashMap;

    /// `X509SVIDRequest`: has no fields.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct X509svidRequest {}

    /// `X509SVIDResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct X509svidResponse {
        /// The SVIDs of the workload.
        #[prost(message, repeated, tag = "1")]
        pub(super) svids: Vec<X509svid>,
        /// DER encoded CRLs.
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub(super) crl: Vec<Vec<u8>>,
        /// Foreign bundles (concatenated DER) keyed by trust domain ID.
        #[prost(map = "string, bytes", tag = "3")]
        pub(super) federated_bundles: HashMap<String, Vec<u8>>,
    }

    /// `X509SVID`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct X509svid {
        /// The SPIFFE ID of the SVID.
        #[prost(string, tag = "1")]
        pub(super) spiffe_id: String,
        /// Concatenated DER certificate chain, leaf first.
        #[prost(bytes = "vec", tag = "2")]
        pub(super) x509_svid: Vec<u8>,
        /// PKCS#8 DER private key.
        #[prost(bytes = "vec", tag = "3")]
        pub(super) x509_svid_key: Vec<u8>,
        /// Concatenated DER CA certificates of the SVID's trust domain.
        #[prost(bytes = "vec", tag = "4")]
        pub(super) bundle: Vec<u8>,
        /// Operator-specified hint.
        #[prost(string, tag = "5")]
        pub(super) hint: String,
    }

    /// `JWTSVIDRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct JwtsvidRequest {
        /// The audiences the workload intends to authenticate against (required).
        #[prost(string, repeated, tag = "1")]
        pub(super) audience: Vec<String>,
        /// The requested SPIFFE ID; empty for all the workload's identities.
        #[prost(string, tag = "2")]
        pub(super) spiffe_id: String,
    }

    /// `JWTSVIDResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct JwtsvidResponse {
        /// The JWT-SVIDs.
        #[prost(message, repeated, tag = "1")]
        pub(super) svids: Vec<Jwtsvid>,
    }

    /// `JWTSVID`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Jwtsvid {
        /// The SPIFFE ID of the JWT-SVID.
        #[prost(string, tag = "1")]
        pub(super) spiffe_id: String,
        /// The token, in JWS compact serialization.
        #[prost(string, tag = "2")]
        pub(super) svid: String,
        /// Operator-specified hint.
        #[prost(string, tag = "3")]
        pub(super) hint: String,
    }

    /// `JWTBundlesRequest`: has no fields.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct JwtBundlesRequest {}

    /// `JWTBundlesResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct JwtBundlesResponse {
        /// JWKS documents keyed by trust domain ID (`spiffe://td`).
        #[prost(map = "string, bytes", tag = "1")]
        pub(super) bundles: HashMap<String, Vec<u8>>,
    }
}

/// The trust domain ID (`spiffe://td`) for a trust domain name; a name that
/// already starts with `spiffe://` is used as is.
fn trust_domain_id(trust_domain: &str) -> String {
    if trust_domain.starts_with("spiffe://") {
        trust_domain.to_owned()
    } else {
        format!("spiffe://{trust_domain}")
    }
}

/// One `FetchX509SVID` response: a single X.509-SVID with its trust bundle,
/// plus optional federated bundles.
pub struct X509SvidResponse {
    spiffe_id: String,
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: PrivatePkcs8KeyDer<'static>,
    bundle: Vec<CertificateDer<'static>>,
    federated: Vec<(String, Vec<CertificateDer<'static>>)>,
}

impl X509SvidResponse {
    /// One SVID: its SPIFFE ID string, its certificate chain (leaf first,
    /// DER), its PKCS#8 DER private key, and the bundle (DER CA certificates)
    /// of its own trust domain.
    pub fn new(
        spiffe_id: impl Into<String>,
        chain: Vec<CertificateDer<'static>>,
        key_pkcs8: PrivatePkcs8KeyDer<'static>,
        bundle: Vec<CertificateDer<'static>>,
    ) -> Self {
        Self {
            spiffe_id: spiffe_id.into(),
            chain,
            key_pkcs8,
            bundle,
            federated: Vec::new(),
        }
    }

    /// Adds a federated bundle for the trust domain named `trust_domain`
    /// (e.g. `"other.org"`). It is sent keyed by the trust domain ID
    /// (`"spiffe://other.org"`), as the protocol requires; a name that already
    /// starts with `spiffe://` is used as is.
    pub fn with_federated_bundle(
        mut self,
        trust_domain: impl Into<String>,
        bundle: Vec<CertificateDer<'static>>,
    ) -> Self {
        self.federated.push((trust_domain.into(), bundle));
        self
    }

    /// Builds the protobuf message sent on the wire.
    fn to_message(&self) -> pb::X509svidResponse {
        let federated_bundles = self
            .federated
            .iter()
            .map(|(td, certs)| (trust_domain_id(td), concat_der(certs)))
            .collect::<HashMap<_, _>>();
        pb::X509svidResponse {
            svids: vec![pb::X509svid {
                spiffe_id: self.spiffe_id.clone(),
                x509_svid: concat_der(&self.chain),
                x509_svid_key: self.key_pkcs8.secret_pkcs8_der().to_vec(),
                bundle: concat_der(&self.bundle),
                hint: String::new(),
            }],
            crl: Vec::new(),
            federated_bundles,
        }
    }
}

impl Clone for X509SvidResponse {
    fn clone(&self) -> Self {
        Self {
            spiffe_id: self.spiffe_id.clone(),
            chain: self.chain.clone(),
            key_pkcs8: self.key_pkcs8.clone_key(),
            bundle: self.bundle.clone(),
            federated: self.federated.clone(),
        }
    }
}

impl fmt::Debug for X509SvidResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509SvidResponse")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain_len", &self.chain.len())
            .field("bundle_len", &self.bundle.len())
            .field(
                "federated",
                &self.federated.iter().map(|(td, _)| td).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Concatenates DER certificates, as the Workload API encodes chains and bundles.
fn concat_der(certs: &[CertificateDer<'_>]) -> Vec<u8> {
    certs
        .iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect()
}

/// Who signs the JWT-SVIDs of each trust domain, and for how long they live.
struct JwtSigning {
    /// Signers by trust domain ID (`spiffe://td`).
    authorities: HashMap<String, Arc<TokenIssuer>>,
    lifetime: Duration,
}

/// The JWT side of the server: signers (read per `FetchJWTSVID` call) and the
/// bundles streamed by `FetchJWTBundles`.
struct JwtState {
    signing: Arc<Mutex<JwtSigning>>,
    /// JWKS documents by trust domain ID; the source of the bundles message.
    bundles: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Current `FetchJWTBundles` message; dropping it ends every open stream.
    stream: Option<watch::Sender<pb::JwtBundlesResponse>>,
}

impl JwtState {
    fn signing(&self) -> std::sync::MutexGuard<'_, JwtSigning> {
        self.signing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the bundles and sends the new message to every open stream (if
    /// anything changed).
    fn update_bundles(&self, change: impl FnOnce(&mut BTreeMap<String, Vec<u8>>)) {
        let mut bundles = self.bundles.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut bundles);
        let message = pb::JwtBundlesResponse {
            bundles: bundles
                .iter()
                .map(|(td, jwks)| (td.clone(), jwks.clone()))
                .collect(),
        };
        if let Some(stream) = &self.stream {
            stream.send_if_modified(|current| {
                if *current == message {
                    false
                } else {
                    *current = message;
                    true
                }
            });
        }
    }
}

/// A Workload API server on a Unix socket in a private temporary directory.
///
/// Dropping it shuts the server down (without waiting);
/// [`WorkloadApiServer::shutdown`] also waits for the server task.
pub struct WorkloadApiServer {
    socket_path: PathBuf,
    /// Current response; dropping it ends every open `FetchX509SVID` stream.
    current: Option<watch::Sender<pb::X509svidResponse>>,
    jwt: JwtState,
    refused: Arc<AtomicU64>,
    jwt_svid_calls: Arc<AtomicU64>,
    /// Dropping it starts the graceful shutdown of the server.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// Removed (with the socket) when the server is dropped.
    _dir: tempfile::TempDir,
}

impl WorkloadApiServer {
    /// Starts serving on a fresh Unix socket in a private temporary
    /// directory; the first response of every `FetchX509SVID` stream is
    /// `initial` (until [`rotate`](Self::rotate) replaces it).
    ///
    /// There is no JWT authority and no JWT bundle until
    /// [`set_jwt_authority`](Self::set_jwt_authority) or
    /// [`set_jwt_bundle`](Self::set_jwt_bundle) adds one.
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// Fails if the directory cannot be created or the socket cannot be bound.
    pub async fn start(initial: X509SvidResponse) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("workload-api-").tempdir()?;
        let socket_path = std::path::absolute(dir.path().join("agent.sock"))?;
        let listener = UnixListener::bind(&socket_path)?;

        let (current_tx, current_rx) = watch::channel(initial.to_message());
        let (bundles_tx, bundles_rx) = watch::channel(pb::JwtBundlesResponse::default());
        let signing = Arc::new(Mutex::new(JwtSigning {
            authorities: HashMap::new(),
            lifetime: DEFAULT_JWT_SVID_LIFETIME,
        }));
        let refused = Arc::new(AtomicU64::new(0));
        let jwt_svid_calls = Arc::new(AtomicU64::new(0));
        let service = WorkloadApiService {
            current: current_rx,
            jwt_bundles: bundles_rx,
            signing: Arc::clone(&signing),
            refused: Arc::clone(&refused),
            jwt_svid_calls: Arc::clone(&jwt_svid_calls),
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    // Either an explicit signal or the sender being dropped.
                    let _ = stop_rx.await;
                })
                .await
        });

        Ok(Self {
            socket_path,
            current: Some(current_tx),
            jwt: JwtState {
                signing,
                bundles: Mutex::new(BTreeMap::new()),
                stream: Some(bundles_tx),
            },
            refused,
            jwt_svid_calls,
            stop: Some(stop_tx),
            task: Some(task),
            _dir: dir,
        })
    }

    /// The path of the server's Unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The endpoint string for `SPIFFE_ENDPOINT_SOCKET` or
    /// `X509Source::builder().endpoint(..)`: `"unix:"` followed by the
    /// absolute socket path.
    pub fn endpoint(&self) -> String {
        format!("unix:{}", self.socket_path.display())
    }

    /// Replaces the response: every open `FetchX509SVID` stream receives it
    /// promptly, and new streams start with it. The SPIFFE ID of its SVID is
    /// also the subject of the JWT-SVIDs minted from then on.
    pub fn rotate(&self, next: X509SvidResponse) {
        if let Some(current) = &self.current {
            current.send_replace(next.to_message());
        }
    }

    /// Makes `issuer` the JWT authority of `trust_domain` (`"example.org"` or
    /// `"spiffe://example.org"`), replacing any previous one: its JWK set
    /// ([`TokenIssuer::jwt_bundle`]) becomes the trust domain's JWT bundle,
    /// sent promptly on every open `FetchJWTBundles` stream; and when it is
    /// the workload's own trust domain, `FetchJWTSVID` answers tokens signed
    /// with the issuer's first key (as [`TokenIssuer::token`] does, `kid` in
    /// the header, `typ: JWT`), with `sub` the workload's SPIFFE ID, `aud`
    /// the requested audiences, `iat` now and `exp` after the
    /// [JWT-SVID lifetime](Self::set_jwt_svid_lifetime).
    ///
    /// Setting a new issuer is a rotation of both the signing key and the
    /// bundle: tokens of the previous issuer no longer verify with the
    /// published bundle.
    pub fn set_jwt_authority(&self, trust_domain: &str, issuer: TokenIssuer) {
        let id = trust_domain_id(trust_domain);
        let jwks = issuer.jwt_bundle().into_bytes();
        self.jwt
            .signing()
            .authorities
            .insert(id.clone(), Arc::new(issuer));
        self.jwt.update_bundles(|bundles| {
            bundles.insert(id, jwks);
        });
    }

    /// Publishes `jwks` as the JWT bundle of `trust_domain` as is, without
    /// changing who signs: for a federated trust domain, or to send content
    /// a client must refuse (malformed JSON, keys it cannot use). An
    /// authority set for the trust domain keeps signing JWT-SVIDs.
    pub fn set_jwt_bundle(&self, trust_domain: &str, jwks: impl Into<Vec<u8>>) {
        let id = trust_domain_id(trust_domain);
        let jwks = jwks.into();
        self.jwt.update_bundles(|bundles| {
            bundles.insert(id, jwks);
        });
    }

    /// Removes the JWT bundle and the JWT authority of `trust_domain`;
    /// returns whether there was either.
    pub fn remove_jwt_authority(&self, trust_domain: &str) -> bool {
        let id = trust_domain_id(trust_domain);
        let signer = self.jwt.signing().authorities.remove(&id).is_some();
        let mut bundle = false;
        self.jwt.update_bundles(|bundles| {
            bundle = bundles.remove(&id).is_some();
        });
        signer || bundle
    }

    /// Sets the lifetime of the JWT-SVIDs minted from now on (default
    /// 5 minutes). `exp` is in whole seconds, so a token may live up to a
    /// second less.
    pub fn set_jwt_svid_lifetime(&self, lifetime: Duration) {
        self.jwt.signing().lifetime = lifetime;
    }

    /// Number of calls refused because the `workload.spiffe.io: true`
    /// metadata was missing (counted for every method).
    pub fn refused_calls(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Number of `FetchJWTSVID` calls that carried the security header,
    /// answered with a token or an error status.
    pub fn jwt_svid_calls(&self) -> u64 {
        self.jwt_svid_calls.load(Ordering::Relaxed)
    }

    /// Stops the server: ends open streams, stops accepting connections and
    /// waits (briefly) for the server task to finish. Dropping the server
    /// does the same without waiting.
    pub async fn shutdown(mut self) {
        self.signal_stop();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }

    /// Ends all streams and asks the server to shut down gracefully.
    fn signal_stop(&mut self) {
        // Dropping the watch senders makes every stream's forwarding task end.
        drop(self.current.take());
        drop(self.jwt.stream.take());
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for WorkloadApiServer {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

impl fmt::Debug for WorkloadApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let jwt_bundles: Vec<String> = self
            .jwt
            .bundles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        f.debug_struct("WorkloadApiServer")
            .field("socket_path", &self.socket_path)
            .field("refused_calls", &self.refused_calls())
            .field("jwt_svid_calls", &self.jwt_svid_calls())
            .field("jwt_bundles", &jwt_bundles)
            .field("running", &self.current.is_some())
            .finish()
    }
}

/// The tonic service for `SpiffeWorkloadAPI`, written the way generated code is.
#[derive(Clone)]
struct WorkloadApiService {
    current: watch::Receiver<pb::X509svidResponse>,
    jwt_bundles: watch::Receiver<pb::JwtBundlesResponse>,
    signing: Arc<Mutex<JwtSigning>>,
    refused: Arc<AtomicU64>,
    jwt_svid_calls: Arc<AtomicU64>,
}

impl NamedService for WorkloadApiService {
    const NAME: &'static str = "SpiffeWorkloadAPI";
}

/// Whether the request carries `workload.spiffe.io: true`.
fn has_security_header(headers: &http::HeaderMap) -> bool {
    headers
        .get(SECURITY_HEADER)
        .is_some_and(|v| v.as_bytes() == b"true")
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send + 'static>>;

impl Service<http::Request<Body>> for WorkloadApiService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if !has_security_header(req.headers()) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            let response = Status::invalid_argument(SECURITY_HEADER_MISSING).into_http();
            return Box::pin(async move { Ok(response) });
        }
        match req.uri().path() {
            FETCH_X509_SVID_PATH => {
                let method = FetchStream {
                    current: self.current.clone(),
                };
                Box::pin(async move {
                    let codec: ProstCodec<pb::X509svidResponse, pb::X509svidRequest> =
                        ProstCodec::default();
                    let mut grpc = tonic::server::Grpc::new(codec);
                    Ok(grpc.server_streaming(method, req).await)
                })
            }
            FETCH_JWT_SVID_PATH => {
                self.jwt_svid_calls.fetch_add(1, Ordering::Relaxed);
                let method = FetchJwtSvid {
                    current: self.current.clone(),
                    signing: Arc::clone(&self.signing),
                };
                Box::pin(async move {
                    let codec: ProstCodec<pb::JwtsvidResponse, pb::JwtsvidRequest> =
                        ProstCodec::default();
                    let mut grpc = tonic::server::Grpc::new(codec);
                    Ok(grpc.unary(method, req).await)
                })
            }
            FETCH_JWT_BUNDLES_PATH => {
                let method = FetchStream {
                    current: self.jwt_bundles.clone(),
                };
                Box::pin(async move {
                    let codec: ProstCodec<pb::JwtBundlesResponse, pb::JwtBundlesRequest> =
                        ProstCodec::default();
                    let mut grpc = tonic::server::Grpc::new(codec);
                    Ok(grpc.server_streaming(method, req).await)
                })
            }
            // FetchX509Bundles, ValidateJWTSVID and anything unknown.
            _ => {
                let response =
                    Status::unimplemented("not implemented by the test server").into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// A server-streaming handler (`FetchX509SVID`, `FetchJWTBundles`): streams
/// the current message, then every update.
struct FetchStream<M> {
    current: watch::Receiver<M>,
}

impl<Req, M> ServerStreamingService<Req> for FetchStream<M>
where
    M: Clone + Send + Sync + 'static,
{
    type Response = M;
    type ResponseStream = ReceiverStream<Result<M, Status>>;
    type Future = Ready<Result<tonic::Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, _request: tonic::Request<Req>) -> Self::Future {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(forward_updates(self.current.clone(), tx));
        ready(Ok(tonic::Response::new(ReceiverStream::new(rx))))
    }
}

/// Sends the current message, then each new one, until the client goes away
/// or the server stops (the watch sender is dropped).
async fn forward_updates<M: Clone>(
    mut current: watch::Receiver<M>,
    tx: mpsc::Sender<Result<M, Status>>,
) {
    loop {
        let message = current.borrow_and_update().clone();
        if tx.send(Ok(message)).await.is_err() {
            return;
        }
        tokio::select! {
            changed = current.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
}

/// The `FetchJWTSVID` handler: mints a JWT-SVID for the workload's SPIFFE ID.
struct FetchJwtSvid {
    current: watch::Receiver<pb::X509svidResponse>,
    signing: Arc<Mutex<JwtSigning>>,
}

impl UnaryService<pb::JwtsvidRequest> for FetchJwtSvid {
    type Response = pb::JwtsvidResponse;
    type Future = Ready<Result<tonic::Response<pb::JwtsvidResponse>, Status>>;

    fn call(&mut self, request: tonic::Request<pb::JwtsvidRequest>) -> Self::Future {
        let workload_id = self
            .current
            .borrow()
            .svids
            .first()
            .map(|svid| svid.spiffe_id.clone())
            .unwrap_or_default();
        let signing = self.signing.lock().unwrap_or_else(PoisonError::into_inner);
        ready(mint_jwt_svid(&signing, &workload_id, request.get_ref()).map(tonic::Response::new))
    }
}

/// Answers one `FetchJWTSVID` request the way SPIRE does: the audience is
/// required, and a requested SPIFFE ID other than the workload's is denied.
fn mint_jwt_svid(
    signing: &JwtSigning,
    workload_id: &str,
    request: &pb::JwtsvidRequest,
) -> Result<pb::JwtsvidResponse, Status> {
    if request.audience.is_empty() || request.audience.iter().any(String::is_empty) {
        return Err(Status::invalid_argument("audience must be specified"));
    }
    if !request.spiffe_id.is_empty() && request.spiffe_id != workload_id {
        return Err(Status::permission_denied("no identity issued"));
    }
    let spiffe_id = spiffe::SpiffeId::new(workload_id)
        .map_err(|_| Status::permission_denied("no identity issued"))?;
    let trust_domain = spiffe_id.trust_domain().id_string();
    let issuer = signing.authorities.get(&trust_domain).ok_or_else(|| {
        Status::unavailable(format!("no JWT authority for trust domain {trust_domain}"))
    })?;
    let audiences: Vec<&str> = request.audience.iter().map(String::as_str).collect();
    let token = issuer
        .token()
        .subject(workload_id)
        .audiences(&audiences)
        .expires_in(signing.lifetime)
        .typ("JWT")
        .sign()
        .map_err(|e| Status::internal(format!("signing the JWT-SVID failed: {e}")))?;
    Ok(pb::JwtsvidResponse {
        svids: vec![pb::Jwtsvid {
            spiffe_id: workload_id.to_owned(),
            svid: token,
            hint: String::new(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use futures_util_free::next;
    use spiffe::{TrustDomain, WorkloadApiClient};
    use tokio::time::timeout;
    use tonic::codegen::http::uri::PathAndQuery;

    use super::*;
    use crate::jwt::Algorithm;
    use crate::testkit::DevCa;

    const LIMIT: Duration = Duration::from_secs(20);
    const WORKLOAD: &str = "spiffe://example.org/web";

    /// Awaiting the next stream item without a `futures` dependency.
    mod futures_util_free {
        use std::future::poll_fn;
        use std::pin::Pin;

        use tokio_stream::Stream;

        pub(super) async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
            poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
        }
    }

    async fn server() -> WorkloadApiServer {
        let ca = DevCa::new("example.org").unwrap();
        let (response, _) = ca.workload_api_response(WORKLOAD).unwrap();
        WorkloadApiServer::start(response).await.unwrap()
    }

    fn issuer(kid: &str) -> TokenIssuer {
        TokenIssuer::new("spire", kid, Algorithm::ES256).unwrap()
    }

    async fn client(server: &WorkloadApiServer) -> WorkloadApiClient {
        timeout(LIMIT, WorkloadApiClient::connect_to(server.endpoint()))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn fetch_jwt_svid_mints_for_the_workload_and_audience() {
        let server = server().await;
        server.set_jwt_authority("example.org", issuer("k1"));
        let client = client(&server).await;
        let svid = timeout(LIMIT, client.fetch_jwt_svid(["api", "other"], None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(svid.spiffe_id().to_string(), WORKLOAD);
        assert_eq!(svid.audience(), ["api", "other"]);
        assert_eq!(svid.key_id(), "k1");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let exp = u64::try_from(svid.claims().exp()).unwrap();
        assert!(exp > now && exp <= now + 300, "exp {exp} now {now}");

        server.set_jwt_svid_lifetime(Duration::from_secs(30));
        let id = spiffe::SpiffeId::new(WORKLOAD).unwrap();
        let short = timeout(LIMIT, client.fetch_jwt_svid(["api"], Some(&id)))
            .await
            .unwrap()
            .unwrap();
        assert!(u64::try_from(short.claims().exp()).unwrap() <= now + 31);

        // Rotation: the new authority signs.
        server.set_jwt_authority("spiffe://example.org", issuer("k2"));
        let rotated = timeout(LIMIT, client.fetch_jwt_svid(["api"], None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rotated.key_id(), "k2");
        assert_eq!(server.jwt_svid_calls(), 3);
        assert_eq!(server.refused_calls(), 0);
        timeout(LIMIT, server.shutdown()).await.unwrap();
    }

    #[test]
    fn fetch_jwt_svid_refuses_like_spire() {
        let mut signing = JwtSigning {
            authorities: HashMap::new(),
            lifetime: DEFAULT_JWT_SVID_LIFETIME,
        };
        let request = |audience: &[&str], spiffe_id: &str| pb::JwtsvidRequest {
            audience: audience.iter().map(|a| (*a).to_owned()).collect(),
            spiffe_id: spiffe_id.to_owned(),
        };
        let code = |signing: &JwtSigning, request: &pb::JwtsvidRequest| {
            mint_jwt_svid(signing, WORKLOAD, request)
                .map(|_| ())
                .map_err(|s| s.code())
        };
        assert_eq!(
            code(&signing, &request(&["api"], "")),
            Err(tonic::Code::Unavailable),
            "no authority yet"
        );
        signing
            .authorities
            .insert("spiffe://example.org".into(), Arc::new(issuer("k1")));
        assert_eq!(code(&signing, &request(&["api"], "")), Ok(()));
        assert_eq!(code(&signing, &request(&["api"], WORKLOAD)), Ok(()));
        assert_eq!(
            code(&signing, &request(&[], "")),
            Err(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(&signing, &request(&[""], "")),
            Err(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            code(&signing, &request(&["api"], "spiffe://example.org/admin")),
            Err(tonic::Code::PermissionDenied),
            "another workload's identity is not issued"
        );
        // The authority of another trust domain never signs this workload's SVIDs.
        signing.authorities.clear();
        signing
            .authorities
            .insert("spiffe://other.org".into(), Arc::new(issuer("o1")));
        assert_eq!(
            code(&signing, &request(&["api"], "")),
            Err(tonic::Code::Unavailable)
        );
    }

    #[tokio::test]
    async fn fetch_jwt_bundles_streams_rotations() {
        let server = server().await;
        let first = issuer("k1");
        let first_jwks = first.jwt_bundle();
        server.set_jwt_authority("example.org", first);
        let client = client(&server).await;
        let mut stream = timeout(LIMIT, client.stream_jwt_bundles())
            .await
            .unwrap()
            .unwrap();
        let example = TrustDomain::new("example.org").unwrap();
        let other = TrustDomain::new("other.org").unwrap();

        let set = timeout(LIMIT, next(&mut stream))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let bundle = set.get(&example).unwrap();
        assert!(bundle.find_jwt_authority("k1").is_some());
        assert_eq!(set.len(), 1);

        server.set_jwt_authority("example.org", issuer("k2"));
        let set = timeout(LIMIT, next(&mut stream))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let bundle = set.get(&example).unwrap();
        assert!(bundle.find_jwt_authority("k2").is_some());
        assert!(
            bundle.find_jwt_authority("k1").is_none(),
            "k1 was rotated out"
        );

        server.set_jwt_bundle("other.org", first_jwks);
        let set = timeout(LIMIT, next(&mut stream))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(set.get(&other).unwrap().find_jwt_authority("k1").is_some());

        assert!(server.remove_jwt_authority("other.org"));
        assert!(!server.remove_jwt_authority("absent.org"));
        let set = timeout(LIMIT, next(&mut stream))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(set.get(&other).is_none());
        assert!(format!("{server:?}").contains("spiffe://example.org"));

        // Shutting down ends the stream.
        timeout(LIMIT, server.shutdown()).await.unwrap();
        let end = timeout(LIMIT, next(&mut stream)).await.unwrap();
        assert!(!matches!(end, Some(Ok(_))));
    }

    /// A message with no fields, enough to send a request and read a status.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Empty {}

    #[tokio::test]
    async fn jwt_methods_without_security_header_are_refused() {
        let server = server().await;
        server.set_jwt_authority("example.org", issuer("k1"));
        let channel = timeout(
            LIMIT,
            tonic::transport::Endpoint::from_shared(server.endpoint())
                .unwrap()
                .connect(),
        )
        .await
        .unwrap()
        .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        let unary = timeout(LIMIT, async {
            grpc.ready().await.unwrap();
            grpc.unary(
                tonic::Request::new(pb::JwtsvidRequest {
                    audience: vec!["api".into()],
                    spiffe_id: String::new(),
                }),
                PathAndQuery::from_static(FETCH_JWT_SVID_PATH),
                ProstCodec::<pb::JwtsvidRequest, pb::JwtsvidResponse>::default(),
            )
            .await
        })
        .await
        .unwrap()
        .expect_err("FetchJWTSVID without the header must be refused");
        assert_eq!(unary.code(), tonic::Code::InvalidArgument);
        assert_eq!(unary.message(), SECURITY_HEADER_MISSING);

        let streaming = timeout(LIMIT, async {
            grpc.ready().await.unwrap();
            grpc.server_streaming(
                tonic::Request::new(Empty {}),
                PathAndQuery::from_static(FETCH_JWT_BUNDLES_PATH),
                ProstCodec::<Empty, Empty>::default(),
            )
            .await
        })
        .await
        .unwrap()
        .expect_err("FetchJWTBundles without the header must be refused");
        assert_eq!(streaming.code(), tonic::Code::InvalidArgument);
        assert_eq!(server.refused_calls(), 2);
        assert_eq!(server.jwt_svid_calls(), 0, "refused calls mint nothing");
        drop(server);
    }
}
