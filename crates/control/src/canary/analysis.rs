//! Judging a rollout's new version: the destination-side metrics (what its replicas'
//! sidecars counted as received, so a client's retries cannot hide a failure) of the replicas
//! of both versions, read from their proxies' admin `/metrics` at two moments, compared with
//! the thresholds.

use crate::registry::ProxyRecord;
use model::canary::{Canary, Judged, Target};
use stat::{Kind, Reading, Replica};
use std::collections::HashMap;
use std::time::Duration;

/// How long one proxy's `/metrics` may take.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Which version a replica serves, if it is one of the rollout's.
pub fn version_of(c: &Canary, p: &ProxyRecord) -> Option<String> {
    let n = &p.node;
    if n.namespace != c.namespace || n.mode == "ingress" {
        return None;
    }
    match &c.target {
        Target::Subsets { service } => (n.service == *service)
            .then(|| n.labels.get("version").cloned())
            .flatten()
            .filter(|v| *v == c.from || *v == c.to),
        Target::HttpRoute { .. } | Target::TrafficSplit { .. } => [&c.from, &c.to]
            .into_iter()
            .find(|v| **v == n.service)
            .cloned(),
    }
}

/// The rollout's replicas: their stat rows' keys, by version.
pub fn replicas(c: &Canary, proxies: &[ProxyRecord]) -> Vec<(String, Replica, String)> {
    proxies
        .iter()
        .filter_map(|p| {
            let version = version_of(c, p)?;
            let admin = p.node.admin?;
            Some((
                version,
                Replica {
                    namespace: p.node.namespace.clone(),
                    service: p.node.service.clone(),
                    workload: p.node.workload.clone(),
                    ready: p.ready,
                    proxy: p.node.instance.clone(),
                },
                format!("http://{admin}/metrics"),
            ))
        })
        .collect()
}

/// Reads every replica's `/metrics` (those that do not answer in time are left out).
pub async fn read(urls: &[(String, String)]) -> HashMap<String, Reading> {
    let client = crate::proxy_admin::client();
    let reads = urls.iter().map(|(proxy, url)| {
        let client = client.clone();
        async move {
            let (_, body) = crate::proxy_admin::get(&client, url, READ_TIMEOUT)
                .await
                .ok()?;
            let got = Reading::parse(std::str::from_utf8(&body).ok()?).ok()?;
            Some((proxy.clone(), got))
        }
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The new version's figures between `before` and `after` (`secs` apart), judged.
pub fn judge(
    c: &Canary,
    replicas: &[(String, Replica, String)],
    before: &HashMap<String, Reading>,
    after: &HashMap<String, Reading>,
    secs: f64,
    now_ms: u64,
) -> Judged {
    let (kind, row_of): (Kind, fn(&Replica) -> String) = match c.target {
        Target::Subsets { .. } => (Kind::Workload, |r| r.workload.clone()),
        _ => (Kind::Service, |r| r.service.clone()),
    };
    let mine: Vec<Replica> = replicas
        .iter()
        .filter(|(v, _, _)| *v == c.to)
        .map(|(_, r, _)| r.clone())
        .collect();
    let names: Vec<String> = mine.iter().map(row_of).collect();
    let rows = stat::rows(kind, &mine, before, after, secs);
    let (mut requests, mut failed, mut p99) = (0u64, 0u64, None::<f64>);
    for row in rows.iter().filter(|r| names.contains(&r.name)) {
        requests += row.requests;
        failed += row.failed;
        if let Some(l) = &row.latency_ms {
            // Several workloads of one version: the slowest one's p99 (conservative).
            p99 = Some(p99.map_or(l.p99, |p: f64| p.max(l.p99)));
        }
    }
    let error_rate = (requests > 0).then(|| failed as f64 / requests as f64);
    let mut reasons = Vec::new();
    let a = &c.analysis;
    let verdict = if requests < a.min_requests.max(1) {
        reasons.push(format!(
            "{requests} requests to {} in {secs:.0}s, fewer than the {} an analysis needs",
            c.to, a.min_requests
        ));
        "waiting"
    } else {
        if let Some(rate) = error_rate.filter(|r| *r > a.max_error_rate) {
            reasons.push(format!(
                "error rate {:.2}% is over {:.2}% ({failed} of {requests} failed)",
                rate * 100.0,
                a.max_error_rate * 100.0
            ));
        }
        if let (Some(max), Some(p)) = (a.max_p99, p99) {
            let max_ms = max.as_secs_f64() * 1000.0;
            if p > max_ms {
                reasons.push(format!("p99 {p:.0} ms is over {max_ms:.0} ms"));
            }
        }
        if reasons.is_empty() {
            "passed"
        } else {
            "failed"
        }
    };
    Judged {
        at_ms: now_ms,
        requests,
        failed,
        error_rate,
        p99_ms: p99,
        verdict: verdict.into(),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::canary::Analysis;

    fn canary() -> Canary {
        Canary {
            namespace: "default".into(),
            name: "greeter".into(),
            target: Target::Subsets {
                service: "greeter".into(),
            },
            from: "v1".into(),
            to: "v2".into(),
            steps: vec![10, 100],
            interval: Duration::from_secs(10),
            analysis: Analysis {
                max_error_rate: 0.05,
                max_p99: Some(Duration::from_millis(100)),
                min_requests: 50,
                failed_checks: 1,
            },
            ab: None,
            pre_rollout: None,
            pre_promotion: None,
        }
    }

    /// A gRPC server's sidecar: `ok` calls answered grpc-status 0 and `unavailable` answered
    /// 14 — all of them HTTP 200 — in 5 ms.
    fn metrics(workload: &str, ok: u64, unavailable: u64) -> Reading {
        let labels = |grpc: &str| {
            format!("reporter=\"destination\",destination_service_name=\"greeter\",destination_service_namespace=\"default\",destination_workload=\"{workload}\",destination_workload_namespace=\"default\",response_code=\"200\",grpc_response_status=\"{grpc}\",request_protocol=\"grpc\"")
        };
        let mut t = String::new();
        for (grpc, n) in [("0", ok), ("14", unavailable)] {
            t += &format!("istio_requests_total{{{}}} {n}\n", labels(grpc));
            for le in ["1.0", "5.0", "10.0", "+Inf"] {
                let count = if le == "1.0" { 0 } else { n };
                t += &format!(
                    "istio_request_duration_milliseconds_bucket{{le=\"{le}\",{}}} {count}\n",
                    labels(grpc)
                );
            }
        }
        Reading::parse(&t).unwrap()
    }

    fn replicas() -> Vec<(String, Replica, String)> {
        ["v1", "v2"]
            .into_iter()
            .map(|v| {
                (
                    v.to_string(),
                    Replica {
                        namespace: "default".into(),
                        service: "greeter".into(),
                        workload: format!("greeter-{v}"),
                        ready: true,
                        proxy: format!("greeter-{v}-0"),
                    },
                    String::new(),
                )
            })
            .collect()
    }

    #[test]
    fn grpc_calls_are_judged_by_their_grpc_status_not_their_http_status() {
        let c = canary();
        let before: HashMap<String, Reading> = [
            ("greeter-v1-0".to_string(), metrics("greeter-v1", 0, 0)),
            ("greeter-v2-0".to_string(), metrics("greeter-v2", 0, 0)),
        ]
        .into();
        // v1's failures do not count against v2; v2's UNAVAILABLE answers (HTTP 200) do.
        let after: HashMap<String, Reading> = [
            ("greeter-v1-0".to_string(), metrics("greeter-v1", 10, 90)),
            ("greeter-v2-0".to_string(), metrics("greeter-v2", 90, 10)),
        ]
        .into();
        let j = judge(&c, &replicas(), &before, &after, 10.0, 1);
        assert_eq!((j.requests, j.failed), (100, 10));
        assert_eq!(j.verdict, "failed", "{j:?}");
        assert!(
            j.reasons[0].contains("error rate 10.00% is over 5.00%"),
            "{j:?}"
        );
        assert!(j.p99_ms.unwrap() <= 5.0, "{j:?}");
        // Healthy, but too few calls: not judged yet.
        let few: HashMap<String, Reading> =
            [("greeter-v2-0".to_string(), metrics("greeter-v2", 20, 0))].into();
        let j = judge(&c, &replicas(), &before, &few, 10.0, 1);
        assert_eq!(j.verdict, "waiting", "{j:?}");
        let many: HashMap<String, Reading> =
            [("greeter-v2-0".to_string(), metrics("greeter-v2", 200, 1))].into();
        assert_eq!(
            judge(&c, &replicas(), &before, &many, 10.0, 1).verdict,
            "passed"
        );
    }
}
