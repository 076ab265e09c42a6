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
    pub config_version: Gauge,
    pub config_updated: Gauge<f64, AtomicU64>,
    pub control_connected: Gauge,
    pub endpoints_ready: Gauge,
    pub app_ready: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
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
        let m = Metrics {
            tls_failures,
            cert_expiry: Gauge::default(),
            cert_renewals: Counter::default(),
            requests,
            flags,
            retries: Counter::default(),
            retries_refused: Counter::default(),
            mirrors: Counter::default(),
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

    pub fn tls_failure(&self, direction: &'static str, reason: &'static str) {
        self.tls_failures
            .get_or_create(&TlsLabels { direction, reason })
            .inc();
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
