//! Traffic-policy conversions between `model::policy` and the wire: load balancers, consistent
//! hashing, connection pools, outlier detection, failure accrual, retry budgets and subsets.
//!
//! The checks here return a bare reason; the caller wraps it in a [`WireError`] that names the
//! service (and subset), so one message says where and what.

use crate::pb;
use crate::WireError;
use model::{
    ConnectionPool, FailureAccrual, HashOn, LoadBalancer, OutlierDetection, RetryBudget,
    SubsetPolicy, TrafficPolicy,
};

/// The wire name of a load balancer (`Service.lb`, `TrafficPolicy.lb`).
pub fn lb_name(lb: LoadBalancer) -> &'static str {
    match lb {
        LoadBalancer::PeakEwma => "peak-ewma",
        LoadBalancer::RoundRobin => "round-robin",
        LoadBalancer::LeastRequest => "least-request",
        LoadBalancer::Random => "random",
    }
}

/// `None` for the empty name (unset); an unknown name is returned as the error.
pub(crate) fn lb_from(name: &str) -> Result<Option<LoadBalancer>, String> {
    Ok(Some(match name {
        "" => return Ok(None),
        "peak-ewma" => LoadBalancer::PeakEwma,
        "round-robin" => LoadBalancer::RoundRobin,
        "least-request" => LoadBalancer::LeastRequest,
        "random" => LoadBalancer::Random,
        other => return Err(other.to_string()),
    }))
}

/// `None` for an empty policy, which is what an absent one decodes to.
pub(crate) fn service_policy_to(p: &TrafficPolicy) -> Option<pb::TrafficPolicy> {
    (!p.is_empty()).then(|| to_wire(p))
}

pub(crate) fn service_policy_from(
    p: Option<pb::TrafficPolicy>,
    service: &str,
) -> Result<TrafficPolicy, WireError> {
    p.map_or(Ok(TrafficPolicy::default()), |p| {
        from_wire(p).map_err(|why| WireError::Policy {
            service: service.to_string(),
            why,
        })
    })
}

pub(crate) fn subset_to(s: &SubsetPolicy) -> pb::SubsetPolicy {
    pb::SubsetPolicy {
        name: s.name.clone(),
        labels: s.labels.clone().into_iter().collect(),
        policy: Some(to_wire(&s.policy)),
    }
}

pub(crate) fn subset_from(s: pb::SubsetPolicy, service: &str) -> Result<SubsetPolicy, WireError> {
    let policy = match s.policy {
        None => TrafficPolicy::default(),
        Some(p) => from_wire(p).map_err(|why| WireError::Policy {
            service: service.to_string(),
            why: format!("subset {}: {why}", s.name),
        })?,
    };
    Ok(SubsetPolicy {
        name: s.name,
        labels: s.labels.into_iter().collect(),
        policy,
    })
}

fn to_wire(p: &TrafficPolicy) -> pb::TrafficPolicy {
    pb::TrafficPolicy {
        lb: p.lb.map_or("", lb_name).to_string(),
        consistent_hash: p.consistent_hash.as_ref().map(hash_to),
        connection_pool: p.connection_pool.as_ref().map(|c| pb::ConnectionPool {
            max_connections: c.max_connections,
            connect_timeout_ms: c.connect_timeout_ms,
            max_pending_requests: c.max_pending_requests,
            max_requests: c.max_requests,
            max_requests_per_connection: c.max_requests_per_connection,
            max_retries: c.max_retries,
            idle_timeout_ms: c.idle_timeout_ms,
        }),
        outlier_detection: p.outlier_detection.as_ref().map(|o| pb::OutlierDetection {
            consecutive_5xx: o.consecutive_5xx,
            consecutive_gateway: o.consecutive_gateway,
            interval_ms: o.interval_ms,
            base_ejection_ms: o.base_ejection_ms,
            max_ejection_percent: o.max_ejection_percent,
            min_health_percent: o.min_health_percent,
        }),
        failure_accrual: p.failure_accrual.as_ref().map(|f| pb::FailureAccrual {
            max_failures: f.max_failures,
            min_penalty_ms: f.min_penalty_ms,
            max_penalty_ms: f.max_penalty_ms,
            jitter_ratio: f.jitter_ratio,
        }),
        retry_budget: p.retry_budget.as_ref().map(|b| pb::RetryBudget {
            ratio: b.ratio,
            min_per_second: b.min_per_second,
            ttl_ms: b.ttl_ms,
        }),
    }
}

/// A policy from the wire, checked whole as the proxy runs it (`model::valid::traffic_policy`).
fn from_wire(p: pb::TrafficPolicy) -> Result<TrafficPolicy, String> {
    let lb = lb_from(&p.lb).map_err(|lb| format!("unknown load balancer {lb:?}"))?;
    let consistent_hash = p.consistent_hash.map(hash_from).transpose()?;
    let connection_pool = p.connection_pool.map(|c| ConnectionPool {
        max_connections: c.max_connections,
        connect_timeout_ms: c.connect_timeout_ms,
        max_pending_requests: c.max_pending_requests,
        max_requests: c.max_requests,
        max_requests_per_connection: c.max_requests_per_connection,
        max_retries: c.max_retries,
        idle_timeout_ms: c.idle_timeout_ms,
    });
    let outlier_detection = p.outlier_detection.map(|o| OutlierDetection {
        consecutive_5xx: o.consecutive_5xx,
        consecutive_gateway: o.consecutive_gateway,
        interval_ms: o.interval_ms,
        base_ejection_ms: o.base_ejection_ms,
        max_ejection_percent: o.max_ejection_percent,
        min_health_percent: o.min_health_percent,
    });
    let failure_accrual = p.failure_accrual.map(|f| FailureAccrual {
        max_failures: f.max_failures,
        min_penalty_ms: f.min_penalty_ms,
        max_penalty_ms: f.max_penalty_ms,
        jitter_ratio: f.jitter_ratio,
    });
    let retry_budget = p.retry_budget.map(|b| RetryBudget {
        ratio: b.ratio,
        min_per_second: b.min_per_second,
        ttl_ms: b.ttl_ms,
    });
    let policy = TrafficPolicy {
        lb,
        consistent_hash,
        connection_pool,
        outlier_detection,
        failure_accrual,
        retry_budget,
    };
    model::valid::traffic_policy(&policy)?;
    Ok(policy)
}

fn hash_to(h: &HashOn) -> pb::ConsistentHash {
    use pb::consistent_hash::Kind;
    pb::ConsistentHash {
        kind: Some(match h {
            HashOn::Header(name) => Kind::Header(name.clone()),
            HashOn::Cookie { name, path, ttl_s } => Kind::Cookie(pb::HashCookie {
                name: name.clone(),
                path: path.clone(),
                ttl_s: *ttl_s,
            }),
            HashOn::SourceIp => Kind::SourceIp(true),
            HashOn::QueryParam(name) => Kind::QueryParam(name.clone()),
        }),
    }
}

fn hash_from(h: pb::ConsistentHash) -> Result<HashOn, String> {
    use pb::consistent_hash::Kind;
    match h.kind {
        Some(Kind::Header(name)) => Ok(HashOn::Header(name)),
        Some(Kind::Cookie(c)) => Ok(HashOn::Cookie {
            name: c.name,
            path: c.path,
            ttl_s: c.ttl_s,
        }),
        Some(Kind::SourceIp(_)) => Ok(HashOn::SourceIp),
        Some(Kind::QueryParam(name)) => Ok(HashOn::QueryParam(name)),
        // Also what a kind added by a newer control plane decodes to.
        None => Err("consistent hash of an unknown kind".into()),
    }
}
