//! Helpers shared by the token tests of this crate (they need `PeerIdentity::new`).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::time_provider::TimeProvider;
use rustls_pki_types::UnixTime;
use spiffe::SpiffeId;

use crate::PeerIdentity;
use crate::jwt::source::BoxFuture;
use crate::jwt::{FetchError, FetchedJwks, JwksFetcher};
use crate::testkit::{DevCa, IssuedSvid};

pub const STEP: Duration = Duration::from_secs(10);
pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "https://api.test";
pub const CLIENT_ID: &str = "spiffe://example.org/client";

/// Awaits `fut`, failing the test after [`STEP`].
pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .expect("test step timed out")
}

/// A caller: its SVID, and the identity the listener would have put in the request.
pub struct Caller {
    pub svid: IssuedSvid,
    pub other: IssuedSvid,
    pub peer: PeerIdentity,
}

pub fn caller() -> Caller {
    let ca = DevCa::new("example.org").unwrap();
    let svid = ca.svid(CLIENT_ID).issue().unwrap();
    let other = ca.svid(CLIENT_ID).issue().unwrap();
    let peer = PeerIdentity::new(
        SpiffeId::new(CLIENT_ID).unwrap(),
        svid.leaf().clone(),
        SystemTime::now() + Duration::from_secs(3600),
    );
    Caller { svid, other, peer }
}

/// A clock the test moves.
#[derive(Debug)]
pub struct TestClock(AtomicI64);

impl TestClock {
    pub fn now() -> Arc<Self> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        Arc::new(Self(AtomicI64::new(secs as i64)))
    }

    /// The clock's time, in whole seconds since the epoch.
    pub fn secs(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs() as i64, Ordering::SeqCst);
    }
}

impl TimeProvider for TestClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(
            self.0.load(Ordering::SeqCst) as u64,
        )))
    }
}

/// A JWKS "issuer" in memory: serves `body` (or fails), counts fetches, and can hold fetches
/// after the first until `release`.
#[derive(Clone)]
pub struct TestFetcher {
    pub body: Arc<Mutex<Result<String, String>>>,
    pub fetches: Arc<AtomicUsize>,
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl TestFetcher {
    pub fn new(jwks: String) -> Self {
        Self {
            body: Arc::new(Mutex::new(Ok(jwks))),
            fetches: Arc::new(AtomicUsize::new(0)),
            gate: None,
        }
    }

    pub fn gated(jwks: String) -> Self {
        Self {
            gate: Some(Arc::new(tokio::sync::Semaphore::new(0))),
            ..Self::new(jwks)
        }
    }

    pub fn serve(&self, body: Result<String, String>) {
        *self.body.lock().unwrap() = body;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn release(&self) {
        if let Some(gate) = &self.gate {
            gate.add_permits(1000);
        }
    }
}

impl JwksFetcher for TestFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<FetchedJwks, FetchError>> {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst);
        let body = self.body.lock().unwrap().clone();
        let gate = self.gate.clone();
        Box::pin(async move {
            if n > 0
                && let Some(gate) = gate
            {
                let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
            }
            let body = body?;
            Ok(FetchedJwks::new(body).with_cache_control("public, max-age=300"))
        })
    }
}
