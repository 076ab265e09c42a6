//! A window's rows from two readings of the proxies' `/metrics`: per-series deltas of the
//! `reporter="destination"` request counters and latency buckets, summed per service or
//! workload over its replicas.

use crate::prom::{self, ParseError, Sample};
use crate::quantile::histogram_quantile;
use crate::report::{Percentiles, StatRow};
use std::collections::{BTreeMap, HashMap};

const REQUESTS: &str = "istio_requests_total";
const BUCKETS: &str = "istio_request_duration_milliseconds_bucket";

/// What the rows are about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One row per service, over the replicas of all its workloads.
    Service,
    /// One row per workload.
    Workload,
}

impl Kind {
    /// The report's `kind`: `"service"` or `"workload"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Workload => "workload",
            Kind::Service => "service",
        }
    }

    /// The row a replica belongs to: (namespace, name).
    pub fn row_of(self, r: &Replica) -> (String, String) {
        match self {
            Kind::Workload => (r.namespace.clone(), r.workload.clone()),
            Kind::Service => (r.namespace.clone(), r.service.clone()),
        }
    }

    /// The row a `reporter="destination"` sample counts in, from its labels.
    fn row_of_sample(self, s: &Sample) -> Option<(String, String)> {
        let (ns, name) = match self {
            Kind::Workload => ("destination_workload_namespace", "destination_workload"),
            Kind::Service => ("destination_service_namespace", "destination_service_name"),
        };
        Some((s.label(ns)?.to_string(), s.label(name)?.to_string()))
    }
}

/// A replica whose traffic the rows count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub namespace: String,
    pub service: String,
    pub workload: String,
    /// Whether it is ready (a row's `replicas` counts the ready ones).
    pub ready: bool,
    /// The key of its proxy's readings in the maps given to [`rows`].
    pub proxy: String,
}

/// One proxy's reading: `reporter="destination"` request counters and latency buckets, by
/// series (name and every label).
#[derive(Clone, Debug, Default)]
pub struct Reading(HashMap<String, Sample>);

impl Reading {
    /// The samples of `/metrics` text that the rows need.
    pub fn parse(text: &str) -> Result<Reading, ParseError> {
        let samples = prom::parse_only(text, |n| n == REQUESTS || n == BUCKETS)?;
        Ok(Reading(
            samples
                .into_iter()
                .filter(|s| s.label("reporter") == Some("destination"))
                .map(|s| (series_key(&s), s))
                .collect(),
        ))
    }
}

fn series_key(s: &Sample) -> String {
    let mut labels = s.labels.clone();
    labels.sort();
    let mut k = s.name.clone();
    for (n, v) in labels {
        k.push('\u{1}');
        k.push_str(&n);
        k.push('=');
        k.push_str(&v);
    }
    k
}

/// `after - before` per series; a counter that went down (the proxy restarted) counts from 0.
fn deltas<'a>(before: Option<&Reading>, after: &'a Reading) -> Vec<(&'a Sample, f64)> {
    after
        .0
        .iter()
        .map(|(k, s)| {
            let v0 = before.and_then(|b| b.0.get(k)).map_or(0.0, |b| b.value);
            let d = if s.value >= v0 { s.value - v0 } else { s.value };
            (s, d)
        })
        .collect()
}

#[derive(Default)]
struct Acc {
    requests: f64,
    failed: f64,
    meshed: f64,
    mtls: f64,
    /// `(le, count)` increments, one entry per bound and series (merged by the quantile).
    buckets: Vec<(f64, f64)>,
    sampled: usize,
}

impl Acc {
    fn add(&mut self, s: &Sample, d: f64) {
        if s.name == REQUESTS {
            self.requests += d;
            let code = s.label("response_code").unwrap_or("");
            // A gRPC call fails with any status but OK, whatever its HTTP status (200), as
            // Linkerd classifies gRPC responses.
            let grpc = s.label("grpc_response_status").unwrap_or("");
            if (code.len() == 3 && code.starts_with('5')) || !matches!(grpc, "" | "0") {
                self.failed += d;
            }
            if !matches!(s.label("source_principal"), None | Some("" | "unknown")) {
                self.meshed += d;
            }
            if s.label("connection_security_policy") == Some("mutual_tls") {
                self.mtls += d;
            }
        } else if let Some(le) = s.label("le").and_then(prom::parse_value) {
            self.buckets.push((le, d));
        }
    }

    fn row(&self, key: &(String, String), service: String, replicas: usize, secs: f64) -> StatRow {
        let requests = self.requests.round() as u64;
        let failed = self.failed.round() as u64;
        let share = |n: f64| (self.requests > 0.0).then(|| n / self.requests);
        let latency_ms = (self.requests > 0.0)
            .then(|| {
                Some(Percentiles {
                    p50: histogram_quantile(0.50, &self.buckets)?,
                    p95: histogram_quantile(0.95, &self.buckets)?,
                    p99: histogram_quantile(0.99, &self.buckets)?,
                })
            })
            .flatten();
        StatRow {
            name: key.1.clone(),
            namespace: key.0.clone(),
            service,
            replicas,
            sampled: self.sampled,
            requests,
            succeeded: requests.saturating_sub(failed),
            failed,
            success_rate: share(self.requests - self.failed),
            rps: if secs > 0.0 {
                self.requests / secs
            } else {
                0.0
            },
            latency_ms,
            meshed_share: share(self.meshed),
            mtls_share: share(self.mtls),
        }
    }
}

/// The rows of `replicas` (one per service or workload, by `kind`, sorted by namespace and
/// name, each even without traffic) from two readings of their proxies, `secs` apart.
/// `before` lacks a proxy that was not there at the start (all its counts are new); `after`
/// lacks one that could not be read at the end. Samples of rows that no replica declares are
/// left out.
pub fn rows(
    kind: Kind,
    replicas: &[Replica],
    before: &HashMap<String, Reading>,
    after: &HashMap<String, Reading>,
    secs: f64,
) -> Vec<StatRow> {
    // Every row the replicas declare, with its service and ready replicas.
    let mut declared: BTreeMap<(String, String), (String, usize)> = BTreeMap::new();
    for r in replicas {
        let e = declared
            .entry(kind.row_of(r))
            .or_insert_with(|| (r.service.clone(), 0));
        e.1 += usize::from(r.ready);
    }
    let mut acc: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for (proxy, r) in after {
        for (s, d) in deltas(before.get(proxy), r) {
            if let Some(row) = kind.row_of_sample(s).filter(|r| declared.contains_key(r)) {
                acc.entry(row).or_default().add(s, d);
            }
        }
    }
    // Which proxies were read, per row (a replica with no traffic yet has no series).
    for r in replicas {
        if after.contains_key(&r.proxy) {
            acc.entry(kind.row_of(r)).or_default().sampled += 1;
        }
    }
    declared
        .iter()
        .map(|(key, (service, replicas))| {
            acc.get(key)
                .unwrap_or(&Acc::default())
                .row(key, service.clone(), *replicas, secs)
        })
        .collect()
}

/// One edge of the mesh over a window: the requests one caller (what `src` names: a workload,
/// a service, `unknown` for a caller outside the mesh…) made to one service, as that service's
/// replicas counted them.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct EdgeRow {
    pub src: String,
    /// The caller's SPIFFE identity, `unknown` without one.
    pub src_principal: String,
    pub dst_namespace: String,
    /// The service called (by [`Kind::Workload`]: the workload that answered).
    pub dst_name: String,
    pub dst_principal: String,
    pub requests: u64,
    pub failed: u64,
    pub success_rate: Option<f64>,
    pub rps: f64,
    pub latency_ms: Option<Percentiles>,
    /// The share of its requests that came over mutual TLS.
    pub mtls_share: Option<f64>,
}

/// Every edge that carried requests between two readings `secs` apart, sorted, from the
/// `reporter="destination"` series of every proxy read, to services or (by `kind`) to
/// workloads. `src(namespace, workload, principal)`
/// names the caller from its series' `source_*` labels (`unknown` where a label is missing):
/// the calls of every caller it gives the same name are one edge.
pub fn edge_rows(
    kind: Kind,
    before: &HashMap<String, Reading>,
    after: &HashMap<String, Reading>,
    secs: f64,
    src: impl Fn(&str, &str, &str) -> String,
) -> Vec<EdgeRow> {
    type Key = [String; 5];
    let label = |s: &Sample, n: &str| s.label(n).unwrap_or("unknown").to_string();
    let mut acc: BTreeMap<Key, Acc> = BTreeMap::new();
    for (proxy, r) in after {
        for (s, d) in deltas(before.get(proxy), r) {
            let principal = label(s, "source_principal");
            let key: Key = [
                src(
                    s.label("source_workload_namespace").unwrap_or("unknown"),
                    s.label("source_workload").unwrap_or("unknown"),
                    &principal,
                ),
                principal,
                kind.row_of_sample(s).map_or("unknown".into(), |r| r.0),
                kind.row_of_sample(s).map_or("unknown".into(), |r| r.1),
                label(s, "destination_principal"),
            ];
            acc.entry(key).or_default().add(s, d);
        }
    }
    acc.into_iter()
        .filter(|(_, a)| a.requests > 0.0)
        .map(|(k, a)| {
            let row = a.row(&(k[2].clone(), k[3].clone()), k[3].clone(), 0, secs);
            let [src, src_principal, dst_namespace, dst_name, dst_principal] = k;
            EdgeRow {
                src,
                src_principal,
                dst_namespace,
                dst_name,
                dst_principal,
                requests: row.requests,
                failed: row.failed,
                success_rate: row.success_rate,
                rps: row.rps,
                latency_ms: row.latency_ms,
                mtls_share: row.mtls_share,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    fn series(labels: &str, code: &str, principal: &str, policy: &str) -> String {
        format!(
            "reporter=\"destination\",destination_service_name=\"hello\",destination_service_namespace=\"default\",destination_workload=\"hello-v1\",destination_workload_namespace=\"default\",response_code=\"{code}\",source_principal=\"{principal}\",connection_security_policy=\"{policy}\"{labels}"
        )
    }

    /// `/metrics` of a hello replica: `ok` 200s (mTLS, meshed), `bad` 500s (plaintext, not
    /// meshed), latencies all in one bucket per class, plus `reporter="source"` noise.
    fn metrics(ok: u64, bad: u64) -> String {
        let a = series(
            "",
            "200",
            "spiffe://cluster.local/ns/default/sa/a",
            "mutual_tls",
        );
        let b = series("", "500", "unknown", "none");
        let mut t = String::from("# TYPE istio_requests counter\n");
        t += &format!("istio_requests_total{{{a}}} {ok}\nistio_requests_total{{{b}}} {bad}\n");
        t += "istio_requests_total{reporter=\"source\",destination_service_name=\"hello\",destination_service_namespace=\"default\",response_code=\"500\"} 1000\n";
        for (le, okn, badn) in [
            ("0.5", 0, 0),
            ("1.0", 0, bad),
            ("5.0", ok, bad),
            ("10.0", ok, bad),
            ("+Inf", ok, bad),
        ] {
            t += &format!("istio_request_duration_milliseconds_bucket{{le=\"{le}\",{a}}} {okn}\n");
            t += &format!("istio_request_duration_milliseconds_bucket{{le=\"{le}\",{b}}} {badn}\n");
        }
        t += "# EOF\n";
        t
    }

    /// Ready replicas `(service, workload, instance)` in `default`, keyed by instance.
    fn replicas(rs: &[(&str, &str, &str)]) -> Vec<Replica> {
        rs.iter()
            .map(|(svc, wl, inst)| Replica {
                namespace: "default".into(),
                service: svc.to_string(),
                workload: wl.to_string(),
                ready: true,
                proxy: inst.to_string(),
            })
            .collect()
    }

    fn reading(text: &str) -> Reading {
        Reading::parse(text).unwrap()
    }

    #[test]
    fn rows_sum_replica_deltas() {
        let hello = [
            ("hello", "hello-v1", "hello-v1-0"),
            ("hello", "hello-v1", "hello-v1-10"),
        ];
        let all = replicas(&[hello[0], hello[1], ("slow", "slow-v1", "slow-v1-0")]);
        let before: HashMap<String, Reading> = [
            ("hello-v1-0".into(), reading(&metrics(100, 10))),
            ("hello-v1-10".into(), reading(&metrics(50, 0))),
            ("slow-v1-0".into(), reading("")),
        ]
        .into();
        // Replica 0: +90 ok, +10 bad. Replica 1 restarted: its counters start over at 10/0.
        let after: HashMap<String, Reading> = [
            ("hello-v1-0".into(), reading(&metrics(190, 20))),
            ("hello-v1-10".into(), reading(&metrics(10, 0))),
            ("slow-v1-0".into(), reading("")),
        ]
        .into();
        let rs = rows(Kind::Service, &all, &before, &after, 10.0);
        assert_eq!(rs.len(), 2);
        let h = &rs[0];
        assert_eq!((h.name.as_str(), h.replicas, h.sampled), ("hello", 2, 2));
        assert_eq!((h.requests, h.succeeded, h.failed), (110, 100, 10));
        assert!(close(h.success_rate, 100.0 / 110.0));
        assert!((h.rps - 11.0).abs() < 1e-9);
        assert!(close(h.meshed_share, 100.0 / 110.0));
        assert!(close(h.mtls_share, 100.0 / 110.0));
        let lat = h.latency_ms.as_ref().unwrap();
        // 10 in (0.5, 1], 100 in (1, 5].
        assert!((lat.p50 - (1.0 + 4.0 * (45.0 / 100.0))).abs() < 1e-9);
        assert!((lat.p99 - (1.0 + 4.0 * (98.9 / 100.0))).abs() < 1e-9);
        let s = &rs[1];
        assert_eq!((s.name.as_str(), s.requests, s.rps), ("slow", 0, 0.0));
        assert_eq!(
            (s.success_rate, s.latency_ms.clone(), s.mtls_share),
            (None, None, None)
        );

        // One service, and workloads.
        let rs = rows(Kind::Service, &replicas(&hello), &before, &after, 10.0);
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].requests, 110);
        let rs = rows(Kind::Workload, &replicas(&hello), &before, &after, 10.0);
        assert_eq!(
            (rs.len(), rs[0].name.as_str(), rs[0].service.as_str()),
            (1, "hello-v1", "hello")
        );
        assert_eq!(rs[0].requests, 110);
        // A replica new at the end counts everything it has.
        let fresh: HashMap<String, Reading> =
            [("hello-v1-0".into(), reading(&metrics(190, 20)))].into();
        let rs = rows(Kind::Service, &all, &HashMap::new(), &fresh, 10.0);
        assert_eq!((rs[0].requests, rs[0].sampled), (210, 1));
    }

    #[test]
    fn samples_of_rows_no_replica_declares_are_left_out() {
        let slow = replicas(&[("slow", "slow-v1", "slow-v1-0")]);
        // A proxy of the rows that reports hello's traffic: not slow's.
        let after: HashMap<String, Reading> =
            [("slow-v1-0".into(), reading(&metrics(10, 0)))].into();
        let rs = rows(Kind::Service, &slow, &HashMap::new(), &after, 1.0);
        assert_eq!(rs.len(), 1);
        assert_eq!((rs[0].name.as_str(), rs[0].requests), ("slow", 0));
        assert_eq!(rs[0].sampled, 1);
    }

    #[test]
    fn grpc_calls_fail_by_their_status() {
        let hello = replicas(&[("hello", "hello-v1", "hello-v1-0")]);
        let grpc = |status: &str, n: u64| {
            let labels = format!(",request_protocol=\"grpc\",grpc_response_status=\"{status}\"");
            let a = series(&labels, "200", "unknown", "none");
            format!("istio_requests_total{{{a}}} {n}\n")
        };
        let text = grpc("0", 7) + &grpc("14", 2) + &grpc("4", 1) + "# EOF\n";
        let after: HashMap<String, Reading> = [("hello-v1-0".into(), reading(&text))].into();
        let rs = rows(Kind::Service, &hello, &HashMap::new(), &after, 1.0);
        assert_eq!((rs[0].requests, rs[0].succeeded, rs[0].failed), (10, 7, 3));
    }

    #[test]
    fn kinds_name_rows() {
        let r = &replicas(&[("hello", "hello-v1", "hello-v1-0")])[0];
        assert_eq!(Kind::Service.as_str(), "service");
        assert_eq!(Kind::Workload.as_str(), "workload");
        assert_eq!(
            Kind::Service.row_of(r),
            ("default".to_string(), "hello".to_string())
        );
        assert_eq!(
            Kind::Workload.row_of(r),
            ("default".to_string(), "hello-v1".to_string())
        );
    }

    #[test]
    fn edges_are_counted_per_caller_and_service() {
        let before: HashMap<String, Reading> =
            [("hello-v1-0".into(), reading(&metrics(100, 10)))].into();
        let after: HashMap<String, Reading> =
            [("hello-v1-0".into(), reading(&metrics(150, 30)))].into();
        let workload = |ns: &str, w: &str, _: &str| format!("{ns}/{w}");
        let es = edge_rows(Kind::Service, &before, &after, 5.0, workload);
        assert_eq!(es.len(), 2, "{es:?}");
        // The meshed caller: 50 more, all fine, all mTLS.
        let a = es
            .iter()
            .find(|e| e.src_principal == "spiffe://cluster.local/ns/default/sa/a")
            .unwrap();
        assert_eq!((a.requests, a.failed, a.rps), (50, 0, 10.0));
        assert_eq!((a.dst_name.as_str(), a.mtls_share), ("hello", Some(1.0)));
        // To workloads: the one that answered.
        let to = edge_rows(Kind::Workload, &before, &after, 5.0, workload);
        assert!(to.iter().all(|e| e.dst_name == "hello-v1"), "{to:?}");
        // The plaintext one: 20 more, all failed.
        let u = es.iter().find(|e| e.src_principal == "unknown").unwrap();
        assert_eq!((u.requests, u.failed, u.success_rate), (20, 20, Some(0.0)));
        assert_eq!(u.mtls_share, Some(0.0));
        // Nothing new: no edge.
        assert!(edge_rows(Kind::Service, &after, &after, 5.0, workload).is_empty());
        // The caller is named as `src` names it (edges differ by principal too).
        let named = edge_rows(Kind::Service, &before, &after, 5.0, |_, _, p| {
            format!("caller {p}")
        });
        assert_eq!(named[0].src, format!("caller {}", named[0].src_principal));
    }
}
