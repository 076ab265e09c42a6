//! `weft stat [SERVICE|workload/W]`: success rate, RPS, p50/p95/p99 latency, meshed and mTLS
//! share per service (or workload) over a window, from the proxies' Istio metrics.
//!
//! How: every relevant sidecar's admin `/metrics` is read at the start of the window and again
//! at its end; the numbers come from the deltas of the `reporter="destination"` series (what the
//! replicas of a service received) summed over the replicas, as Prometheus's
//! `sum(increase(…[window]))` would give. Latency quantiles use Prometheus's
//! `histogram_quantile` interpolation over the deltas of
//! `istio_request_duration_milliseconds_bucket`. A success is a request not answered 5xx (as
//! Istio's dashboards count it); meshed means a `source_principal` other than `unknown` (the
//! caller proved a mesh identity); mTLS means `connection_security_policy="mutual_tls"`.
//!
//! `-o json` prints one document whose schema is stable (fields may be added, never renamed or
//! removed):
//!
//! ```text
//! {
//!   "schema": "weft.stat/v1",
//!   "mesh": "hello",
//!   "kind": "service",              // what the rows are: "service" or "workload"
//!   "window_s": 10.002,             // measured between the midpoints of the two readings
//!   "requested_window_s": 10.0,
//!   "start_ms": 1795651929017,      // Unix ms of the first and second reading (midpoints)
//!   "end_ms": 1795651939019,
//!   "rows": [{
//!     "name": "hello",              // the service, or the workload
//!     "namespace": "default",
//!     "service": "hello",           // the service (the workload's, for workload rows)
//!     "replicas": 2,                // ready replicas at the end of the window
//!     "sampled": 2,                 // proxies whose counters were read at both ends
//!     "requests": 2000,             // requests received in the window
//!     "succeeded": 1800,            // not answered 5xx
//!     "failed": 200,                // answered 5xx
//!     "success_rate": 0.9,          // null without requests
//!     "rps": 199.96,                // requests / window_s
//!     "latency_ms": {"p50": 2.1, "p95": 4.7, "p99": 9.1},   // null without requests
//!     "meshed_share": 1.0,          // null without requests
//!     "mtls_share": 1.0             // null without requests
//!   }],
//!   "warnings": []                  // proxies that could not be read, and why
//! }
//! ```

use super::live::{self, unix_ms};
use super::prom::{self, Sample};
use super::{parse_duration, runtime, Output};
use control::status::{Status, WorkloadStatus};
use model::ServiceKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The `schema` of `weft stat -o json`.
pub const SCHEMA: &str = "weft.stat/v1";

const REQUESTS: &str = "istio_requests_total";
const BUCKETS: &str = "istio_request_duration_milliseconds_bucket";

#[derive(clap::Args)]
#[command(
    after_long_help = "JSON output (-o json), schema weft.stat/v1: {schema, mesh, kind \
    (service|workload), window_s, requested_window_s, start_ms, end_ms, rows: [{name, namespace, \
    service, replicas, sampled, requests, succeeded, failed, success_rate, rps, latency_ms: {p50, \
    p95, p99}, meshed_share, mtls_share}], warnings}. Shares and rates are fractions (0..1); \
    success_rate, latency_ms and the shares are null for a row without requests."
)]
pub struct StatArgs {
    /// A service (NAME, NAME.NAMESPACE or the FQDN), `workload/NAME` for one workload, or
    /// `workload/` for every workload [default: every service]
    target: Option<String>,
    /// How long to measure: counters are read at the start and at the end
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    window: Duration,
    /// Which mesh (when several run)
    #[arg(long)]
    mesh: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Output,
}

/// What the rows are about.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    AllServices,
    Service(ServiceKey),
    /// `None`: every workload.
    Workload(Option<String>),
}

impl Target {
    fn parse(arg: Option<&str>) -> anyhow::Result<Target> {
        Ok(match arg {
            None => Target::AllServices,
            Some(a) => match a.strip_prefix("workload/") {
                Some("" | "*") => Target::Workload(None),
                Some(w) => Target::Workload(Some(w.to_string())),
                None => Target::Service(live::service_key(a)?),
            },
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            Target::Workload(_) => "workload",
            _ => "service",
        }
    }

    /// Whether replica `w` belongs to the rows.
    fn covers(&self, w: &WorkloadStatus) -> bool {
        match self {
            Target::AllServices | Target::Workload(None) => true,
            Target::Service(k) => w.service == k.name && w.namespace == k.namespace,
            Target::Workload(Some(name)) => &w.workload == name,
        }
    }

    /// The row a replica belongs to: (namespace, name).
    fn row_of(&self, w: &WorkloadStatus) -> (String, String) {
        match self {
            Target::Workload(_) => (w.namespace.clone(), w.workload.clone()),
            _ => (w.namespace.clone(), w.service.clone()),
        }
    }

    /// The row a `reporter="destination"` sample counts in, from its labels.
    fn row_of_sample(&self, s: &Sample) -> Option<(String, String)> {
        let (ns, name) = match self {
            Target::Workload(_) => ("destination_workload_namespace", "destination_workload"),
            _ => ("destination_service_namespace", "destination_service_name"),
        };
        Some((s.label(ns)?.to_string(), s.label(name)?.to_string()))
    }
}

/// The JSON document (`weft.stat/v1`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatReport {
    pub schema: String,
    pub mesh: String,
    pub kind: String,
    pub window_s: f64,
    pub requested_window_s: f64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub rows: Vec<StatRow>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatRow {
    pub name: String,
    pub namespace: String,
    pub service: String,
    pub replicas: usize,
    pub sampled: usize,
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub success_rate: Option<f64>,
    pub rps: f64,
    pub latency_ms: Option<Percentiles>,
    pub meshed_share: Option<f64>,
    pub mtls_share: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Prometheus's `histogram_quantile(q, …)` over cumulative buckets `(le, count)`: the bucket
/// holding the rank, linear interpolation inside it (from 0 for the first bucket), the upper
/// bound of the highest finite bucket when the rank falls in `+Inf`. `None` where Prometheus
/// gives NaN (no `+Inf` bucket, fewer than two buckets, no observations).
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if q.is_nan() {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    // Same bounds merged, sorted, and counts forced monotonic (as Prometheus does).
    let mut b: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    let mut sorted = buckets.to_vec();
    sorted.sort_by(|x, y| x.0.total_cmp(&y.0));
    for (le, n) in sorted {
        match b.last_mut() {
            Some(last) if last.0 == le => last.1 += n,
            _ => b.push((le, n)),
        }
    }
    if b.len() < 2 || b.last().map(|x| x.0) != Some(f64::INFINITY) {
        return None;
    }
    let mut max = 0.0f64;
    for x in &mut b {
        max = max.max(x.1);
        x.1 = max;
    }
    let observations = b[b.len() - 1].1;
    if observations <= 0.0 {
        return None;
    }
    let rank = q * observations;
    let i = b.iter().position(|x| x.1 >= rank).unwrap_or(b.len() - 1);
    if i == b.len() - 1 {
        return Some(b[b.len() - 2].0);
    }
    if i == 0 && b[0].0 <= 0.0 {
        return Some(b[0].0);
    }
    let (start, count, rank) = if i == 0 {
        (0.0, b[0].1, rank)
    } else {
        (b[i - 1].0, b[i].1 - b[i - 1].1, rank - b[i - 1].1)
    };
    if count <= 0.0 {
        return Some(start);
    }
    Some(start + (b[i].0 - start) * (rank / count))
}

/// One proxy's reading: `reporter="destination"` request counters and latency buckets, by
/// series (name and every label).
type Reading = HashMap<String, Sample>;

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

/// The samples of `/metrics` text that `weft stat` needs.
fn reading(text: &str) -> Result<Reading, prom::ParseError> {
    let samples = prom::parse_only(text, |n| n == REQUESTS || n == BUCKETS)?;
    Ok(samples
        .into_iter()
        .filter(|s| s.label("reporter") == Some("destination"))
        .map(|s| (series_key(&s), s))
        .collect())
}

/// `after - before` per series; a counter that went down (the proxy restarted) counts from 0.
fn deltas<'a>(before: Option<&Reading>, after: &'a Reading) -> Vec<(&'a Sample, f64)> {
    after
        .iter()
        .map(|(k, s)| {
            let v0 = before.and_then(|b| b.get(k)).map_or(0.0, |b| b.value);
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
            if code.len() == 3 && code.starts_with('5') {
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

/// A proxy of the rows, and where it stands in them.
#[derive(Clone, Debug)]
struct Proxy {
    instance: String,
    admin: String,
    row: (String, String),
}

/// The rows from two readings of the proxies. `before` lacks a proxy that was not there at the
/// start (all its counts are new); `after` lacks one that could not be read at the end.
fn rows(
    target: &Target,
    st: &Status,
    before: &HashMap<String, Reading>,
    after: &HashMap<String, Reading>,
    secs: f64,
) -> Vec<StatRow> {
    // Every row the mesh declares, with its service and ready replicas, even without traffic.
    let mut declared: BTreeMap<(String, String), (String, usize)> = BTreeMap::new();
    for w in st.workloads.iter().filter(|w| target.covers(w)) {
        let e = declared
            .entry(target.row_of(w))
            .or_insert_with(|| (w.service.clone(), 0));
        e.1 += usize::from(w.ready);
    }
    let mut acc: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for (proxy, r) in after {
        for (s, d) in deltas(before.get(proxy), r) {
            if let Some(row) = target.row_of_sample(s).filter(|r| declared.contains_key(r)) {
                acc.entry(row).or_default().add(s, d);
            }
        }
    }
    // Which proxies were read, per row (a replica with no traffic yet has no series).
    for w in st.workloads.iter().filter(|w| target.covers(w)) {
        if after.contains_key(&proxy_key(&w.instance, &w.admin)) {
            acc.entry(target.row_of(w)).or_default().sampled += 1;
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

fn proxy_key(instance: &str, admin: &str) -> String {
    format!("{instance}@{admin}")
}

fn proxies(target: &Target, st: &Status) -> Vec<Proxy> {
    st.workloads
        .iter()
        .filter(|w| target.covers(w) && !w.admin.is_empty())
        .map(|w| Proxy {
            instance: w.instance.clone(),
            admin: w.admin.clone(),
            row: target.row_of(w),
        })
        .collect()
}

/// Reads every proxy at once; the readings by proxy key, the failures as warnings, and the
/// moment the reading stands for (the midpoint of the round) as an `Instant` and Unix ms.
async fn read_all(ps: &[Proxy]) -> (HashMap<String, Reading>, Vec<String>, Instant, u64) {
    let (t, unix) = (Instant::now(), unix_ms());
    let mut set = tokio::task::JoinSet::new();
    for p in ps {
        let p = p.clone();
        set.spawn(async move {
            let r = match live::admin_get(&p.admin, "/metrics").await {
                Ok(body) => reading(&String::from_utf8_lossy(&body)).map_err(|e| {
                    anyhow::anyhow!("{}: /metrics is not Prometheus text: {e}", p.admin)
                }),
                Err(e) => Err(e),
            };
            (p, r)
        });
    }
    let (mut ok, mut warnings) = (HashMap::new(), Vec::new());
    while let Some(res) = set.join_next().await {
        match res {
            Ok((p, Ok(r))) => {
                ok.insert(proxy_key(&p.instance, &p.admin), r);
            }
            Ok((p, Err(e))) => {
                warnings.push(format!("{} ({}/{}): {e:#}", p.instance, p.row.0, p.row.1))
            }
            Err(e) => warnings.push(format!("reading a proxy failed: {e}")),
        }
    }
    let half = t.elapsed() / 2;
    (ok, warnings, t + half, unix + half.as_millis() as u64)
}

pub fn run(a: StatArgs) -> anyhow::Result<i32> {
    if a.window < Duration::from_millis(100) {
        anyhow::bail!("--window must be at least 100ms");
    }
    let target = Target::parse(a.target.as_deref())?;
    let api = live::api(a.mesh.as_deref())?;
    let report = runtime()?.block_on(async {
        let st0 = live::status_at(&api).await?;
        match &target {
            Target::Service(k) => {
                live::sidecars_of(&st0, k)?;
            }
            Target::Workload(Some(w)) if !st0.workloads.iter().any(|x| &x.workload == w) => {
                let mut names: Vec<&str> =
                    st0.workloads.iter().map(|x| x.workload.as_str()).collect();
                names.dedup();
                anyhow::bail!(
                    "no workload {w} in mesh {} (workloads: {})",
                    st0.mesh,
                    names.join(", ")
                );
            }
            _ => {}
        }
        let start = Instant::now();
        let ps0 = proxies(&target, &st0);
        let (r0, mut warnings, mid0, unix0) = read_all(&ps0).await;
        tokio::time::sleep_until((start + a.window).into()).await;
        // Replicas may have come or gone: read the ones there are now.
        let st1 = live::status_at(&api).await.unwrap_or(st0);
        let ps1 = proxies(&target, &st1);
        let (mut r1, w1, mid1, unix1) = read_all(&ps1).await;
        warnings.extend(w1);
        for p in &ps0 {
            let k = proxy_key(&p.instance, &p.admin);
            if !r0.contains_key(&k) {
                // Its counts since it started would all look new: leave it out.
                if r1.remove(&k).is_some() {
                    warnings.push(format!(
                        "{}: not read at the start of the window, left out",
                        p.instance
                    ));
                }
            } else if !ps1
                .iter()
                .any(|q| q.instance == p.instance && q.admin == p.admin)
            {
                warnings.push(format!(
                    "{}: gone before the end of the window; its requests are not counted",
                    p.instance
                ));
            }
        }
        let secs = mid1.duration_since(mid0).as_secs_f64();
        anyhow::Ok(StatReport {
            schema: SCHEMA.into(),
            mesh: st1.mesh.clone(),
            kind: target.kind().into(),
            window_s: secs,
            requested_window_s: a.window.as_secs_f64(),
            start_ms: unix0,
            end_ms: unix1,
            rows: rows(&target, &st1, &r0, &r1, secs),
            warnings,
        })
    })?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", table(&report)),
    }
    Ok(0)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}ms")
    } else if v >= 10.0 {
        format!("{v:.1}ms")
    } else {
        format!("{v:.2}ms")
    }
}

fn table(r: &StatReport) -> String {
    let head = if r.kind == "workload" {
        "WORKLOAD"
    } else {
        "SERVICE"
    };
    let mut rows = vec![[
        head.to_string(),
        "NAMESPACE".into(),
        "REPLICAS".into(),
        "SUCCESS".into(),
        "RPS".into(),
        "P50".into(),
        "P95".into(),
        "P99".into(),
        "MESHED".into(),
        "MTLS".into(),
    ]];
    for x in &r.rows {
        let lat =
            |f: fn(&Percentiles) -> f64| x.latency_ms.as_ref().map_or("-".into(), |p| ms(f(p)));
        rows.push([
            x.name.clone(),
            x.namespace.clone(),
            format!("{}/{}", x.sampled, x.replicas),
            pct(x.success_rate),
            format!("{:.1}", x.rps),
            lat(|p| p.p50),
            lat(|p| p.p95),
            lat(|p| p.p99),
            pct(x.meshed_share),
            pct(x.mtls_share),
        ]);
    }
    let mut widths = [0usize; 10];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "over {:.1}s (requests the replicas received; success = not 5xx)\n",
        r.window_s
    ));
    for w in &r.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn quantiles_interpolate_as_prometheus_does() {
        // 100 observations: 10 ≤ 1, 80 in (1, 5], 10 in (5, 10].
        let b = [
            (1.0, 10.0),
            (5.0, 90.0),
            (10.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!(close(
            histogram_quantile(0.5, &b),
            1.0 + 4.0 * (40.0 / 80.0)
        ));
        assert!(close(
            histogram_quantile(0.95, &b),
            5.0 + 5.0 * (5.0 / 10.0)
        ));
        assert!(close(
            histogram_quantile(0.99, &b),
            5.0 + 5.0 * (9.0 / 10.0)
        ));
        // The first bucket interpolates from 0.
        assert!(close(histogram_quantile(0.05, &b), 0.5));
        // Bucket order and duplicated bounds (one per series) do not matter.
        let split = [
            (f64::INFINITY, 60.0),
            (5.0, 50.0),
            (1.0, 5.0),
            (10.0, 60.0),
            (1.0, 5.0),
            (5.0, 40.0),
            (10.0, 40.0),
            (f64::INFINITY, 40.0),
        ];
        assert!(close(histogram_quantile(0.99, &split), 9.5));
    }

    #[test]
    fn quantile_edges() {
        // In +Inf: the highest finite bound.
        let b = [(1.0, 0.0), (5.0, 1.0), (f64::INFINITY, 100.0)];
        assert!(close(histogram_quantile(0.99, &b), 5.0));
        // No observations, no +Inf, one bucket: NaN in Prometheus.
        assert_eq!(
            histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(histogram_quantile(0.5, &[(1.0, 3.0), (2.0, 4.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(f64::INFINITY, 4.0)]), None);
        assert_eq!(histogram_quantile(f64::NAN, &b), None);
        assert_eq!(histogram_quantile(-1.0, &b), Some(f64::NEG_INFINITY));
        assert_eq!(histogram_quantile(2.0, &b), Some(f64::INFINITY));
        // A non-monotonic count (a scrape racing an increment) is made monotonic.
        let b = [(1.0, 10.0), (5.0, 8.0), (10.0, 20.0), (f64::INFINITY, 20.0)];
        assert!(close(histogram_quantile(0.5, &b), 1.0 * (10.0 / 10.0)));
        // A negative first bound is returned as is.
        let b = [(-1.0, 5.0), (1.0, 10.0), (f64::INFINITY, 10.0)];
        assert!(close(histogram_quantile(0.1, &b), -1.0));
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

    fn status(replicas: &[(&str, &str, &str)]) -> Status {
        let ws: Vec<serde_json::Value> = replicas
            .iter()
            .map(|(svc, wl, inst)| {
                serde_json::json!({
                    "service": svc, "namespace": "default", "workload": wl, "instance": inst,
                    "labels": {}, "app": "", "inbound": "", "outbound": "",
                    "admin": format!("127.0.0.1:{}", 9000 + inst.len()), "identity": "",
                    "ready": true, "state": "ready", "reason": "", "pid": 1, "config_version": 1
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "mesh": "m", "control": "", "api": "", "ingress": "", "version": 1, "workloads": ws
        }))
        .unwrap()
    }

    #[test]
    fn rows_sum_replica_deltas() {
        let st = status(&[
            ("hello", "hello-v1", "hello-v1-0"),
            ("hello", "hello-v1", "hello-v1-10"),
            ("slow", "slow-v1", "slow-v1-0"),
        ]);
        let key = |i: usize| proxy_key(&st.workloads[i].instance, &st.workloads[i].admin);
        let before: HashMap<String, Reading> = [
            (key(0), reading(&metrics(100, 10)).unwrap()),
            (key(1), reading(&metrics(50, 0)).unwrap()),
            (key(2), reading("").unwrap()),
        ]
        .into();
        // Replica 0: +90 ok, +10 bad. Replica 1 restarted: its counters start over at 10/0.
        let after: HashMap<String, Reading> = [
            (key(0), reading(&metrics(190, 20)).unwrap()),
            (key(1), reading(&metrics(10, 0)).unwrap()),
            (key(2), reading("").unwrap()),
        ]
        .into();
        let rs = rows(&Target::AllServices, &st, &before, &after, 10.0);
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
        let k = ServiceKey::new("hello", "default");
        let rs = rows(&Target::Service(k), &st, &before, &after, 10.0);
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].requests, 110);
        let rs = rows(
            &Target::Workload(Some("hello-v1".into())),
            &st,
            &before,
            &after,
            10.0,
        );
        assert_eq!(
            (rs.len(), rs[0].name.as_str(), rs[0].service.as_str()),
            (1, "hello-v1", "hello")
        );
        assert_eq!(rs[0].requests, 110);
        // A replica new at the end counts everything it has.
        let fresh: HashMap<String, Reading> =
            [(key(0), reading(&metrics(190, 20)).unwrap())].into();
        let rs = rows(&Target::AllServices, &st, &HashMap::new(), &fresh, 10.0);
        assert_eq!((rs[0].requests, rs[0].sampled), (210, 1));
    }

    #[test]
    fn targets() {
        assert_eq!(Target::parse(None).unwrap(), Target::AllServices);
        assert_eq!(
            Target::parse(Some("hello.prod")).unwrap(),
            Target::Service(ServiceKey::new("hello", "prod"))
        );
        assert_eq!(
            Target::parse(Some("workload/hello-v1")).unwrap(),
            Target::Workload(Some("hello-v1".into()))
        );
        assert_eq!(
            Target::parse(Some("workload/")).unwrap(),
            Target::Workload(None)
        );
        assert!(Target::parse(Some("10.0.0.1")).is_err());
    }

    #[test]
    fn report_round_trips_and_table_prints() {
        let r = StatReport {
            schema: SCHEMA.into(),
            mesh: "m".into(),
            kind: "service".into(),
            window_s: 10.0,
            requested_window_s: 10.0,
            start_ms: 1,
            end_ms: 10_001,
            rows: vec![StatRow {
                name: "hello".into(),
                namespace: "default".into(),
                service: "hello".into(),
                replicas: 2,
                sampled: 2,
                requests: 10,
                succeeded: 9,
                failed: 1,
                success_rate: Some(0.9),
                rps: 1.0,
                latency_ms: Some(Percentiles {
                    p50: 1.0,
                    p95: 2.0,
                    p99: 3.0,
                }),
                meshed_share: Some(1.0),
                mtls_share: Some(1.0),
            }],
            warnings: vec![],
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["schema"], "weft.stat/v1");
        assert_eq!(j["rows"][0]["latency_ms"]["p99"], 3.0);
        assert_eq!(serde_json::from_value::<StatReport>(j).unwrap(), r);
        let t = table(&r);
        assert!(t.starts_with("SERVICE"), "{t}");
        assert!(
            t.contains("90.00%") && t.contains("3.00ms") && t.contains("2/2"),
            "{t}"
        );
    }
}
