use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::ClientToken;
use crate::jwt::{BearerToken, TokenProvider};

/// Where a [`ClientTokenLayer`] takes its tokens from.
#[derive(Clone)]
pub(super) enum Source {
    Static(BearerToken),
    Provider(Arc<dyn TokenProvider>),
}

/// Attaches `Authorization: Bearer <token>` to every request, replacing any `Authorization`
/// header already there.
#[derive(Clone)]
pub struct ClientTokenLayer {
    source: Source,
}

impl ClientTokenLayer {
    /// Always the same token.
    pub fn new(token: BearerToken) -> Self {
        Self {
            source: Source::Static(token),
        }
    }

    /// A token from `provider` per request (wrap it in [`CachedTokenProvider`](crate::jwt::CachedTokenProvider) to cache).
    pub fn provider(provider: impl TokenProvider) -> Self {
        Self {
            source: Source::Provider(Arc::new(provider)),
        }
    }
}

impl fmt::Debug for ClientTokenLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Static(_) => "static",
            Source::Provider(_) => "provider",
        };
        f.debug_struct("ClientTokenLayer")
            .field("source", &source)
            .finish()
    }
}

impl<S> Layer<S> for ClientTokenLayer {
    type Service = ClientToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientToken {
            inner,
            source: self.source.clone(),
        }
    }
}
