//! The proxy's Prometheus metrics. The registry is passed explicitly (no global); counters the
//! data path touches are resolved once at start, so recording is an atomic add, never a lookup.

use crate::flags::Flag;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Direction {
    inbound,
    outbound,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    direction: Direction,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlagLabels {
    flag: &'static str,
}

/// What a request was due and did not get because its body could not be sent again.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Skipped {
    retry,
    mirror,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkippedLabels {
    skipped: Skipped,
}

const CLASSES: [&str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Labels of a refused mTLS handshake.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    /// `inbound` (we refused a client) or `outbound` (we refused a server, or it refused us).
    pub direction: &'static str,
    /// Why: `expired`, `unknown_ca`, `wrong_trust_domain`, `plaintext`… (see `tls::RejectReason`).
    pub reason: &'static str,
}

pub struct Metrics {
    /// Refused mTLS handshakes and plaintext refused by STRICT ports.
    pub tls_failures: Family<TlsLabels, Counter>,
    pub cert_expiry: Gauge,
    pub cert_renewals: Counter,
    pub registry: Registry,
    requests: [[Counter; 6]; 2],
    flags: [Counter; Flag::ALL.len()],
    pub retries: Counter,
    /// Retries not sent because the retry budget or `maxRetries` said no.
    pub retries_refused: Counter,
    pub mirrors: Counter,
    /// Connections opened by the pools of backends whose `connectionPool` limits connections
    /// (Envoy's `upstream_cx_total` for them).
    pub pool_connections_opened: Counter,
    /// Retries and mirrored copies not sent because the body could not be sent again, by
    /// [`Skipped`] (resolved at start: counting is one atomic add).
    replays_skipped: [Counter; 2],
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    pub config_version: Gauge,
    pub config_updated: Gauge<f64, AtomicU64>,
    pub control_connected: Gauge,
    pub endpoints_ready: Gauge,
    pub app_ready: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let requests_family = Family::<RequestLabels, Counter>::default();
        registry.register(
            "weft_requests",
            "Requests the proxy served, by direction and response status class",
            requests_family.clone(),
        );
        let requests = [Direction::inbound, Direction::outbound].map(|direction| {
            CLASSES.map(|status_class| {
                requests_family
                    .get_or_create(&RequestLabels {
                        direction,
                        status_class,
                    })
                    .clone()
            })
        });
        let flags_family = Family::<FlagLabels, Counter>::default();
        registry.register(
            "weft_proxy_responses",
            "Responses the proxy made itself, by response flag",
            flags_family.clone(),
        );
        let flags = Flag::ALL.map(|f| {
            flags_family
                .get_or_create(&FlagLabels { flag: f.as_str() })
                .clone()
        });
        let tls_failures = Family::<TlsLabels, Counter>::default();
        registry.register(
            "weft_tls_handshake_failures",
            "mTLS handshakes refused, by direction and reason",
            tls_failures.clone(),
        );
        let skipped_family = Family::<SkippedLabels, Counter>::default();
        registry.register(
            "weft_replays_skipped",
            "Retries and mirrored copies not sent because the request body could not be sent again (it outgrew --max-buffered-body, or had not all arrived), by what was skipped",
            skipped_family.clone(),
        );
        let replays_skipped = [Skipped::retry, Skipped::mirror].map(|skipped| {
            skipped_family
                .get_or_create(&SkippedLabels { skipped })
                .clone()
        });
        let m = Metrics {
            tls_failures,
            replays_skipped,
            cert_expiry: Gauge::default(),
            cert_renewals: Counter::default(),
            requests,
            flags,
            retries: Counter::default(),
            retries_refused: Counter::default(),
            mirrors: Counter::default(),
            pool_connections_opened: Counter::default(),
            access_log_dropped: Counter::default(),
            config_version: Gauge::default(),
            config_updated: Gauge::default(),
            control_connected: Gauge::default(),
            endpoints_ready: Gauge::default(),
            app_ready: Gauge::default(),
            registry,
        };
        let mut m = m;
        let r = &mut m.registry;
        r.register(
            "weft_retries",
            "Retried request attempts",
            m.retries.clone(),
        );
        r.register(
            "weft_retries_refused",
            "Retries not sent because the retry budget or maxRetries was exhausted",
            m.retries_refused.clone(),
        );
        r.register(
            "weft_mirrored_requests",
            "Requests copied to a mirror",
            m.mirrors.clone(),
        );
        r.register(
            "weft_pool_connections_opened",
            "Connections opened to services whose DestinationRule connectionPool limits connections (each carries one request at a time; maxRequestsPerConnection retires them)",
            m.pool_connections_opened.clone(),
        );
        r.register(
            "weft_access_log_dropped",
            "Access-log lines dropped because stdout could not keep up",
            m.access_log_dropped.clone(),
        );
        r.register(
            "weft_cert_expiration_timestamp_seconds",
            "When the proxy's certificate expires (Unix time); 0 before it has one",
            m.cert_expiry.clone(),
        );
        r.register(
            "weft_cert_renewals",
            "Certificate renewals",
            m.cert_renewals.clone(),
        );
        r.register(
            "weft_config_version",
            "Version of the snapshot in force",
            m.config_version.clone(),
        );
        r.register(
            "weft_config_last_update_timestamp_seconds",
            "When the snapshot in force was applied (Unix time)",
            m.config_updated.clone(),
        );
        r.register(
            "weft_control_plane_connected",
            "1 while the control-plane stream is up",
            m.control_connected.clone(),
        );
        r.register(
            "weft_endpoints_ready",
            "Ready endpoints across all services in the snapshot",
            m.endpoints_ready.clone(),
        );
        r.register(
            "weft_app_ready",
            "1 while the local app accepts connections (sidecars)",
            m.app_ready.clone(),
        );
        m
    }

    /// [`Metrics::new`] with Istio's standard metrics from `telemetry` in the same registry.
    pub fn with_telemetry(telemetry: &crate::telemetry::Telemetry) -> Self {
        let mut m = Self::new();
        telemetry.register(&mut m.registry);
        m
    }

    pub fn request(&self, direction: Direction, status: u16) {
        let class = match status {
            100..=599 => (status / 100) as usize,
            _ => 0,
        };
        self.requests[direction as usize][class].inc();
    }

    /// Counts an answer going downstream: its status class, and the flag this proxy set on
    /// it (an app's response never carries one).
    pub fn answered<B>(&self, direction: Direction, rsp: &http::Response<B>) {
        if let Some(f) = crate::flags::of(rsp) {
            self.flag(f);
        }
        self.request(direction, rsp.status().as_u16());
    }

    pub fn tls_failure(&self, direction: &'static str, reason: &'static str) {
        self.tls_failures
            .get_or_create(&TlsLabels { direction, reason })
            .inc();
    }

    /// Counts a retry or a mirrored copy not sent because the body could not be sent again.
    pub fn replay_skipped(&self, what: Skipped) {
        self.replays_skipped[what as usize].inc();
    }

    pub fn flag(&self, flag: Flag) {
        if let Some(i) = Flag::ALL.iter().position(|f| *f == flag) {
            self.flags[i].inc();
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `process_cpu_seconds_total` and `process_resident_memory_bytes`, as the standard process
/// collectors name them, read from `/proc/self` at scrape time (nothing on the request path).
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// `/proc` reports CPU time in USER_HZ ticks, which the kernel ABI fixes at 100 per second.
const USER_HZ: f64 = 100.0;

impl ProcessCollector {
    /// (CPU seconds, resident bytes) of this process.
    pub fn read() -> Option<(f64, i64)> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let rss_kib: i64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(((utime + stime) / USER_HZ, rss_kib * 1024))
    }
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some((cpu, rss)) = Self::read() else {
            return Ok(());
        };
        let counter = ConstCounter::new(cpu);
        let e = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?;
        counter.encode(e)?;
        let gauge = ConstGauge::new(rss);
        let e = encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(e)?;
        Ok(())
    }
}

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn process_cpu_and_memory_are_exported() {
        let text = Metrics::new().encode();
        let value = |name: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last()?.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(text.contains("# TYPE process_cpu_seconds counter"));
    }
}

/// Mesh-state gauges read at scrape time: endpoints by state across the snapshot in force,
/// ejections since start, and the app pool's idle connections (sidecars).
pub struct StateCollector {
    pub state: crate::state::StateHandle,
    /// Set once the inbound side has made its pool (sidecars).
    pub app_pool: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<crate::app_pool::AppPool>>>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

impl prometheus_client::collector::Collector for StateCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let (ready, ejected, failing) = self.state.load().routes.endpoint_states();
        let mut e = encoder.encode_descriptor(
            "weft_endpoints",
            "Endpoints of the snapshot in force by state (ready, ejected: out of rotation by outlier detection or failure accrual, backoff: after a connect failure)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (state, n) in [("ready", ready), ("ejected", ejected), ("backoff", failing)] {
            let labels = StateLabels { state };
            ConstGauge::new(n as i64).encode(e.encode_family(&labels)?)?;
        }
        let source = self.state.load().source;
        let mut e = encoder.encode_descriptor(
            "weft_snapshot_source",
            "1 for where the snapshot in force came from: control (pushed by the control plane) or persisted (kept in --state-dir by the last run, until the control plane answers)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for s in crate::state::SnapshotSource::ALL {
            let labels = SourceLabels { source: s.as_str() };
            ConstGauge::new(i64::from(source == Some(s))).encode(e.encode_family(&labels)?)?;
        }
        let c =
            ConstCounter::new(crate::policy::EJECTIONS.load(std::sync::atomic::Ordering::Relaxed));
        let e = encoder.encode_descriptor(
            "weft_endpoint_ejections",
            "Endpoints taken out of rotation since start",
            None,
            c.metric_type(),
        )?;
        c.encode(e)?;
        if let Some(pool) = self.app_pool.get() {
            let g = ConstGauge::new(pool.open() as i64);
            let e = encoder.encode_descriptor(
                "weft_app_pool_connections",
                "Connections from the sidecar to its app, busy or idle",
                None,
                g.metric_type(),
            )?;
            g.encode(e)?;
            let g = ConstGauge::new(pool.idle() as i64);
            let e = encoder.encode_descriptor(
                "weft_app_pool_idle_connections",
                "Idle keep-alive connections from the sidecar to its app",
                None,
                g.metric_type(),
            )?;
            g.encode(e)?;
        }
        Ok(())
    }
}

/// `weft_log_lines_dropped`: log lines the process's log writer dropped because stderr was not
/// read fast enough (logging never makes a request wait).
pub struct LogDroppedCollector(pub crate::settings::LogDropped);

impl std::fmt::Debug for LogDroppedCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogDroppedCollector")
    }
}

impl prometheus_client::collector::Collector for LogDroppedCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let c = prometheus_client::metrics::counter::ConstCounter::new((self.0 .0)());
        let e = encoder.encode_descriptor(
            "weft_log_lines_dropped",
            "Log lines dropped because stderr was not read fast enough",
            None,
            c.metric_type(),
        )?;
        c.encode(e)
    }
}
