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
    let outlier_detection = p.outlier_detection.map(outlier_from).transpose()?;
    let failure_accrual = p.failure_accrual.map(accrual_from).transpose()?;
    let retry_budget = p.retry_budget.map(budget_from).transpose()?;
    Ok(TrafficPolicy {
        lb,
        consistent_hash,
        connection_pool,
        outlier_detection,
        failure_accrual,
        retry_budget,
    })
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
    let named = |what: &str, name: String| {
        if name.is_empty() {
            Err(format!("consistent hash on a {what} without a name"))
        } else {
            Ok(name)
        }
    };
    match h.kind {
        Some(Kind::Header(name)) => Ok(HashOn::Header(named("header", name)?)),
        Some(Kind::Cookie(c)) => Ok(HashOn::Cookie {
            name: named("cookie", c.name)?,
            path: c.path,
            ttl_s: c.ttl_s,
        }),
        Some(Kind::SourceIp(_)) => Ok(HashOn::SourceIp),
        Some(Kind::QueryParam(name)) => Ok(HashOn::QueryParam(named("query parameter", name)?)),
        // Also what a kind added by a newer control plane decodes to.
        None => Err("consistent hash of an unknown kind".into()),
    }
}

fn outlier_from(o: pb::OutlierDetection) -> Result<OutlierDetection, String> {
    // A zero review period would make the proxy's ejection timer spin (or panic, for tokio's).
    if o.interval_ms == 0 {
        return Err("outlier detection interval of 0 ms".into());
    }
    for (what, pct) in [
        ("max ejection", o.max_ejection_percent),
        ("min health", o.min_health_percent),
    ] {
        if pct > 100 {
            return Err(format!(
                "outlier detection {what} percent {pct} is above 100"
            ));
        }
    }
    Ok(OutlierDetection {
        consecutive_5xx: o.consecutive_5xx,
        consecutive_gateway: o.consecutive_gateway,
        interval_ms: o.interval_ms,
        base_ejection_ms: o.base_ejection_ms,
        max_ejection_percent: o.max_ejection_percent,
        min_health_percent: o.min_health_percent,
    })
}

fn accrual_from(f: pb::FailureAccrual) -> Result<FailureAccrual, String> {
    // `contains` is false for NaN too.
    if !(0.0..=100.0).contains(&f.jitter_ratio) {
        return Err(format!(
            "failure accrual jitter ratio {} is not within 0..=100",
            f.jitter_ratio
        ));
    }
    if f.min_penalty_ms > f.max_penalty_ms {
        return Err(format!(
            "failure accrual min penalty {} ms is above the max {} ms",
            f.min_penalty_ms, f.max_penalty_ms
        ));
    }
    Ok(FailureAccrual {
        max_failures: f.max_failures,
        min_penalty_ms: f.min_penalty_ms,
        max_penalty_ms: f.max_penalty_ms,
        jitter_ratio: f.jitter_ratio,
    })
}

fn budget_from(b: pb::RetryBudget) -> Result<RetryBudget, String> {
    if !(b.ratio.is_finite() && b.ratio >= 0.0) {
        return Err(format!(
            "retry budget ratio {} is not a finite ratio >= 0",
            b.ratio
        ));
    }
    // The budget is counted over this window; an empty window counts nothing.
    if b.ttl_ms == 0 {
        return Err("retry budget window of 0 ms".into());
    }
    Ok(RetryBudget {
        ratio: b.ratio,
        min_per_second: b.min_per_second,
        ttl_ms: b.ttl_ms,
    })
}
