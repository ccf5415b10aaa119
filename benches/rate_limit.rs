//! Per-request cost of the per-identity limits (issue 18), against the bare service in the same
//! run, with 10,000 active callers: taken in turn (`N-callers`: every request is another
//! caller's, so the caller's ID and its entry are mostly out of the CPU caches), and with the
//! same 10,000 in the table but every request from one of them (`N-callers-one-calling`: the
//! CPU cost of the lookup and the checks).
//!
//! Each request is built per iteration as hyper would hand it over, with the caller's verified
//! `PeerIdentity` (from the channel's own client verifier, one real SVID per caller, one
//! connection each: a connection's identity holds its entry in each limit's table, four at
//! most, so the authorization stacks get connections of their own). The stacks:
//!
//! - `bare`: the handler alone (it reads the identity);
//! - `rate`: `RateLimitLayer` with a per-caller rate;
//! - `rate+concurrency`: and a per-caller concurrency (an in-flight permit per request);
//! - `rate+concurrency+total`: and a total rate;
//! - `overrides`: rate and concurrency with 100 prefix overrides (resolved once per caller);
//! - `authorize` and `authorize+rule-limits`: `AuthorizeLayer` with a rule for every caller,
//!   without and with `rate` and `concurrency` on that rule.
//!
//! No limit is reached: the rates are far above what one core can send. After the criterion
//! groups, the process's resident memory is read before and after 10,000 new callers, for the
//! bytes each caller's state costs.
//!
//! Run with `cargo bench --features testkit,axum --bench rate_limit`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::convert::Infallible;

use bytes::Bytes;
use criterion::Criterion;
use criterion::measurement::Measurement;
use http::{Method, Request, Response};
use http_body_util::Full;
use rustls_pki_types::CertificateDer;
use secure_channel::PeerIdentity;
use secure_channel::authz::{Policy, PolicySource, Rule};
use secure_channel::layer::authorize::AuthorizeLayer;
use secure_channel::layer::rate_limit::{Limit, Rate, RateLimitLayer};
use secure_channel::testkit::DevCa;
use secure_channel::{MemorySource, SecureChannel};
use tower::{Layer, Service};

#[path = "support/cpu_time.rs"]
mod cpu_time;
#[path = "support/handler.rs"]
mod handler;

use handler::{Body, Handler, oneshot};

const CALLERS: usize = 10_000;

fn request(peer: &PeerIdentity) -> Request<Body> {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri("/api/v1/orders/42")
        .body(Full::new(Bytes::new()))
        .unwrap();
    request.extensions_mut().insert(peer.clone());
    request
}

/// `count` verified identities of `ca`, from a channel that admits its trust domain.
fn identities(ca: &DevCa, server: &SecureChannel, prefix: &str, count: usize) -> Vec<PeerIdentity> {
    let callers = Callers::issue(ca, prefix, count);
    callers.connections(server)
}

/// The callers' certificate chains, one real SVID each.
struct Callers {
    chains: Vec<Vec<CertificateDer<'static>>>,
}

impl Callers {
    fn issue(ca: &DevCa, prefix: &str, count: usize) -> Self {
        let chains = (0..count)
            .map(|i| {
                let id = format!("spiffe://example.org/ns/{prefix}/sa/svc-{i}");
                ca.svid(&id).issue().unwrap().chain().to_vec()
            })
            .collect();
        Self { chains }
    }

    /// One connection per caller: the identity `server`'s verifier gives each connection (a
    /// connection's own, which holds the state of the limits its requests met: at most four).
    fn connections(&self, server: &SecureChannel) -> Vec<PeerIdentity> {
        self.chains
            .iter()
            .map(|chain| server.bench_peer_identity(chain).unwrap())
            .collect()
    }
}

/// Benchmarks `service` over the callers in turn, after checking that it answers 200.
fn bench_stack<M, S>(c: &mut Criterion<M>, name: &str, service: &S, callers: &[PeerIdentity])
where
    M: Measurement,
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    for peer in callers {
        assert_eq!(oneshot(service, request(peer)).status(), 200, "{name}");
    }
    let next = Cell::new(0usize);
    let mut group = c.benchmark_group("rate_limit");
    group.bench_function(format!("{name}/{}-callers", callers.len()), |b| {
        b.iter(|| {
            let i = next.get();
            next.set(if i + 1 == callers.len() { 0 } else { i + 1 });
            oneshot(service, request(&callers[i]))
        })
    });
    // The same table of callers, every request from one of them: the CPU cost without the
    // cache misses of a different caller each time.
    let one = &callers[callers.len() / 2];
    group.bench_function(
        format!("{name}/{}-callers-one-calling", callers.len()),
        |b| b.iter(|| oneshot(service, request(one))),
    );
    group.finish();
    // Still admitted after the fastest run: the measured path was the admitting one.
    assert_eq!(oneshot(service, request(one)).status(), 200, "{name}");
}

/// Never reached here, not even by one caller sending every request (one core sends a few
/// million a second; a million a second was reached in the one-calling mode, which then measured
/// refusals).
fn high_rate() -> Rate {
    Rate::per_second(1_000_000_000).burst(1_000)
}

/// Two sets of connections of the callers: one for the bare handler and the rate-limit
/// layer's four stacks, one for the authorization layer's two (so that each connection's
/// identity has room for the entries of every stack it meets, as in one server).
fn connections(
    callers: &Callers,
    server: &SecureChannel,
) -> (Vec<PeerIdentity>, Vec<PeerIdentity>) {
    (callers.connections(server), callers.connections(server))
}

/// The server channel and its callers.
fn setup(count: usize) -> (DevCa, MemorySource, SecureChannel, Callers) {
    let ca = DevCa::new("example.org").unwrap();
    let source = MemorySource::new(ca.credentials("spiffe://example.org/api").unwrap());
    let server = SecureChannel::builder(&source)
        .allow_client("spiffe://example.org")
        .build()
        .unwrap();
    let callers = Callers::issue(&ca, "prod", count);
    (ca, source, server, callers)
}

fn rate_layer() -> RateLimitLayer {
    RateLimitLayer::builder().rate(high_rate()).build().unwrap()
}

fn concurrency_layer() -> RateLimitLayer {
    RateLimitLayer::builder()
        .rate(high_rate())
        .concurrency(64)
        .build()
        .unwrap()
}

fn total_layer() -> RateLimitLayer {
    RateLimitLayer::builder()
        .rate(high_rate())
        .concurrency(64)
        .total_rate(Rate::per_second(u32::MAX))
        .build()
        .unwrap()
}

fn overrides_layer() -> RateLimitLayer {
    let mut overrides = RateLimitLayer::builder().rate(high_rate()).concurrency(64);
    for i in 0..100 {
        overrides = overrides.limit_for(
            format!("team-{i}"),
            format!("spiffe://example.org/ns/team-{i}/*"),
            Limit::new().rate(high_rate()).concurrency(32),
        );
    }
    overrides.build().unwrap()
}

fn authorize_layer(limited: bool) -> AuthorizeLayer {
    let rule = Rule::allow("prod")
        .principal("spiffe://example.org/ns/prod/*")
        .route_any_method("/api/*");
    let rule = if limited {
        rule.rate("1000000000/s").burst(1_000).concurrency(64)
    } else {
        rule
    };
    AuthorizeLayer::new(PolicySource::new(
        Policy::builder().rule(rule).build().unwrap(),
    ))
}

fn bench<M: Measurement>(c: &mut Criterion<M>) {
    let (ca, _source, server, callers) = setup(CALLERS);
    let (layers, authorize) = connections(&callers, &server);
    bench_stack(c, "bare", &Handler, &layers);
    bench_stack(c, "rate", &rate_layer().layer(Handler), &layers);
    let stack = concurrency_layer().layer(Handler);
    bench_stack(c, "rate+concurrency", &stack, &layers);
    let stack = total_layer().layer(Handler);
    bench_stack(c, "rate+concurrency+total", &stack, &layers);
    let stack = overrides_layer().layer(Handler);
    bench_stack(c, "overrides", &stack, &layers);
    let stack = authorize_layer(false).layer(Handler);
    bench_stack(c, "authorize", &stack, &authorize);
    let stack = authorize_layer(true).layer(Handler);
    bench_stack(c, "authorize+rule-limits", &stack, &authorize);
    memory(&ca, &server);
}

/// Runs `n` requests through `service`: from the callers in turn, or (`ONE`) all from one.
/// Not inlined, so that callgrind can count its instructions alone (`STACK` tells the stacks'
/// copies apart).
#[inline(never)]
fn count<const STACK: usize, const ONE: bool, S>(service: &S, callers: &[PeerIdentity], n: usize)
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    for i in 0..n {
        let peer = if ONE {
            &callers[callers.len() / 2]
        } else {
            &callers[i % callers.len()]
        };
        std::hint::black_box(oneshot(service, request(peer)));
    }
}

/// Each stack in both modes, after one warming pass: what callgrind counts, with
/// `--collect-atstart=no --toggle-collect='rate_limit::count*'` (see BENCHMARKS.md).
fn instructions(n: usize) {
    fn both<const STACK: usize, S>(name: &str, service: &S, callers: &[PeerIdentity], n: usize)
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
    {
        for peer in callers {
            assert_eq!(oneshot(service, request(peer)).status(), 200, "{name}");
        }
        println!("stack {STACK}: {name}");
        count::<STACK, false, S>(service, callers, n);
        count::<STACK, true, S>(service, callers, n);
    }
    let (_ca, _source, server, callers) = setup(CALLERS);
    let (layers, authorize) = connections(&callers, &server);
    both::<0, _>("bare", &Handler, &layers, n);
    both::<1, _>("rate", &rate_layer().layer(Handler), &layers, n);
    let stack = concurrency_layer().layer(Handler);
    both::<2, _>("rate+concurrency", &stack, &layers, n);
    let stack = total_layer().layer(Handler);
    both::<3, _>("rate+concurrency+total", &stack, &layers, n);
    let stack = overrides_layer().layer(Handler);
    both::<4, _>("overrides", &stack, &layers, n);
    let stack = authorize_layer(false).layer(Handler);
    both::<5, _>("authorize", &stack, &authorize, n);
    let stack = authorize_layer(true).layer(Handler);
    both::<6, _>("authorize+rule-limits", &stack, &authorize, n);
}

/// The thread CPU time per request of `batch` requests through `service`, the callers in turn
/// from `*next` (or, with `one`, all from one of them).
fn timed_batch<S>(
    service: &S,
    callers: &[PeerIdentity],
    next: &mut usize,
    batch: usize,
    one: bool,
) -> f64
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    let start = cpu_time::now();
    for _ in 0..batch {
        std::hint::black_box(oneshot(service, request(&callers[*next])));
        if !one {
            *next = (*next + 1) % callers.len();
        }
    }
    cpu_time::now().saturating_sub(start).as_nanos() as f64 / batch as f64
}

/// For a host other processes keep busy: `rounds` rounds, each timing one batch of every
/// stack in turn (so that each round's stacks meet the same host), in thread CPU time; then per
/// stack the minimum and the 10th percentile over the rounds (a batch another process
/// disturbed only ever takes longer), and their difference to the bare handler's.
fn min_of_rounds(rounds: usize) {
    let (_ca, _source, server, callers) = setup(CALLERS);
    min_of_rounds_in(&callers, &server, rounds, false);
    min_of_rounds_in(&callers, &server, rounds, true);
}

fn min_of_rounds_in(callers: &Callers, server: &SecureChannel, rounds: usize, one: bool) {
    const BATCH: usize = 10_000;
    // One set of connections: three tables, so each connection's identity holds its entry in
    // each (it has room for four).
    let connections = callers.connections(server);
    let rate = rate_layer().layer(Handler);
    let concurrency = concurrency_layer().layer(Handler);
    let authorize = authorize_layer(false).layer(Handler);
    let limited = authorize_layer(true).layer(Handler);
    // Controls: a layer that does nothing but be one; one that does what every layer of the
    // crate does before its own work (an `Arc` cloned per request, the identity looked up, an
    // atomic bumped); and that wrapping the inner future in an answer future as the crate's do.
    let pass = tower::util::MapRequestLayer::new(|r: Request<Body>| r).layer(Handler);
    let framing = controls::Framing::<false>::new();
    let answered = controls::Framing::<true>::new();
    let names = [
        "bare",
        "rate",
        "rate+concurrency",
        "authorize",
        "authorize+rule-limits",
        "pass-through layer",
        "arc+identity control",
        "+answer future control",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); names.len()];
    let mut next = [if one { CALLERS / 2 } else { 0 }; 8];
    for round in 0..=rounds {
        let batch = [
            timed_batch(&Handler, &connections, &mut next[0], BATCH, one),
            timed_batch(&rate, &connections, &mut next[1], BATCH, one),
            timed_batch(&concurrency, &connections, &mut next[2], BATCH, one),
            timed_batch(&authorize, &connections, &mut next[3], BATCH, one),
            timed_batch(&limited, &connections, &mut next[4], BATCH, one),
            timed_batch(&pass, &connections, &mut next[5], BATCH, one),
            timed_batch(&framing, &connections, &mut next[6], BATCH, one),
            timed_batch(&answered, &connections, &mut next[7], BATCH, one),
        ];
        // Round 0 warms the caches and the callers' entries.
        if round > 0 {
            for (stack, ns) in batch.into_iter().enumerate() {
                times[stack].push(ns);
            }
        }
    }
    for stack in [&rate, &concurrency] {
        assert_eq!(oneshot(stack, request(&connections[0])).status(), 200);
    }
    let stats: Vec<(f64, f64)> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            (t[0], t[t.len() / 10])
        })
        .collect();
    let mode = if one {
        "every request from one of them"
    } else {
        "in turn"
    };
    println!(
        "{rounds} rounds of {BATCH} requests per stack, {CALLERS} callers {mode}, thread CPU ns/request:"
    );
    for (i, name) in names.iter().enumerate() {
        let (min, p10) = stats[i];
        let base = if i == 4 { stats[3] } else { stats[0] };
        let over = match i {
            0 | 3 => "",
            4 => " over authorize",
            _ => " over bare",
        };
        println!(
            "  {name:<22} min {min:7.1}  p10 {p10:7.1}  ({:+.1} / {:+.1}{over})",
            min - base.0,
            p10 - base.1
        );
    }
}

/// The control layers of [`min_of_rounds`]: the cost of a layer's framing without its work.
mod controls {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::{Context, Poll, ready};

    use http::{Request, Response};
    use tower::Service;

    use super::handler::{Body, Handler};

    /// Clones an `Arc` per request (with the service), looks the caller's identity up and
    /// bumps an atomic, then calls the handler; with `ANSWER`, its future is wrapped as the
    /// crate's layers wrap theirs.
    #[derive(Clone)]
    pub(super) struct Framing<const ANSWER: bool> {
        calls: Arc<AtomicU64>,
    }

    impl<const ANSWER: bool> Framing<ANSWER> {
        pub(super) fn new() -> Self {
            Self {
                calls: Arc::new(AtomicU64::new(0)),
            }
        }

        /// The count of calls before this one.
        fn before(&self, request: &Request<Body>) -> u64 {
            let peer = secure_channel::layer::peer_identity(request.extensions());
            std::hint::black_box(peer.map(|peer| peer.spiffe_id().path().len()));
            self.calls.fetch_add(1, Ordering::Relaxed)
        }
    }

    /// The inner future or a response ready at once, and an optional permit: the shape of
    /// the crate's answer futures.
    pub(super) struct Answer<F> {
        kind: Kind<F>,
        permit: Option<Arc<AtomicU64>>,
    }

    enum Kind<F> {
        Inner(F),
        Refused(Option<Response<Body>>),
        Done,
    }

    impl<F> Future for Answer<F>
    where
        F: Future<Output = Result<Response<Body>, Infallible>> + Unpin,
    {
        type Output = Result<Response<Body>, Infallible>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = &mut *self;
            let output = match &mut this.kind {
                Kind::Inner(future) => ready!(Pin::new(future).poll(cx)),
                Kind::Refused(response) => Ok(response.take().expect("polled once")),
                Kind::Done => panic!("polled after completion"),
            };
            this.kind = Kind::Done;
            this.permit = None;
            Poll::Ready(output)
        }
    }

    impl Service<Request<Body>> for Framing<false> {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = <Handler as Service<Request<Body>>>::Future;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Self::Future {
            self.before(&request);
            Handler.call(request)
        }
    }

    impl Service<Request<Body>> for Framing<true> {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Answer<<Handler as Service<Request<Body>>>::Future>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Body>) -> Self::Future {
            // Never refused (the count does not reach it), but the branch is there, as in the
            // crate's layers.
            let kind = if self.before(&request) == u64::MAX {
                Kind::Refused(Some(Response::default()))
            } else {
                Kind::Inner(Handler.call(request))
            };
            Answer { kind, permit: None }
        }
    }
}

/// The process's resident memory, in bytes (Linux; 0 elsewhere).
fn resident() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Resident memory before and after 10,000 new callers reach a layer: what a caller's state
/// costs, allocator included.
fn memory(ca: &DevCa, server: &SecureChannel) {
    let callers = identities(ca, server, "memory", CALLERS);
    let layer = RateLimitLayer::builder()
        .rate(Rate::per_hour(1))
        .concurrency(8)
        .build()
        .unwrap();
    let service = layer.clone().layer(Handler);
    let before = resident();
    for peer in &callers {
        assert_eq!(oneshot(&service, request(peer)).status(), 200);
    }
    let after = resident();
    println!(
        "memory: {} callers tracked (bound {}), resident +{} KiB, {} bytes a caller",
        layer.tracked_callers(),
        layer.max_callers(),
        after.saturating_sub(before) / 1024,
        after.saturating_sub(before) / CALLERS,
    );
}

/// criterion's main (wall-clock time; with `RATE_LIMIT_CPU_TIME=1` in the environment, the
/// thread's CPU time instead, for a host other processes keep busy), or with
/// `RATE_LIMIT_INSTRUCTIONS=N`, N requests per stack and mode for callgrind to count, or with
/// `RATE_LIMIT_MIN_OF=N`, N interleaved rounds of batches (see [`min_of_rounds`]).
fn main() {
    if let Some(n) = std::env::var("RATE_LIMIT_INSTRUCTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        instructions(n);
        return;
    }
    if let Some(rounds) = std::env::var("RATE_LIMIT_MIN_OF")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        min_of_rounds(rounds);
        return;
    }
    if std::env::var_os("RATE_LIMIT_CPU_TIME").is_some() {
        let mut c = Criterion::default()
            .with_measurement(cpu_time::ThreadCpuTime::new())
            .configure_from_args();
        bench(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c);
        c.final_summary();
    }
}
