use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, header};
use tower_service::Service;

use super::layer::Source;
use super::{ClientTokenLayer, ResponseFuture};
use crate::jwt::{BearerToken, TokenProviderError};

/// The service of [`ClientTokenLayer`].
#[derive(Clone)]
pub struct ClientToken<S> {
    pub(super) inner: S,
    pub(super) source: Source,
}

impl<S> ClientToken<S> {
    /// The layer with a static token (same as [`ClientTokenLayer::new`]).
    pub fn layer(token: BearerToken) -> ClientTokenLayer {
        ClientTokenLayer::new(token)
    }

    define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for ClientToken<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientToken")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

pub(super) fn attach<B>(request: &mut Request<B>, token: &BearerToken) {
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, token.header.clone());
}

impl<S, B> Service<Request<B>> for ClientToken<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<TokenProviderError>,
{
    type Response = S::Response;
    type Error = TokenProviderError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match &self.source {
            Source::Static(token) => {
                attach(&mut request, token);
                ResponseFuture::calling(self.inner.call(request))
            }
            Source::Provider(provider) => {
                let provider = Arc::clone(provider);
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::fetching(
                    Box::pin(async move { provider.token().await }),
                    service,
                    request,
                )
            }
        }
    }
}
