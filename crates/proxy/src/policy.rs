//! A service's traffic policy compiled for the hot path: its balancer, its connection pool and
//! concurrency limits (Istio `connectionPool`, answered with 503 UO; see [`pool`]), its retry
//! budget (Linkerd `retryBudget`),
//! and the rules that take failing endpoints out (Istio `outlierDetection`, Linkerd failure
//! accrual). The counters are atomics shared by every request to the service (or subset) and
//! carried over when a new snapshot is compiled, so a config push neither resets a limit nor
//! forgets what is in flight.

use model::policy::{FailureAccrual, HashOn, OutlierDetection, RetryBudget, TrafficPolicy};
use model::LoadBalancer;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub mod pool;
pub use pool::{ConnPool, Lease, PoolLimits, Refused};

/// Endpoints taken out of rotation (outlier detection or failure accrual) since start, for
/// `weft_endpoint_ejections_total`.
pub static EJECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Nanoseconds since the first call: one monotonic clock for every policy timer.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A policy, compiled.
#[derive(Debug, Default)]
pub struct Policy {
    pub lb: LoadBalancer,
    pub hash: Option<HashOn>,
    /// Requests in flight past which new ones get 503 UO at once: `http2MaxRequests` when the
    /// policy has no connection pool (with one, the pool counts requests on its connections).
    pub max_in_flight: Option<u32>,
    /// The connection pool's limits, when `connectionPool` limits connections.
    pub pool: Option<PoolLimits>,
    /// Retries in flight past which a retry is not sent.
    pub max_retries: Option<u32>,
    pub connect_timeout: Option<Duration>,
    pub outlier: Option<OutlierDetection>,
    pub accrual: Option<FailureAccrual>,
    /// Linkerd's retry budget, when the service has one (a ServiceProfile); `None`: retries
    /// are limited only by the route's attempts and `maxRetries`, as in Istio.
    pub budget: Option<RetryBudget>,
}

impl Policy {
    /// `policy` over the Mesh file's balancer `lb`.
    pub fn compile(lb: LoadBalancer, policy: &TrafficPolicy) -> Policy {
        let pool = policy.connection_pool.as_ref();
        let limits = pool.and_then(PoolLimits::of);
        Policy {
            lb: policy.lb.unwrap_or(lb),
            hash: policy.consistent_hash.clone(),
            max_in_flight: pool
                .filter(|_| limits.is_none())
                .and_then(|p| p.max_requests),
            pool: limits,
            max_retries: pool.and_then(|p| p.max_retries),
            connect_timeout: pool
                .and_then(|p| p.connect_timeout_ms)
                .map(Duration::from_millis),
            outlier: policy
                .outlier_detection
                .clone()
                .filter(|o| o.consecutive_5xx > 0 || o.consecutive_gateway > 0),
            accrual: policy
                .failure_accrual
                .clone()
                .filter(|a| a.max_failures > 0),
            budget: policy.retry_budget.clone(),
        }
    }
}

/// The live counters of one backend (a service, or a subset of one).
pub struct Counters {
    in_flight: AtomicU32,
    retries_in_flight: AtomicU32,
    /// Open `CONNECT` tunnels (TCP connections, for `tcp.maxConnections`).
    tunnels: AtomicU32,
    pub budget: Option<Budget>,
    /// What `budget` was made from (a changed budget starts afresh).
    pub budget_config: Option<RetryBudget>,
    /// The backend's own connections, when its policy limits them (else requests share each
    /// endpoint's multiplexed connection).
    pub conns: Option<Arc<ConnPool<crate::upstream::PeerConn>>>,
}

impl Counters {
    pub fn new(budget: Option<&RetryBudget>) -> Arc<Counters> {
        Arc::new(Counters {
            in_flight: AtomicU32::new(0),
            retries_in_flight: AtomicU32::new(0),
            tunnels: AtomicU32::new(0),
            budget: budget.map(Budget::new),
            budget_config: budget.cloned(),
            conns: None,
        })
    }

    /// The counters `policy` needs: its retry budget and its connection pool.
    pub fn for_policy(policy: &Policy) -> Arc<Counters> {
        Arc::new(Counters {
            in_flight: AtomicU32::new(0),
            retries_in_flight: AtomicU32::new(0),
            tunnels: AtomicU32::new(0),
            budget: policy.budget.as_ref().map(Budget::new),
            budget_config: policy.budget.clone(),
            conns: policy.pool.clone().map(ConnPool::new),
        })
    }

    /// Whether these counters serve `policy` as they are (a new snapshot keeps them then: what
    /// is in flight stays counted, pooled connections stay open).
    pub fn fit(&self, policy: &Policy) -> bool {
        self.budget_config == policy.budget
            && self.conns.as_ref().map(|c| c.limits()) == policy.pool.as_ref()
    }

    /// Admits a request under `limit`: `None` when the limit is reached (503 UO).
    pub fn admit(self: &Arc<Self>, limit: Option<u32>) -> Option<Admitted> {
        let n = self.in_flight.fetch_add(1, Relaxed);
        let admitted = Admitted {
            counters: self.clone(),
            retry: false,
        };
        match limit {
            Some(max) if n >= max => None, // `admitted` drops here and gives the slot back.
            _ => Some(admitted),
        }
    }

    /// Admits a retry under `max_retries` and the retry budget.
    pub fn admit_retry(
        self: &Arc<Self>,
        max_retries: Option<u32>,
    ) -> Result<Admitted, &'static str> {
        let n = self.retries_in_flight.fetch_add(1, Relaxed);
        let admitted = Admitted {
            counters: self.clone(),
            retry: true,
        };
        if max_retries.is_some_and(|max| n >= max) {
            return Err("maxRetries reached");
        }
        if self.budget.as_ref().is_some_and(|b| !b.withdraw()) {
            return Err("retry budget exhausted");
        }
        Ok(admitted)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Admits one more tunnel (a TCP connection to the backend) under `max_connections`, Istio's
    /// `tcp.maxConnections` as Envoy's TCP proxy applies it: `None` past it (overflow, `UO`).
    pub fn admit_tunnel(self: &Arc<Self>, max_connections: Option<u32>) -> Option<TunnelSlot> {
        let n = self.tunnels.fetch_add(1, Relaxed);
        let slot = TunnelSlot(self.clone());
        match max_connections {
            Some(max) if n >= max => None, // `slot` drops here and gives it back.
            _ => Some(slot),
        }
    }

    pub fn tunnels(&self) -> u32 {
        self.tunnels.load(Relaxed)
    }
}

/// An open tunnel counted against its backend's `tcp.maxConnections`; given back on drop.
pub struct TunnelSlot(Arc<Counters>);

impl Drop for TunnelSlot {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Relaxed);
    }
}

/// A slot taken in a backend's limits, given back on drop.
pub struct Admitted {
    counters: Arc<Counters>,
    retry: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let c = if self.retry {
            &self.counters.retries_in_flight
        } else {
            &self.counters.in_flight
        };
        c.fetch_sub(1, Relaxed);
    }
}

/// Linkerd's retry budget, lock-free: one-second buckets over the budget's window, each
/// counting requests (deposits) and retries (withdrawals). A retry is allowed while the
/// window's retries stay within `ratio × requests + min_per_second × window`.
pub struct Budget {
    ratio: f64,
    reserve: i64,
    buckets: Box<[Bucket]>,
}

struct Bucket {
    second: AtomicU64,
    requests: AtomicI64,
    retries: AtomicI64,
}

impl Budget {
    pub fn new(b: &RetryBudget) -> Budget {
        let seconds = (b.ttl_ms / 1000).clamp(1, 60);
        Budget {
            ratio: f64::from(b.ratio.max(0.0)),
            reserve: i64::from(b.min_per_second) * seconds as i64,
            buckets: (0..seconds)
                .map(|_| Bucket {
                    second: AtomicU64::new(u64::MAX),
                    requests: AtomicI64::new(0),
                    retries: AtomicI64::new(0),
                })
                .collect(),
        }
    }

    fn bucket(&self, second: u64) -> &Bucket {
        let b = &self.buckets[(second % self.buckets.len() as u64) as usize];
        let seen = b.second.load(Relaxed);
        if seen != second
            && b.second
                .compare_exchange(seen, second, Relaxed, Relaxed)
                .is_ok()
        {
            b.requests.store(0, Relaxed);
            b.retries.store(0, Relaxed);
        }
        b
    }

    /// Counts one original request.
    pub fn deposit(&self) {
        let second = now_ns() / 1_000_000_000;
        self.bucket(second).requests.fetch_add(1, Relaxed);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        let second = now_ns() / 1_000_000_000;
        let window = self.buckets.len() as u64;
        let (mut requests, mut retries) = (0i64, 0i64);
        for b in self.buckets.iter() {
            let s = b.second.load(Relaxed);
            if s != u64::MAX && s + window > second && s <= second {
                requests += b.requests.load(Relaxed);
                retries += b.retries.load(Relaxed);
            }
        }
        // The cast saturates (a huge ratio allows everything), and so does the sum.
        let allowed = ((requests as f64 * self.ratio) as i64).saturating_add(self.reserve);
        if retries >= allowed {
            return false;
        }
        self.bucket(second).retries.fetch_add(1, Relaxed);
        true
    }
}

/// What one attempt came to, as outlier detection and failure accrual count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response; `failure` as the route's response classes say (5xx by default).
    Response { status: u16, failure: bool },
    /// Connect failure, reset, or timeout: a locally originated gateway error.
    Error,
}

impl Outcome {
    fn is_5xx(self) -> bool {
        match self {
            Outcome::Response { status, .. } => status >= 500,
            Outcome::Error => true,
        }
    }

    fn is_gateway_error(self) -> bool {
        match self {
            Outcome::Response { status, .. } => matches!(status, 502..=504),
            Outcome::Error => true,
        }
    }

    fn is_failure(self) -> bool {
        match self {
            Outcome::Response { failure, .. } => failure,
            Outcome::Error => true,
        }
    }
}

/// An endpoint's health as the policies see it: consecutive failures, ejections and
/// probation. All atomics.
#[derive(Default)]
pub struct Health {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_failures: AtomicU32,
    /// Out of rotation until then (ns on [`now_ns`]'s clock); 0 = in rotation.
    ejected_until: AtomicU64,
    /// Istio: how many times ejected (multiplies the ejection time); Linkerd: trips in a row.
    ejections: AtomicU32,
    /// When the last ejection ended, for forgetting old ejections.
    last_return: AtomicU64,
    /// Linkerd probation: after a penalty only one probe request at a time, until one succeeds.
    probation: AtomicU32,
    probing: AtomicU32,
}

impl Health {
    /// Out of rotation now (ejected, or tripped and waiting out its penalty).
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Relaxed) > now
    }

    /// In probation with its one probe already out: not to be picked.
    pub fn is_probing(&self) -> bool {
        self.probation.load(Relaxed) != 0 && self.probing.load(Relaxed) != 0
    }

    /// Claims the probe of an endpoint in probation; true for endpoints not in probation.
    pub fn claim(&self) -> bool {
        self.probation.load(Relaxed) == 0
            || self
                .probing
                .compare_exchange(0, 1, Relaxed, Relaxed)
                .is_ok()
    }

    /// Whether the endpoint is in Linkerd probation (only one probe at a time).
    pub fn in_probation(&self) -> bool {
        self.probation.load(Relaxed) != 0
    }

    /// Records an attempt's outcome. `ejected_now` counts the backend's endpoints out of
    /// rotation, `total` all of them; returns true when this outcome ejected the endpoint.
    pub fn record(
        &self,
        policy: &Policy,
        outcome: Outcome,
        ejected_now: impl Fn() -> usize,
        total: usize,
    ) -> bool {
        let now = now_ns();
        let mut ejected = false;
        if let Some(o) = &policy.outlier {
            let n5 = bump(&self.consecutive_5xx, outcome.is_5xx());
            let ngw = bump(&self.consecutive_gateway, outcome.is_gateway_error());
            let tripped = (o.consecutive_5xx > 0 && n5 >= o.consecutive_5xx)
                || (o.consecutive_gateway > 0 && ngw >= o.consecutive_gateway);
            if tripped && !self.is_ejected(now) && may_eject(o, ejected_now(), total) {
                self.eject_outlier(o, now);
                ejected = true;
            }
        }
        if let Some(a) = &policy.accrual {
            let failed = outcome.is_failure();
            if self.probation.load(Relaxed) != 0 {
                // The probe came back.
                self.probing.store(0, Relaxed);
                if failed {
                    self.trip(a, now);
                    ejected = true;
                } else {
                    self.probation.store(0, Relaxed);
                    self.ejections.store(0, Relaxed);
                    self.consecutive_failures.store(0, Relaxed);
                }
            } else if bump(&self.consecutive_failures, failed) >= a.max_failures {
                self.trip(a, now);
                ejected = true;
            }
        }
        ejected
    }

    fn eject_outlier(&self, o: &OutlierDetection, now: u64) {
        EJECTIONS.fetch_add(1, Relaxed);
        // Envoy lowers the multiplier by one for every interval spent back in rotation. Times
        // saturate: a configured time too long for the clock means "for ever", never a wrap (a
        // wrapped interval could even be 0).
        let interval = o.interval_ms.max(1).saturating_mul(1_000_000);
        let back_for = now.saturating_sub(self.last_return.load(Relaxed)) / interval;
        let prev = self.ejections.load(Relaxed);
        let count = prev.saturating_sub(back_for.min(u32::MAX as u64) as u32) + 1;
        self.ejections.store(count, Relaxed);
        let until = now.saturating_add(
            o.base_ejection_ms
                .saturating_mul(1_000_000)
                .saturating_mul(u64::from(count)),
        );
        self.ejected_until.store(until, Relaxed);
        self.last_return.store(until, Relaxed);
        self.consecutive_5xx.store(0, Relaxed);
        self.consecutive_gateway.store(0, Relaxed);
    }

    fn trip(&self, a: &FailureAccrual, now: u64) {
        EJECTIONS.fetch_add(1, Relaxed);
        let trips = self.ejections.fetch_add(1, Relaxed).min(20);
        let penalty = (a.min_penalty_ms.saturating_mul(1 << trips)).min(a.max_penalty_ms);
        let jitter = (a.jitter_ratio.clamp(0.0, 100.0) * rand::random::<f64>()).min(1.0);
        let penalty = (penalty as f64 * (1.0 - jitter / 2.0)) as u64;
        self.ejected_until.store(
            now.saturating_add(penalty.max(1).saturating_mul(1_000_000)),
            Relaxed,
        );
        self.probation.store(1, Relaxed);
        self.probing.store(0, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
    }
}

/// Adds one to a streak counter on `hit`, resets it otherwise; returns the streak.
fn bump(counter: &AtomicU32, hit: bool) -> u32 {
    if hit {
        counter.fetch_add(1, Relaxed) + 1
    } else {
        counter.store(0, Relaxed);
        0
    }
}

/// Whether one more endpoint may be ejected: within `maxEjectionPercent` (at least one may
/// always go, as in Envoy) and while the healthy share is at least `minHealthPercent`.
fn may_eject(o: &OutlierDetection, ejected: usize, total: usize) -> bool {
    if total == 0 {
        return false;
    }
    if o.max_ejection_percent == 0 {
        return false;
    }
    let max = (total * o.max_ejection_percent.min(100) as usize / 100).max(1);
    let healthy_pct = (total - ejected.min(total)) * 100 / total;
    ejected < max && healthy_pct >= o.min_health_percent as usize
}

#[cfg(test)]
mod tests;
