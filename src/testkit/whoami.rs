//! A minimal gRPC service, `whoami.WhoAmI/Get`, that answers with the caller's SPIFFE ID: for
//! smoke-testing mutual TLS with tonic without code generation.
//!
//! The messages are `message GetRequest {}` and `message GetResponse { string spiffe_id = 1; }`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::identity::PeerIdentity;

const GET_PATH: &str = "/whoami.WhoAmI/Get";

/// `GetRequest`: no fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetRequest {}

/// `GetResponse`: the caller's SPIFFE ID as the server saw it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetResponse {
    /// The caller's SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
}

/// The server side: add it with `Server::builder().add_service(WhoAmIService)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhoAmIService;

impl NamedService for WhoAmIService {
    const NAME: &'static str = "whoami.WhoAmI";
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = Result<T, Infallible>> + Send>>;

impl Service<http::Request<Body>> for WhoAmIService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != GET_PATH {
            let response = Status::unimplemented("unknown method").into_http();
            return Box::pin(async move { Ok(response) });
        }
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<GetResponse, GetRequest>::default());
            Ok(grpc.unary(Get, request).await)
        })
    }
}

struct Get;

impl UnaryService<GetRequest> for Get {
    type Response = GetResponse;
    type Future = Ready<Result<Response<GetResponse>, Status>>;

    fn call(&mut self, request: Request<GetRequest>) -> Self::Future {
        ready(match request.extensions().get::<PeerIdentity>() {
            Some(peer) => Ok(Response::new(GetResponse {
                spiffe_id: peer.spiffe_id().to_string(),
            })),
            None => Err(Status::unauthenticated("no verified peer identity")),
        })
    }
}

/// The client side: calls `Get` on `channel` and returns the SPIFFE ID the server saw.
pub async fn whoami(channel: tonic::transport::Channel) -> Result<String, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(GET_PATH);
    let response = grpc
        .unary(
            Request::new(GetRequest {}),
            path,
            ProstCodec::<GetRequest, GetResponse>::default(),
        )
        .await?;
    Ok(response.into_inner().spiffe_id)
}
