use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tower::ServiceExt;

use http::{Request, header};
use tower_layer::Layer;
use tower_service::Service;

use super::ClientTokenLayer;
use crate::jwt::{BearerToken, CachedTokenProvider, TokenProvider, TokenProviderError};
use crate::layer::test_support::second_poll_panic;

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

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
        let seen = tokio::time::timeout(STEP, layer.layer(echo_auth()).oneshot(Request::new(())))
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

/// Polled again after it returned, the future panics naming itself: with a static token, with
/// a provider's token, and after the provider failed.
#[tokio::test]
async fn a_response_future_polled_after_completion_panics() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layers = [
        ClientTokenLayer::new(BearerToken::new("abc.def.ghi").unwrap()),
        ClientTokenLayer::provider(Counting {
            calls: calls.clone(),
            lifetime: 3600,
            fail: false,
        }),
        ClientTokenLayer::provider(Failing),
    ];
    for layer in layers {
        let mut service = layer.layer(echo_auth());
        let future = service.call(Request::new(()));
        let message = tokio::time::timeout(STEP, second_poll_panic(future))
            .await
            .unwrap();
        assert_eq!(
            message, "`layer::client_token::ResponseFuture` polled after completion",
            "{layer:?}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
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
