//! Traffic policies of a service: how its endpoints are chosen, how much may be in flight
//! toward it, when an endpoint is taken out for failing, and how many retries it may absorb.
//! One shape for Istio's DestinationRule `trafficPolicy` and Linkerd's ServiceProfile
//! `retryBudget` and failure-accrual annotations; the `config` crate fills in each API's
//! defaults, so `None` here means "not limited / not enabled".

use crate::names::ServiceKey;
use crate::snapshot::LoadBalancer;
use crate::Labels;
use serde::{Deserialize, Serialize};

/// Linkerd's default retry budget: retries may add 20% to the requests…
pub const DEFAULT_RETRY_RATIO: f32 = 0.2;
/// …plus this many retries per second, whatever the load.
pub const DEFAULT_MIN_RETRIES_PER_SECOND: u32 = 10;
/// …counted over this window.
pub const DEFAULT_RETRY_TTL_MS: u64 = 10_000;

/// What a consistent-hash balancer hashes (Istio `consistentHash`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// A request header's value (lowercase name).
    Header(String),
    /// A cookie's value. (Istio also sets the cookie when absent and a `ttl` is given.)
    Cookie {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_s: Option<u64>,
    },
    /// The client's address (the calling workload's identity, in weft's local mode).
    SourceIp,
    /// A query parameter's value.
    QueryParam(String),
}

/// Istio `connectionPool`, with Envoy's circuit-breaker meaning: at most `max_connections`
/// connections to the service, each retired after `max_requests_per_connection` requests; a
/// request that finds no free connection waits for one as one of at most
/// `max_pending_requests`; at most `max_requests` requests on connections at once. A request
/// past the pending or request limit fails at once with 503 and flag UO.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectionPool {
    /// `tcp.maxConnections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// `tcp.connectTimeout` (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// `http.http1MaxPendingRequests`: requests waiting for a connection (a free one, or one
    /// being opened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// `http.http2MaxRequests`: requests on connections to the service (waiting ones aside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// `http.maxRequestsPerConnection`: a connection is closed after carrying this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// `http.maxRetries`: retries in flight toward the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// `http.idleTimeout` (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
}

impl ConnectionPool {
    /// Whether the pool limits connections or what waits for one (`maxConnections`,
    /// `http1MaxPendingRequests`, `maxRequestsPerConnection`): requests to the service then go
    /// through a pool of connections that each carry one request at a time, as Envoy's
    /// HTTP/1.1 pools do. `http2MaxRequests` alone bounds requests in flight and nothing else.
    pub fn limits_connections(&self) -> bool {
        self.max_connections.is_some()
            || self.max_pending_requests.is_some()
            || self.max_requests_per_connection.is_some()
    }
}

/// Istio `outlierDetection`: an endpoint that fails N times in a row is ejected for
/// `base_ejection_ms × (times ejected)`, never more than `max_ejection_percent` of the
/// endpoints at once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// `consecutive5xxErrors` (Istio default 5; 0 disables).
    pub consecutive_5xx: u32,
    /// `consecutiveGatewayErrors` (502, 503, 504; off by default = 0).
    pub consecutive_gateway: u32,
    /// `interval` (ms, default 10 s): how often ejections are reviewed.
    pub interval_ms: u64,
    /// `baseEjectionTime` (ms, default 30 s).
    pub base_ejection_ms: u64,
    /// `maxEjectionPercent` (default 10). At least one endpoint may always be ejected, as in
    /// Envoy.
    pub max_ejection_percent: u32,
    /// `minHealthPercent` (default 0): below this share of healthy endpoints, nothing is ejected.
    pub min_health_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway: 0,
            interval_ms: 10_000,
            base_ejection_ms: 30_000,
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }
}

/// Linkerd's consecutive failure accrual: after `max_failures` failures in a row an endpoint
/// sits out a penalty (from `min_penalty_ms`, doubling up to `max_penalty_ms`, jittered), then
/// gets one probe request; success restores it, failure sends it back for a longer penalty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureAccrual {
    pub max_failures: u32,
    pub min_penalty_ms: u64,
    pub max_penalty_ms: u64,
    /// 0.0–100.0; Linkerd's default 0.5.
    pub jitter_ratio: f64,
}

impl Default for FailureAccrual {
    fn default() -> Self {
        Self {
            max_failures: 7,
            min_penalty_ms: 1_000,
            max_penalty_ms: 60_000,
            jitter_ratio: 0.5,
        }
    }
}

impl Eq for FailureAccrual {}
impl std::hash::Hash for FailureAccrual {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.max_failures.hash(state);
        self.min_penalty_ms.hash(state);
        self.max_penalty_ms.hash(state);
        self.jitter_ratio.to_bits().hash(state);
    }
}

/// Linkerd's `retryBudget`: retries may add `ratio` of the requests sent, plus
/// `min_per_second`, over a window of `ttl_ms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryBudget {
    pub ratio: f32,
    pub min_per_second: u32,
    pub ttl_ms: u64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            ratio: DEFAULT_RETRY_RATIO,
            min_per_second: DEFAULT_MIN_RETRIES_PER_SECOND,
            ttl_ms: DEFAULT_RETRY_TTL_MS,
        }
    }
}

impl Eq for RetryBudget {}
impl std::hash::Hash for RetryBudget {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.ratio.to_bits().hash(state);
        self.min_per_second.hash(state);
        self.ttl_ms.hash(state);
    }
}

/// The policy for a service, or for one subset of it. Every field `None` = weft's defaults
/// (the Mesh file's `lb`, no limits, no ejection, the default retry budget).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb: Option<LoadBalancer>,
    /// When set, overrides `lb`: requests with the same key go to the same endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<HashOn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_accrual: Option<FailureAccrual>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

impl TrafficPolicy {
    pub fn is_empty(&self) -> bool {
        self == &TrafficPolicy::default()
    }

    /// `self` with every field `over` sets replaced (Istio: a subset's policy overrides the
    /// top-level one field by field).
    pub fn merged(&self, over: &TrafficPolicy) -> TrafficPolicy {
        TrafficPolicy {
            lb: over.lb.or(self.lb),
            consistent_hash: over
                .consistent_hash
                .clone()
                .or_else(|| self.consistent_hash.clone()),
            connection_pool: over
                .connection_pool
                .clone()
                .or_else(|| self.connection_pool.clone()),
            outlier_detection: over
                .outlier_detection
                .clone()
                .or_else(|| self.outlier_detection.clone()),
            failure_accrual: over
                .failure_accrual
                .clone()
                .or_else(|| self.failure_accrual.clone()),
            retry_budget: over
                .retry_budget
                .clone()
                .or_else(|| self.retry_budget.clone()),
        }
    }
}

/// A named subset (Istio DestinationRule `subsets[]`) and its own policy (already merged over
/// the service's).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SubsetPolicy {
    pub name: String,
    pub labels: Labels,
    pub policy: TrafficPolicy,
}

/// Everything a service's policies say, as `config` produces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePolicy {
    pub service: ServiceKey,
    /// Where it came from (`DestinationRule default/reviews`, `ServiceProfile …`), for
    /// `weft routes` and logs.
    pub source: String,
    pub policy: TrafficPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<SubsetPolicy>,
}
