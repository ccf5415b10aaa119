use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use tokio::sync::Semaphore;
use tower::{ServiceExt, service_fn};
use tower_layer::Layer;
use tower_service::Service;

use super::{Limit, Rate, RateLimitError, RateLimitLayer};
use crate::identity::PeerIdentity;
use crate::layer::test_support::second_poll_panic;
use crate::layer::{LimitReason, LimitSource, Rejection, RejectionKind};
use crate::limit::LimitClock;

const A: &str = "spiffe://example.org/a";
const B: &str = "spiffe://example.org/b";

fn request(caller: Option<&str>) -> Request<String> {
    let mut request = Request::builder()
        .uri("/orders/1")
        .body(String::new())
        .unwrap();
    if let Some(caller) = caller {
        request
            .extensions_mut()
            .insert(PeerIdentity::for_tests(caller));
    }
    request
}

fn grpc_request(caller: &str) -> Request<String> {
    let mut request = request(Some(caller));
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    request
}

async fn ok(_: Request<String>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("ok".to_owned()))
}

/// The status of `caller`'s request through `layer`.
async fn status(layer: &RateLimitLayer, caller: &str) -> StatusCode {
    call(layer, request(Some(caller))).await.status()
}

async fn call(layer: &RateLimitLayer, request: Request<String>) -> Response<String> {
    layer.layer(service_fn(ok)).oneshot(request).await.unwrap()
}

fn limit_of(response: &Response<String>) -> (LimitSource, String, LimitReason) {
    let limit = response
        .extensions()
        .get::<Rejection>()
        .and_then(Rejection::limit_exceeded)
        .unwrap_or_else(|| panic!("no limit in {response:?}"));
    (limit.source(), limit.name().to_owned(), limit.reason())
}

#[tokio::test]
async fn a_caller_over_its_rate_gets_429_and_others_do_not() {
    let clock = LimitClock::manual();
    let layer = RateLimitLayer::builder()
        .rate(Rate::per_second(2).burst(2))
        .clock(clock.clone())
        .build()
        .unwrap();
    assert_eq!(status(&layer, A).await, StatusCode::OK);
    assert_eq!(status(&layer, A).await, StatusCode::OK);
    let refused = call(&layer, request(Some(A))).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
    assert_eq!(
        refused.body(),
        r#"{"error":"too_many_requests","error_description":"too many requests: retry later"}"#
    );
    assert_eq!(
        limit_of(&refused),
        (LimitSource::Layer, "default".into(), LimitReason::Rate)
    );
    let limit = refused
        .extensions()
        .get::<Rejection>()
        .and_then(Rejection::limit_exceeded)
        .unwrap();
    assert_eq!(limit.retry_after(), Duration::from_millis(500));

    // Another caller is not affected.
    assert_eq!(status(&layer, B).await, StatusCode::OK);
    // Half a second later, one more for A.
    clock.advance(Duration::from_millis(500));
    assert_eq!(status(&layer, A).await, StatusCode::OK);
    assert_eq!(status(&layer, A).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(layer.tracked_callers(), 2);
    assert_eq!(layer.max_callers(), 100_000);
}

#[tokio::test]
async fn grpc_callers_get_resource_exhausted() {
    let layer = RateLimitLayer::builder()
        .rate(Rate::per_hour(1))
        .clock(LimitClock::manual())
        .build()
        .unwrap();
    assert_eq!(call(&layer, grpc_request(A)).await.status(), StatusCode::OK);
    let refused = call(&layer, grpc_request(A)).await;
    assert_eq!(refused.status(), StatusCode::OK);
    assert_eq!(refused.headers()["grpc-status"], "8");
    assert_eq!(refused.headers()["grpc-retry-pushback-ms"], "3600000");
}

#[tokio::test]
async fn a_request_without_identity_is_refused() {
    let layer = RateLimitLayer::builder()
        .rate(Rate::per_second(1000))
        .build()
        .unwrap();
    let response = call(&layer, request(None)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response
            .extensions()
            .get::<Rejection>()
            .map(Rejection::kind),
        Some(RejectionKind::MissingPeerIdentity)
    );
    assert_eq!(layer.tracked_callers(), 0);
}

/// The most specific override wins: an exact ID over a longer prefix over a shorter prefix
/// over the trust domain; what an override leaves unset is the default's; callers of another
/// trust domain get the default.
#[tokio::test]
async fn the_most_specific_override_applies() {
    let layer = RateLimitLayer::builder()
        .rate(Rate::per_hour(1))
        .limit_for(
            "domain",
            "spiffe://example.org",
            Limit::new().rate(Rate::per_hour(2)),
        )
        .limit_for(
            "batch",
            "spiffe://example.org/batch/*",
            Limit::new().rate(Rate::per_hour(3)),
        )
        .limit_for(
            "nightly",
            "spiffe://example.org/batch/nightly/*",
            Limit::new().rate(Rate::per_hour(4)),
        )
        .limit_for(
            "one",
            "spiffe://example.org/batch/nightly/one",
            Limit::new().rate(Rate::per_hour(5)),
        )
        .clock(LimitClock::manual())
        .build()
        .unwrap();
    for (caller, allowed, name) in [
        ("spiffe://other.org/x", 1, "default"),
        ("spiffe://example.org/web", 2, "domain"),
        ("spiffe://example.org/batch", 2, "domain"),
        ("spiffe://example.org/batch/report", 3, "batch"),
        ("spiffe://example.org/batch/nightly/two", 4, "nightly"),
        ("spiffe://example.org/batch/nightly/one", 5, "one"),
    ] {
        for n in 0..allowed {
            assert_eq!(
                status(&layer, caller).await,
                StatusCode::OK,
                "{caller} #{n}"
            );
        }
        let refused = call(&layer, request(Some(caller))).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "{caller}");
        assert_eq!(limit_of(&refused).1, name, "{caller}");
    }
}

#[tokio::test]
async fn an_override_inherits_what_it_leaves_unset() {
    let layer = RateLimitLayer::builder()
        .concurrency(1)
        .rate(Rate::per_hour(1))
        .limit_for(
            "batch",
            "spiffe://example.org/batch/*",
            Limit::new().rate(Rate::per_hour(10)),
        )
        .clock(LimitClock::manual())
        .build()
        .unwrap();
    let (release, service) = held_service();
    let batch = "spiffe://example.org/batch/x";
    let mut held = layer.layer(service.clone());
    let first = tokio::spawn(held.call(request(Some(batch))));
    let refused = layer
        .layer(service_fn(ok))
        .oneshot(request(Some(batch)))
        .await
        .unwrap();
    assert_eq!(
        limit_of(&refused),
        (LimitSource::Layer, "batch".into(), LimitReason::Concurrency)
    );
    release.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(status(&layer, batch).await, StatusCode::OK);
}

type Held = tower::util::BoxCloneService<Request<String>, Response<String>, Infallible>;

/// A service whose responses wait for the test to release them (`add_permits`).
fn held_service() -> (Arc<Semaphore>, Held) {
    let release = Arc::new(Semaphore::new(0));
    let signal = Arc::clone(&release);
    let service = service_fn(move |_: Request<String>| {
        let signal = Arc::clone(&signal);
        async move {
            if let Ok(permit) = signal.acquire().await {
                permit.forget();
            }
            Ok::<_, Infallible>(Response::new("released".to_owned()))
        }
    });
    (release, Held::new(service))
}

/// In flight: counted from admission until the response future completes or is dropped.
#[tokio::test]
async fn concurrency_counts_until_the_response_or_its_drop() {
    let layer = RateLimitLayer::builder()
        .concurrency(2)
        .clock(LimitClock::manual())
        .build()
        .unwrap();
    let (release, service) = held_service();
    let mut service = layer.layer(service);
    let first = service.call(request(Some(A)));
    let second = service.call(request(Some(A)));
    let refused = call(&layer, request(Some(A))).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
    assert_eq!(
        refused.body(),
        r#"{"error":"too_many_requests","error_description":"too many requests in flight: retry later"}"#
    );
    assert_eq!(
        limit_of(&refused),
        (
            LimitSource::Layer,
            "default".into(),
            LimitReason::Concurrency
        )
    );
    // Another caller has its own count.
    assert_eq!(status(&layer, B).await, StatusCode::OK);

    // A dropped future (the client went away) gives its place back.
    drop(first);
    let third = service.call(request(Some(A)));
    assert_eq!(status(&layer, A).await, StatusCode::TOO_MANY_REQUESTS);
    // A completed one too.
    let second = tokio::spawn(second);
    let third = tokio::spawn(third);
    release.add_permits(2);
    assert_eq!(second.await.unwrap().unwrap().body(), "released");
    assert_eq!(third.await.unwrap().unwrap().body(), "released");
    assert_eq!(status(&layer, A).await, StatusCode::OK);
}

#[tokio::test]
async fn the_total_limits_all_callers_together() {
    let layer = RateLimitLayer::builder()
        .rate(Rate::per_hour(2))
        .total_rate(Rate::per_hour(3))
        .clock(LimitClock::manual())
        .build()
        .unwrap();
    assert_eq!(status(&layer, A).await, StatusCode::OK);
    assert_eq!(status(&layer, A).await, StatusCode::OK);
    // A is over its own limit: refused by it, without using up the total.
    assert_eq!(
        limit_of(&call(&layer, request(Some(A))).await),
        (LimitSource::Layer, "default".into(), LimitReason::Rate)
    );
    assert_eq!(status(&layer, B).await, StatusCode::OK);
    let refused = call(&layer, request(Some(B))).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        limit_of(&refused),
        (LimitSource::Layer, "total".into(), LimitReason::Total)
    );
    assert_eq!(refused.headers()[header::RETRY_AFTER], "1200");

    // A total alone keeps no per-caller state.
    let total_only = RateLimitLayer::builder()
        .total_rate(Rate::per_hour(1))
        .clock(LimitClock::manual())
        .build()
        .unwrap();
    assert_eq!(status(&total_only, A).await, StatusCode::OK);
    assert_eq!(status(&total_only, B).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        (total_only.tracked_callers(), total_only.max_callers()),
        (0, 0)
    );
}

#[tokio::test]
async fn a_full_layer_refuses_new_callers() {
    let layer = RateLimitLayer::builder()
        .rate(Rate::per_hour(10))
        .max_callers(1)
        .clock(LimitClock::manual())
        .build()
        .unwrap();
    assert_eq!(status(&layer, A).await, StatusCode::OK);
    let refused = call(&layer, request(Some(B))).await;
    assert_eq!(
        limit_of(&refused),
        (LimitSource::Layer, "default".into(), LimitReason::Capacity)
    );
    assert_eq!(status(&layer, A).await, StatusCode::OK);
}

#[test]
fn invalid_limits_are_refused_when_built() {
    let build = |builder: super::RateLimitBuilder| builder.build().unwrap_err();
    let base = || RateLimitLayer::builder().rate(Rate::per_second(10));
    assert!(matches!(
        build(RateLimitLayer::builder()),
        RateLimitError::NoLimit
    ));
    assert!(matches!(
        build(RateLimitLayer::builder().rate(Rate::per_second(0))),
        RateLimitError::ZeroRate { limit } if limit == "default"
    ));
    assert!(matches!(
        build(base().total_rate(Rate::per_minute(0))),
        RateLimitError::ZeroRate { limit } if limit == "total"
    ));
    assert!(matches!(
        build(RateLimitLayer::builder().rate(Rate::per_second(5).burst(0))),
        RateLimitError::ZeroBurst { limit } if limit == "default"
    ));
    assert!(matches!(
        build(base().concurrency(0)),
        RateLimitError::ZeroConcurrency { limit } if limit == "default"
    ));
    assert!(matches!(
        build(base().limit_for("batch", "spiffe://example.org/batch/*", Limit::new().concurrency(0))),
        RateLimitError::ZeroConcurrency { limit } if limit == "batch"
    ));
    let error = build(base().limit_for("batch", "spiffe://example.org/bat*", Limit::new()));
    assert!(
        matches!(&error, RateLimitError::InvalidMatcher { limit, .. } if limit == "batch"),
        "{error}"
    );
    assert!(
        error.to_string().contains("spiffe://example.org/bat*"),
        "{error}"
    );
    let error = build(
        base()
            .limit_for("one", "spiffe://example.org/x", Limit::new())
            .limit_for("two", "spiffe://example.org/x", Limit::new()),
    );
    assert!(
        matches!(&error, RateLimitError::DuplicateMatcher { limit, previous, .. } if limit == "two" && previous == "one"),
        "{error}"
    );
    for name in ["", "default", "total", "has space", &"x".repeat(65)] {
        assert!(
            matches!(
                build(base().limit_for(name, "spiffe://example.org/x", Limit::new())),
                RateLimitError::InvalidName { .. }
            ),
            "{name:?}"
        );
    }
    // An override with nothing to limit, and no default to take it from.
    let error = build(RateLimitLayer::builder().limit_for(
        "batch",
        "spiffe://example.org/batch/*",
        Limit::new(),
    ));
    assert!(
        matches!(error, RateLimitError::EmptyLimit { .. }),
        "{error}"
    );
    // With a default, the same override is the default's limit under its own name.
    assert!(
        base()
            .limit_for("batch", "spiffe://example.org/batch/*", Limit::new())
            .build()
            .is_ok()
    );
}

/// Refusals are counted by limit name and reason, never by caller; audit lines are sampled,
/// at most one a second per limit, the next saying how many were held back.
#[tokio::test]
async fn refusals_are_counted_by_limit_and_logged_sampled() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use tracing_subscriber::layer::SubscriberExt;

    let lines = AuditLines::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(lines.clone()));
    let clock = LimitClock::manual();
    let layer = RateLimitLayer::builder()
        .rate(Rate::per_hour(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _recorder = metrics::set_default_local_recorder(&recorder);
    for caller in [A, B] {
        assert_eq!(status(&layer, caller).await, StatusCode::OK);
    }
    for _ in 0..50 {
        assert_eq!(status(&layer, A).await, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status(&layer, B).await, StatusCode::TOO_MANY_REQUESTS);
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(status(&layer, B).await, StatusCode::TOO_MANY_REQUESTS);

    let snapshot = snapshotter.snapshot().into_vec();
    let counted: Vec<_> = snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == crate::telemetry::RATE_LIMITED)
        .map(|(key, _, _, value)| {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let count = match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            };
            (labels, count)
        })
        .collect();
    assert_eq!(
        counted,
        vec![(
            vec![
                "source=layer".to_owned(),
                "limit=default".to_owned(),
                "reason=rate".to_owned()
            ],
            101
        )]
    );

    let logged = lines.0.lock().unwrap().clone();
    assert_eq!(logged.len(), 2, "{logged:#?}");
    assert!(logged[0].contains(&format!("caller={A}")), "{}", logged[0]);
    assert!(logged[0].contains("suppressed=0"), "{}", logged[0]);
    assert!(logged[0].contains("limit=\"default\""), "{}", logged[0]);
    assert!(logged[1].contains("suppressed=99"), "{}", logged[1]);
}

/// The audit events (target `secure_channel::authz`) of the test's thread, as text.
#[derive(Clone, Default)]
pub(crate) struct AuditLines(pub(crate) Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AuditLines {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        if event.metadata().target() == crate::authz::AUDIT_TARGET {
            let mut text = Text(String::new());
            event.record(&mut text);
            self.0.lock().unwrap().push(text.0);
        }
    }
}

#[tokio::test]
async fn a_custom_responder_sees_the_limit() {
    let layer = RateLimitLayer::builder()
        .rate(Rate::per_hour(1))
        .clock(LimitClock::manual())
        .build()
        .unwrap()
        .responder(|rejection: &Rejection, _grpc: bool| {
            let limit = rejection.limit_exceeded().unwrap();
            let mut response = Response::new(bytes::Bytes::from(format!(
                "slow down: {} {}s",
                limit.name(),
                limit.retry_after_secs()
            )));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        });
    let mut service = layer.layer(service_fn(ok));
    let first = service.call(request(Some(A))).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let refused = service.call(request(Some(A))).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.body(), "slow down: default 3600s");
    assert!(refused.extensions().get::<Rejection>().is_some());
}

#[tokio::test]
async fn a_response_future_polled_after_completion_panics_and_debug_forms() {
    let layer = RateLimitLayer::builder()
        .rate(Rate::per_hour(1))
        .clock(LimitClock::manual())
        .build()
        .unwrap();
    for _ in 0..2 {
        let mut service = layer.layer(service_fn(ok));
        let future = service.call(request(Some(A)));
        assert_eq!(
            second_poll_panic(future).await,
            "`layer::rate_limit::ResponseFuture` polled after completion"
        );
    }
    assert_eq!(
        format!("{layer:?}"),
        "RateLimitLayer { limits: [\"default\"], total: false, tracked_callers: 1, .. }"
    );
    let mut service = layer.layer(service_fn(ok));
    let future = service.call(request(Some(B)));
    assert_eq!(format!("{future:?}"), "ResponseFuture { .. }");
    assert!(format!("{service:?}").starts_with("RateLimit { inner: "));
}

#[tokio::test]
async fn readiness_is_the_inner_services() {
    use crate::layer::test_support::{NeverReady, is_ready};

    let layer = RateLimitLayer::builder()
        .rate(Rate::per_hour(1))
        .build()
        .unwrap();
    assert!(!is_ready::<_, Request<String>>(&mut layer.layer(NeverReady)).await);
    assert!(is_ready(&mut layer.layer(service_fn(ok))).await);
}
