//! tonic 0.14: serve gRPC over a [`SecureListener`], call over a [`SecureConnector`].
//!
//! ```no_run
//! # async fn run(channel: secure_channel::SecureChannel, routes: tonic::service::Routes)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! // Server: every request carries the caller's PeerIdentity in its extensions.
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! tonic::transport::Server::builder()
//!     .add_routes(routes)
//!     .serve_with_incoming(channel.listener(tcp)?.into_incoming())
//!     .await?;
//!
//! // Client: the scheme is `http` for tonic, but the connector always speaks mutual TLS.
//! let grpc = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051")
//!     .connect_with_connector(channel.connector())
//!     .await?;
//! # drop(grpc);
//! # Ok(())
//! # }
//! ```
//!
//! In a handler, [`RequestPeerExt::peer_identity`] gives the caller, or UNAUTHENTICATED.
//!
//! # Cut-off callers
//!
//! tonic's own server drives its connections, so when a caller stops being trusted (see
//! [`SecureChannelBuilder::cut_off_grace`](crate::SecureChannelBuilder::cut_off_grace)) its
//! connection is only closed hard, after the grace period. Serve the [`tonic::service::Routes`]
//! with [`integration::hyper::serve`](crate::integration::hyper::serve) instead and the
//! connection gets GOAWAY at once, the calls in flight finishing first:
//!
//! ```no_run
//! # async fn run(channel: secure_channel::SecureChannel, routes: tonic::service::Routes)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! secure_channel::integration::hyper::serve(channel.listener(tcp)?, routes).await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`SecureConnector`]: crate::transport::SecureConnector

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::net::TcpStream;

use crate::identity::PeerIdentity;
use crate::transport::{SecureListener, SecureStream};

impl tonic::transport::server::Connected for SecureStream<TcpStream> {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer_identity().clone()
    }
}

/// The stream of verified connections of a [`SecureListener`], for
/// `tonic::transport::Server::serve_with_incoming`.
#[derive(Debug)]
pub struct Incoming {
    listener: SecureListener,
}

impl SecureListener {
    /// The accepted connections as a stream, for `Server::serve_with_incoming`.
    pub fn into_incoming(self) -> Incoming {
        Incoming { listener: self }
    }
}

impl futures_core::Stream for Incoming {
    type Item = Result<SecureStream<TcpStream>, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.listener
            .poll_accept(cx)
            .map(|next| next.map(|(stream, _)| Ok(stream)))
    }
}

/// The caller's identity in a tonic handler.
pub trait RequestPeerExt {
    /// The verified identity of the caller, or UNAUTHENTICATED when the request did not arrive
    /// over a secure listener.
    fn peer_identity(&self) -> Result<&PeerIdentity, tonic::Status>;
}

impl<T> RequestPeerExt for tonic::Request<T> {
    fn peer_identity(&self) -> Result<&PeerIdentity, tonic::Status> {
        self.extensions()
            .get::<PeerIdentity>()
            .ok_or_else(|| tonic::Status::unauthenticated("no verified peer identity"))
    }
}

/// Rejections of this crate's layers answer with tonic's body type.
impl crate::layer::RejectionBody for tonic::body::Body {
    fn from_bytes(bytes: bytes::Bytes) -> Self {
        Self::new(http_body_util::Full::new(bytes))
    }
}
