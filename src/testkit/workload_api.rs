//! A SPIFFE Workload API server for tests.
//!
//! [`WorkloadApiServer`] speaks the real Workload API protocol (gRPC over a
//! Unix domain socket), so code that reads its credentials through
//! `spiffe::X509Source` can be tested without a SPIRE agent. Only
//! `FetchX509SVID` is implemented; the other methods answer `UNIMPLEMENTED`.
//! Like SPIRE, every call lacking the `workload.spiffe.io: true` metadata is
//! refused with `INVALID_ARGUMENT`.
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

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
use tonic::server::{NamedService, ServerStreamingService};
use tonic::{Status, transport::Server};
use tonic_prost::ProstCodec;

/// gRPC metadata key that every Workload API call must carry with value `true`.
const SECURITY_HEADER: &str = "workload.spiffe.io";
/// Status message SPIRE uses when the security header is missing.
const SECURITY_HEADER_MISSING: &str = "security header missing from request";
/// gRPC path of the only implemented method.
const FETCH_X509_SVID_PATH: &str = "/SpiffeWorkloadAPI/FetchX509SVID";
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
            .map(|(td, certs)| {
                let id = if td.starts_with("spiffe://") {
                    td.clone()
                } else {
                    format!("spiffe://{td}")
                };
                (id, concat_der(certs))
            })
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

/// A Workload API server on a Unix socket in a private temporary directory.
///
/// Dropping it shuts the server down (without waiting);
/// [`WorkloadApiServer::shutdown`] also waits for the server task.
pub struct WorkloadApiServer {
    socket_path: PathBuf,
    /// Current response; dropping it ends every open `FetchX509SVID` stream.
    current: Option<watch::Sender<pb::X509svidResponse>>,
    refused: Arc<AtomicU64>,
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
        let refused = Arc::new(AtomicU64::new(0));
        let service = WorkloadApiService {
            current: current_rx,
            refused: Arc::clone(&refused),
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
            refused,
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
    /// promptly, and new streams start with it.
    pub fn rotate(&self, next: X509SvidResponse) {
        if let Some(current) = &self.current {
            current.send_replace(next.to_message());
        }
    }

    /// Number of calls refused because the `workload.spiffe.io: true`
    /// metadata was missing (counted for every method; in practice these are
    /// `FetchX509SVID` calls).
    pub fn refused_calls(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
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
        // Dropping the watch sender makes every stream's forwarding task end.
        drop(self.current.take());
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
        f.debug_struct("WorkloadApiServer")
            .field("socket_path", &self.socket_path)
            .field("refused_calls", &self.refused_calls())
            .field("running", &self.current.is_some())
            .finish()
    }
}

/// The tonic service for `SpiffeWorkloadAPI`, written the way generated code is.
#[derive(Clone)]
struct WorkloadApiService {
    current: watch::Receiver<pb::X509svidResponse>,
    refused: Arc<AtomicU64>,
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
                let method = FetchX509Svid {
                    current: self.current.clone(),
                };
                Box::pin(async move {
                    let codec: ProstCodec<pb::X509svidResponse, pb::X509svidRequest> =
                        ProstCodec::default();
                    let mut grpc = tonic::server::Grpc::new(codec);
                    Ok(grpc.server_streaming(method, req).await)
                })
            }
            // FetchX509Bundles, FetchJWTSVID, FetchJWTBundles, ValidateJWTSVID
            // and anything unknown.
            _ => {
                let response =
                    Status::unimplemented("not implemented by the test server").into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

/// The `FetchX509SVID` handler: streams the current response, then every update.
struct FetchX509Svid {
    current: watch::Receiver<pb::X509svidResponse>,
}

type SvidStream = ReceiverStream<Result<pb::X509svidResponse, Status>>;

impl ServerStreamingService<pb::X509svidRequest> for FetchX509Svid {
    type Response = pb::X509svidResponse;
    type ResponseStream = SvidStream;
    type Future = Ready<Result<tonic::Response<SvidStream>, Status>>;

    fn call(&mut self, _request: tonic::Request<pb::X509svidRequest>) -> Self::Future {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(forward_updates(self.current.clone(), tx));
        ready(Ok(tonic::Response::new(ReceiverStream::new(rx))))
    }
}

/// Sends the current response, then each new one, until the client goes away
/// or the server stops (the watch sender is dropped).
async fn forward_updates(
    mut current: watch::Receiver<pb::X509svidResponse>,
    tx: mpsc::Sender<Result<pb::X509svidResponse, Status>>,
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
