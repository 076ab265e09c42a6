//! Endpoint state and endpoint choice.
//!
//! The default balancer is power-of-two-choices over peak-EWMA cost, as Linkerd's: each endpoint
//! keeps a latency estimate that jumps up to any slower response and decays back toward faster
//! ones; its cost is that estimate times (in-flight requests + 1). Two endpoints are drawn at
//! random and one of them is taken with a probability inversely proportional to its cost: an
//! endpoint three times as costly gets a quarter of the pair's traffic. (Classic P2C always
//! takes the cheaper one; on identical replicas that lets a single slow response pin traffic to
//! one replica for as long as the estimate takes to decay. The weighted coin spreads identical
//! replicas evenly and still steers hard away from slow or overloaded ones.) An endpoint more
//! than [`CLEARLY_WORSE`] times costlier than the other one drawn is never taken, so a clearly
//! slow replica gets nothing until its estimate decays, as in Linkerd. Endpoints that just
//! failed to connect, or left an attempt unanswered past its per-try timeout (a failed request
//! leaves no latency sample: the timeout counts as one), sit out a short, growing backoff.
//!
//! All state here is atomics: the hot path takes no lock.

use crate::policy::{now_ns, Health};
use crate::upstream::H2Pool;
use model::Endpoint;
use rand::Rng;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// How fast a latency estimate forgets: after this long without new samples it has decayed to
/// 1/e. Short, so that an endpoint that had one slow response is tried again within a second.
pub const DECAY: Duration = Duration::from_millis(300);
/// An endpoint this many times costlier than the other one drawn is never taken over it (until
/// its estimate decays): a replica that is clearly slow gets nothing, as in Linkerd's P2C,
/// while comparable ones share traffic by the weighted coin.
pub const CLEARLY_WORSE: f64 = 4.0;
/// Latency differences below this are noise, not signal (a loopback round trip is ~100 µs).
const RTT_FLOOR_NS: f64 = 10_000.0;
/// First and longest sit-out after a connection failure.
pub const FAIL_BACKOFF_MIN: Duration = Duration::from_millis(250);
pub const FAIL_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// One endpoint as the balancer sees it. Outlives snapshots: a new snapshot that still lists
/// the endpoint keeps its estimate, its in-flight count and its pooled connection.
pub struct EndpointState {
    pub endpoint: Endpoint,
    pub conn: H2Pool,
    rtt_ns: AtomicU64,
    stamp_ns: AtomicU64,
    pending: AtomicUsize,
    fail_until_ns: AtomicU64,
    fail_streak: AtomicU32,
    /// Outlier detection and failure accrual state.
    pub health: Health,
    /// The instance name hashed once, for consistent hashing.
    name_hash: u64,
    /// Its port is PeerAuthentication DISABLE: reach it in plaintext (Istio's auto-mTLS does
    /// the same). Fixed for the state's life: a snapshot that changes it makes a new state.
    pub plaintext: bool,
}

impl EndpointState {
    pub fn new(endpoint: Endpoint, initial_rtt_ns: u64) -> Self {
        Self {
            conn: H2Pool::default(),
            rtt_ns: AtomicU64::new(initial_rtt_ns),
            stamp_ns: AtomicU64::new(now_ns()),
            pending: AtomicUsize::new(0),
            fail_until_ns: AtomicU64::new(0),
            fail_streak: AtomicU32::new(0),
            health: Health::default(),
            plaintext: false,
            name_hash: hash_str(&endpoint_name(&endpoint)),
            endpoint,
        }
    }

    /// The endpoint reached in plaintext (its port is PeerAuthentication DISABLE).
    pub fn in_plaintext(mut self, plaintext: bool) -> Self {
        self.plaintext = plaintext;
        self
    }

    /// The latency estimate now, decayed for the time since the last sample.
    pub fn rtt_estimate_ns(&self, now: u64) -> f64 {
        let rtt = self.rtt_ns.load(Relaxed) as f64;
        let elapsed = now.saturating_sub(self.stamp_ns.load(Relaxed)) as f64;
        rtt * (-elapsed / DECAY.as_nanos() as f64).exp()
    }

    fn cost(&self, now: u64) -> f64 {
        (self.rtt_estimate_ns(now) + RTT_FLOOR_NS) * (self.pending.load(Relaxed) + 1) as f64
    }

    fn is_failing(&self, now: u64) -> bool {
        self.fail_until_ns.load(Relaxed) > now
    }

    /// In connect-failure backoff now.
    pub fn is_failing_now(&self) -> bool {
        self.is_failing(now_ns())
    }

    /// Whether a request may go here: `strict` also avoids endpoints in connect backoff or
    /// ejected by outlier detection; even without it, endpoints tripped by failure accrual
    /// (waiting out their penalty, or with their one probe out) get nothing.
    fn usable(&self, now: u64, strict: bool) -> bool {
        let tripped =
            self.health.in_probation() && (self.health.is_ejected(now) || self.health.is_probing());
        !tripped && !(strict && (self.is_failing(now) || self.health.is_ejected(now)))
    }

    /// Marks a request as started; the guard records its latency when dropped (or on `success`).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.pending.fetch_add(1, Relaxed);
        InFlight {
            ep: self.clone(),
            started: now_ns(),
        }
    }

    /// A connection to this endpoint failed: sit out an exponentially growing backoff.
    pub fn connect_failed(&self) {
        self.back_off(now_ns());
        self.conn.reset();
    }

    /// An attempt here got no answer within `waited` (a per-try timeout). A request that fails
    /// leaves no latency sample, so without this an endpoint that went silent (its host cut off)
    /// keeps the estimate of its last answer and keeps being picked: its estimate becomes at
    /// least `waited`, and it sits out the same growing backoff as after a failed connection.
    /// Its next answer ends both. Its connection stays: other requests may be on it.
    pub fn timed_out(&self, waited: Duration) {
        let now = now_ns();
        let sample = waited.as_nanos() as u64;
        if sample as f64 > self.rtt_estimate_ns(now) {
            self.rtt_ns.store(sample, Relaxed);
            self.stamp_ns.store(now, Relaxed);
        }
        self.back_off(now);
    }

    fn back_off(&self, now: u64) {
        let streak = self.fail_streak.fetch_add(1, Relaxed).min(10);
        let backoff = (FAIL_BACKOFF_MIN * 2u32.pow(streak)).min(FAIL_BACKOFF_MAX);
        self.fail_until_ns
            .store(now + backoff.as_nanos() as u64, Relaxed);
    }

    fn record(&self, started: u64) {
        let now = now_ns();
        self.observe(now.saturating_sub(started) as f64, now);
    }

    /// Feeds one latency sample (ns) taken at `now`.
    fn observe(&self, sample: f64, now: u64) {
        let prev_stamp = self.stamp_ns.swap(now, Relaxed);
        let est = self.rtt_ns.load(Relaxed) as f64;
        let new = if sample > est {
            sample
        } else {
            let w = (-(now.saturating_sub(prev_stamp) as f64) / DECAY.as_nanos() as f64).exp();
            est * w + sample * (1.0 - w)
        };
        self.rtt_ns.store(new as u64, Relaxed);
        if self.fail_streak.load(Relaxed) != 0 {
            self.fail_streak.store(0, Relaxed);
            self.fail_until_ns.store(0, Relaxed);
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Relaxed)
    }
}

/// A request in flight to an endpoint.
pub struct InFlight {
    ep: Arc<EndpointState>,
    started: u64,
}

impl InFlight {
    /// The response head arrived: feed its latency to the estimate.
    pub fn success(self) {
        self.ep.record(self.started);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ep.pending.fetch_sub(1, Relaxed);
    }
}

/// The initial estimate for an endpoint that has none: the cheapest of its peers', so a new or
/// returning replica gets traffic at once instead of waiting for a pessimistic default to decay.
pub fn initial_rtt_ns(peers: &[Arc<EndpointState>]) -> u64 {
    let now = now_ns();
    peers
        .iter()
        .map(|p| p.rtt_estimate_ns(now) as u64)
        .min()
        .unwrap_or(0)
}

/// How a backend chooses.
#[derive(Clone, Copy, Debug)]
pub enum Choice {
    /// P2C over peak-EWMA cost.
    PeakEwma,
    /// P2C over in-flight requests only.
    LeastRequest,
    Random,
    /// Rendezvous hashing on this key.
    Hash(u64),
}

/// Picks an endpoint, skipping `exclude` (endpoints a retry already tried) and endpoints out
/// of rotation while others are left. `None`: nothing may take the request.
pub fn pick<'a>(
    eps: &'a [Arc<EndpointState>],
    how: Choice,
    exclude: &[usize],
) -> Option<(usize, &'a Arc<EndpointState>)> {
    let now = now_ns();
    let mut rng = rand::thread_rng();
    for strict in [true, false] {
        let usable = |i: usize| !exclude.contains(&i) && eps[i].usable(now, strict);
        let candidates = (0..eps.len()).filter(|&i| usable(i)).count();
        let pick = match candidates {
            0 => continue,
            1 => (0..eps.len()).find(|&i| usable(i))?,
            _ => match how {
                Choice::Hash(key) => (0..eps.len())
                    .filter(|&i| usable(i))
                    .max_by_key(|&i| mix(key ^ eps[i].name_hash))?,
                Choice::Random => {
                    let k = rng.gen_range(0..candidates);
                    (0..eps.len()).filter(|&i| usable(i)).nth(k)?
                }
                Choice::PeakEwma | Choice::LeastRequest => {
                    let draw = |rng: &mut rand::rngs::ThreadRng| loop {
                        let i = rng.gen_range(0..eps.len());
                        if usable(i) {
                            return i;
                        }
                    };
                    let a = draw(&mut rng);
                    let b = loop {
                        let b = draw(&mut rng);
                        if b != a {
                            break b;
                        }
                    };
                    if let Choice::LeastRequest = how {
                        let (pa, pb) = (eps[a].pending(), eps[b].pending());
                        match pa.cmp(&pb) {
                            std::cmp::Ordering::Less => a,
                            std::cmp::Ordering::Greater => b,
                            std::cmp::Ordering::Equal => [a, b][rng.gen_range(0..2)],
                        }
                    } else {
                        let (ca, cb) = (eps[a].cost(now), eps[b].cost(now));
                        if ca > cb * CLEARLY_WORSE {
                            b
                        } else if cb > ca * CLEARLY_WORSE {
                            a
                        } else if rng.gen::<f64>() * (ca + cb) < cb {
                            // Comparable costs: P(a) = cb / (ca + cb), so identical replicas
                            // share the traffic instead of one noisy sample pinning it.
                            a
                        } else {
                            b
                        }
                    }
                }
            },
        };
        eps[pick].health.claim();
        return Some((pick, &eps[pick]));
    }
    None
}

/// Power of two choices over peak-EWMA cost (see the module docs).
pub fn pick_p2c<'a>(
    eps: &'a [Arc<EndpointState>],
    exclude: &[usize],
) -> Option<(usize, &'a Arc<EndpointState>)> {
    pick(eps, Choice::PeakEwma, exclude)
}

/// Picks the next endpoint in turn, skipping `exclude` and endpoints out of rotation when
/// others are left.
pub fn pick_round_robin<'a>(
    eps: &'a [Arc<EndpointState>],
    next: &AtomicUsize,
    exclude: &[usize],
) -> Option<(usize, &'a Arc<EndpointState>)> {
    if eps.is_empty() {
        return None;
    }
    let now = now_ns();
    let start = next.fetch_add(1, Relaxed);
    for strict in [true, false] {
        for k in 0..eps.len() {
            let i = (start + k) % eps.len();
            if !exclude.contains(&i) && eps[i].usable(now, strict) {
                eps[i].health.claim();
                return Some((i, &eps[i]));
            }
        }
    }
    None
}

/// What identifies an endpoint for hashing: its instance, so that a restarted replica (new
/// address, same name) keeps its keys.
fn endpoint_name(e: &Endpoint) -> String {
    format!("{}/{}", e.workload, e.instance)
}

/// A stable 64-bit hash of a string (the same in every proxy and every run).
pub fn hash_str(s: &str) -> u64 {
    // FNV-1a: stable across processes, unlike std's randomly keyed SipHash.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// SplitMix64's finaliser: spreads a key's bits so rendezvous scores are independent.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests;
