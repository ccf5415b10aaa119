//! Attaching a bearer token to outgoing requests: [`ClientTokenLayer`], [`ClientToken`] and its
//! [`ResponseFuture`].
//!
//! ```
//! use secure_channel::layer::{BearerToken, ClientTokenLayer};
//!
//! let layer = ClientTokenLayer::new(BearerToken::new("eyJhbGciOiJFUzI1NiJ9.e30.c2ln")?);
//! // Wrap the client of the secure connector with it: the token goes only to servers whose
//! // SPIFFE identity the connector verified.
//! # let _ = layer;
//! # Ok::<(), secure_channel::layer::TokenProviderError>(())
//! ```
//!
//! # Security
//!
//! The layer replaces any `Authorization` header already on the request, so a header carried
//! over from an incoming request is never forwarded in place of this workload's token. Put it
//! inside the secure connector's client, so tokens are sent only after the server's identity
//! was verified.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, header};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::jwt::{BearerToken, TokenProvider, TokenProviderError};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Clone)]
enum Source {
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

/// The service of [`ClientTokenLayer`].
#[derive(Clone)]
pub struct ClientToken<S> {
    inner: S,
    source: Source,
}

impl<S> ClientToken<S> {
    /// The layer with a static token (same as [`ClientTokenLayer::new`]).
    pub fn layer(token: BearerToken) -> ClientTokenLayer {
        ClientTokenLayer::new(token)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for ClientToken<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientToken")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn attach<B>(request: &mut Request<B>, token: &BearerToken) {
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
        let state = match &self.source {
            Source::Static(token) => {
                attach(&mut request, token);
                State::Calling {
                    future: self.inner.call(request),
                }
            }
            Source::Provider(provider) => {
                let provider = Arc::clone(provider);
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                State::Fetching {
                    token: Box::pin(async move { provider.token().await }),
                    pending: Some((service, request)),
                }
            }
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The response future of [`ClientToken`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Fetching {
            token: BoxFuture<'static, Result<BearerToken, TokenProviderError>>,
            pending: Option<(S, Request<B>)>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Fetching { .. } => "fetching token",
            State::Calling { .. } => "calling",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<TokenProviderError>,
{
    type Output = Result<S::Response, TokenProviderError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Calling { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
                StateProj::Fetching { token, pending } => {
                    let token = ready!(token.as_mut().poll(cx))?;
                    let Some((mut service, mut request)) = pending.take() else {
                        return Poll::Ready(Err("response future polled after completion".into()));
                    };
                    attach(&mut request, &token);
                    State::Calling {
                        future: service.call(request),
                    }
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use tower::ServiceExt;

    use super::*;
    use crate::jwt::CachedTokenProvider;

    const STEP: Duration = Duration::from_secs(5);

    fn echo_auth() -> impl Service<
        Request<()>,
        Response = Option<String>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone {
        tower::service_fn(|request: Request<()>| async move {
            Ok(request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned))
        })
    }

    fn jwt_with_exp(exp: u64) -> String {
        let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        format!("eyJhbGciOiJFUzI1NiJ9.{payload}.c2ln")
    }

    #[tokio::test]
    async fn static_token_replaces_existing_header() {
        let token = BearerToken::new(" abc.def.ghi\n").unwrap();
        assert!(!format!("{token:?}").contains("abc"));
        let service = ClientTokenLayer::new(token).layer(echo_auth());
        let request = Request::builder()
            .header(header::AUTHORIZATION, "Bearer forwarded")
            .body(())
            .unwrap();
        let seen = tokio::time::timeout(STEP, service.oneshot(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen.as_deref(), Some("Bearer abc.def.ghi"));
        assert!(BearerToken::new("  ").is_err());
        assert!(BearerToken::new("a\nb").is_err());
    }

    /// The layer is ready only when the inner service is (back-pressure passes through), and
    /// the Debug forms say where the token comes from without showing it.
    #[tokio::test]
    async fn readiness_is_the_inner_services_and_debug_forms_hide_the_token() {
        use crate::layer::test_support::{NeverReady, is_ready};

        let layer = ClientTokenLayer::new(BearerToken::new("abc.def.ghi").unwrap());
        let mut never = layer.layer(NeverReady);
        assert!(!is_ready::<_, Request<()>>(&mut never).await);
        assert!(is_ready(&mut layer.layer(echo_auth())).await);

        assert_eq!(
            format!("{layer:?}"),
            r#"ClientTokenLayer { source: "static" }"#
        );
        assert_eq!(
            format!("{never:?}"),
            "ClientToken { inner: NeverReady, .. }"
        );
        let future = never.call(Request::new(()));
        assert_eq!(
            format!("{future:?}"),
            r#"ResponseFuture { state: "calling" }"#
        );

        let provided = ClientTokenLayer::provider(Failing);
        assert_eq!(
            format!("{provided:?}"),
            r#"ClientTokenLayer { source: "provider" }"#
        );
        let future = provided.layer(NeverReady).call(Request::new(()));
        assert_eq!(
            format!("{future:?}"),
            r#"ResponseFuture { state: "fetching token" }"#
        );
    }

    struct Counting {
        calls: Arc<AtomicUsize>,
        lifetime: u64,
        fail: bool,
    }

    impl TokenProvider for Counting {
        fn token(&self) -> BoxFuture<'_, Result<BearerToken, TokenProviderError>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail && n > 0;
            let exp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + self.lifetime;
            Box::pin(async move {
                if fail {
                    return Err("issuer down".into());
                }
                BearerToken::new(jwt_with_exp(exp))
            })
        }
    }

    #[tokio::test]
    async fn provider_tokens_are_cached_until_near_expiry() {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = CachedTokenProvider::new(Counting {
            calls: calls.clone(),
            lifetime: 3600,
            fail: false,
        });
        let layer = ClientTokenLayer::provider(provider);
        for _ in 0..5 {
            let seen =
                tokio::time::timeout(STEP, layer.layer(echo_auth()).oneshot(Request::new(())))
                    .await
                    .unwrap()
                    .unwrap();
            assert!(seen.unwrap().starts_with("Bearer eyJ"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A token inside its refresh margin is fetched again; a failed fetch falls back to the
        // still-valid cached token.
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = CachedTokenProvider::new(Counting {
            calls: calls.clone(),
            lifetime: 20,
            fail: true,
        });
        let first = tokio::time::timeout(STEP, provider.token()).await.unwrap();
        let second = tokio::time::timeout(STEP, provider.token()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            first.unwrap().header,
            second.unwrap().header,
            "cached token used when the refresh fails"
        );
    }

    struct Failing;

    impl TokenProvider for Failing {
        fn token(&self) -> BoxFuture<'_, Result<BearerToken, TokenProviderError>> {
            Box::pin(async { Err("no token".into()) })
        }
    }

    #[tokio::test]
    async fn provider_failure_is_an_error_not_a_tokenless_request() {
        let service = ClientTokenLayer::provider(Failing).layer(echo_auth());
        let result = tokio::time::timeout(STEP, service.oneshot(Request::new(())))
            .await
            .unwrap();
        assert!(result.is_err());
    }
}
