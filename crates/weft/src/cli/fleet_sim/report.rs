//! What `weft fleet-sim` reports: the run's shape, how fast changes reached the fleet, what the
//! control plane spent, what each proxy received and what etcd did; as a table or as JSON.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Nearest-rank percentiles of a sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Spread {
    pub fn of(mut sample: Vec<f64>) -> Spread {
        if sample.is_empty() {
            return Spread::default();
        }
        sample.sort_by(|a, b| a.total_cmp(b));
        let rank = |q: f64| {
            let i = ((q * sample.len() as f64).ceil() as usize).clamp(1, sample.len());
            sample[i - 1]
        };
        Spread {
            count: sample.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: sample[sample.len() - 1],
            mean: sample.iter().sum::<f64>() / sample.len() as f64,
        }
    }
}

/// One control-plane replica's resources.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplicaUse {
    /// CPU seconds while the fleet connected and settled, and while the changes were applied.
    pub cpu_startup_s: f64,
    pub cpu_changes_s: f64,
    /// Peak and final resident memory, MB.
    pub peak_rss_mb: f64,
    pub rss_mb: f64,
    /// Proxies connected to it.
    pub proxies: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub proxies: usize,
    pub services: usize,
    pub namespaces: usize,
    pub replicas: usize,
    pub changes: usize,
    /// `namespace`: a mesh-default Sidecar (`./*`, `shared/*`); `none`: every proxy gets all.
    pub scope: String,
    /// Until every proxy had its first snapshot, and until snapshots stopped arriving.
    pub connect_s: f64,
    pub settle_s: f64,
    /// From `POST /apply` to a proxy's receiving the snapshot that carries it, ms, over every
    /// change and every proxy.
    pub propagation_ms: Spread,
    /// Per change, until the last proxy had it, ms.
    pub all_reached_ms: Spread,
    /// Per change, until the control plane's API answered (every proxy acked), ms.
    pub apply_ms: Spread,
    /// Answers of the API other than 200, by status.
    pub apply_not_ok: BTreeMap<u16, usize>,
    pub control: Vec<ReplicaUse>,
    /// Bytes of the snapshot each proxy received last (the last change's), and how many
    /// services it held.
    pub snapshot_bytes: Spread,
    pub snapshot_services: Spread,
    /// The whole mesh's snapshot, encoded: what every proxy would get without scoping.
    pub whole_snapshot_bytes: usize,
    /// Snapshots received per proxy, over the whole run.
    pub messages_per_proxy: Spread,
    /// etcd's counters, their increase while the fleet connected and settled, and while the
    /// changes were applied.
    pub etcd_startup: BTreeMap<String, f64>,
    pub etcd_changes: BTreeMap<String, f64>,
    /// The etcd member's CPU seconds (connecting, over the changes) and peak RSS (MB), when
    /// the simulation started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_use: Option<ReplicaUse>,
    /// The simulation's own CPU seconds over the changes (its proxies share the machine with
    /// the control plane).
    pub simulator_cpu_changes_s: f64,
    /// Streams that ended early.
    pub failed: usize,
    /// Wall time of the whole run, s.
    pub took_s: f64,
}

pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1000.0
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "fleet: {} proxies across {} services in {} namespaces, {} control-plane replica(s), scope {}, {} changes",
            self.proxies, self.services, self.namespaces, self.replicas, self.scope, self.changes
        ));
        line(format!(
            "connect: every proxy had its first snapshot after {:.1} s; quiet after {:.1} s",
            self.connect_s, self.settle_s
        ));
        let p = &self.propagation_ms;
        line(format!(
            "change → proxy: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
            p.p50, p.p99, p.max, p.count
        ));
        let a = &self.all_reached_ms;
        line(format!(
            "change → every proxy: p50 {:.1} ms, max {:.1} ms; apply answered: p50 {:.1} ms, max {:.1} ms",
            a.p50, a.max, self.apply_ms.p50, self.apply_ms.max
        ));
        for (i, r) in self.control.iter().enumerate() {
            line(format!(
                "replica {i}: {} proxies; CPU {:.2} s connecting, {:.2} s over the changes; RSS peak {:.0} MB, now {:.0} MB",
                r.proxies, r.cpu_startup_s, r.cpu_changes_s, r.peak_rss_mb, r.rss_mb
            ));
        }
        line(format!(
            "snapshot per proxy: {:.0} bytes mean ({:.0} max), {:.1} services; whole mesh {} bytes; {:.1} snapshots per proxy",
            self.snapshot_bytes.mean,
            self.snapshot_bytes.max,
            self.snapshot_services.mean,
            self.whole_snapshot_bytes,
            self.messages_per_proxy.mean
        ));
        let counters = |m: &BTreeMap<String, f64>| {
            m.iter()
                .map(|(k, v)| format!("{}={v}", k.trim_start_matches("etcd_")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        line(format!(
            "etcd while connecting: {}",
            counters(&self.etcd_startup)
        ));
        line(format!(
            "etcd over the changes: {}",
            counters(&self.etcd_changes)
        ));
        if let Some(e) = &self.etcd_use {
            line(format!(
                "etcd member: CPU {:.2} s connecting, {:.2} s over the changes; RSS peak {:.0} MB",
                e.cpu_startup_s, e.cpu_changes_s, e.peak_rss_mb
            ));
        }
        line(format!(
            "simulated proxies: CPU {:.2} s over the changes",
            self.simulator_cpu_changes_s
        ));
        if self.failed > 0 || !self.apply_not_ok.is_empty() {
            line(format!(
                "failed streams: {}; apply answers other than 200: {:?}",
                self.failed, self.apply_not_ok
            ));
        }
        line(format!("took {:.1} s", self.took_s));
        out
    }
}

#[cfg(test)]
mod tests;
