//! `weft stat [SERVICE|workload/W]`: success rate, RPS, p50/p95/p99 latency, meshed and mTLS
//! share per service (or workload) over a window, from the proxies' Istio metrics.
//!
//! How: every relevant sidecar's admin `/metrics` is read at the start of the window and again
//! at its end; the [`stat`](::stat) crate turns the two readings into rows (deltas of the
//! `reporter="destination"` series summed over the replicas, latency quantiles interpolated as
//! Prometheus's `histogram_quantile` does). This module picks the replicas, reads their proxies
//! and prints.
//!
//! `-o json` prints one [`StatReport`] document, whose schema (`weft.stat/v1`) is stable and
//! documented in [`stat::report`](::stat::report).

use super::live::{self, unix_ms};
use super::text::{columns, ms};
use super::{parse_duration, runtime, Output};
use ::stat::{Kind, Percentiles, Reading, Replica, StatReport, SCHEMA};
use control::status::{proxy_key, Status, WorkloadStatus};
use model::ServiceKey;
use std::collections::HashMap;
use std::time::{Duration, Instant};

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

/// Which replicas the rows cover.
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

    fn kind(&self) -> Kind {
        match self {
            Target::Workload(_) => Kind::Workload,
            _ => Kind::Service,
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
}

/// The replicas the rows cover.
fn replicas(target: &Target, st: &Status) -> Vec<Replica> {
    st.workloads
        .iter()
        .filter(|w| target.covers(w))
        .map(WorkloadStatus::replica)
        .collect()
}

/// A proxy of the rows, and where it stands in them.
#[derive(Clone, Debug)]
struct Proxy {
    instance: String,
    admin: String,
    row: (String, String),
}

fn proxies(target: &Target, st: &Status) -> Vec<Proxy> {
    st.workloads
        .iter()
        .filter(|w| target.covers(w) && !w.admin.is_empty())
        .map(|w| Proxy {
            instance: w.instance.clone(),
            admin: w.admin.clone(),
            row: target.kind().row_of(&w.replica()),
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
                Ok(body) => Reading::parse(&String::from_utf8_lossy(&body)).map_err(|e| {
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
            kind: target.kind().as_str().into(),
            window_s: secs,
            requested_window_s: a.window.as_secs_f64(),
            start_ms: unix0,
            end_ms: unix1,
            rows: ::stat::rows(target.kind(), &replicas(&target, &st1), &r0, &r1, secs),
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

fn table(r: &StatReport) -> String {
    let head = if r.kind == Kind::Workload.as_str() {
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
    let mut out = columns(&rows);
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
    use ::stat::StatRow;

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
    fn targets_pick_the_replicas_and_rows() {
        let st = status(&[
            ("hello", "hello-v1", "hello-v1-0"),
            ("hello", "hello-v1", "hello-v1-10"),
            ("slow", "slow-v1", "slow-v1-0"),
        ]);
        let key = |i: usize| proxy_key(&st.workloads[i].instance, &st.workloads[i].admin);
        let empty = || Reading::parse("").unwrap();
        // Every proxy read at the end but hello-v1-10's.
        let after: HashMap<String, Reading> = [(key(0), empty()), (key(2), empty())].into();
        let rows = |t: &Target| {
            ::stat::rows(t.kind(), &replicas(t, &st), &HashMap::new(), &after, 10.0)
                .into_iter()
                .map(|r| (r.name, r.service, r.replicas, r.sampled))
                .collect::<Vec<_>>()
        };
        let row = |name: &str, service: &str, replicas, sampled| {
            (name.to_string(), service.to_string(), replicas, sampled)
        };
        assert_eq!(
            rows(&Target::AllServices),
            vec![row("hello", "hello", 2, 1), row("slow", "slow", 1, 1)]
        );
        let k = ServiceKey::new("hello", "default");
        assert_eq!(rows(&Target::Service(k)), vec![row("hello", "hello", 2, 1)]);
        assert_eq!(
            rows(&Target::Workload(Some("hello-v1".into()))),
            vec![row("hello-v1", "hello", 2, 1)]
        );
        assert_eq!(
            rows(&Target::Workload(None)),
            vec![row("hello-v1", "hello", 2, 1), row("slow-v1", "slow", 1, 1)]
        );
        let ps = proxies(&Target::Workload(None), &st);
        assert_eq!(ps.len(), 3);
        assert_eq!(ps[2].row, ("default".to_string(), "slow-v1".to_string()));
        assert_eq!(replicas(&Target::AllServices, &st)[1].proxy, key(1));
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
