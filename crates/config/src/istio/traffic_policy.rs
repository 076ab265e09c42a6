//! Istio DestinationRule `trafficPolicy` (top level, `portLevelSettings`, and per subset): its
//! serde shape, the notices for what weft accepts and ignores, and its translation into
//! [`model::TrafficPolicy`] with Istio's defaults and merge rules:
//!
//! - a `portLevelSettings` entry for the service's port replaces the policy it belongs to as a
//!   whole (its `loadBalancer`, `connectionPool` and `outlierDetection`; absent ones fall back
//!   to the defaults, not to the level above, as Istio documents);
//! - a subset's policy overrides the service's field by field ([`TrafficPolicy::merged`]), a
//!   `loadBalancer` as a whole (`simple` and `consistentHash` are one field in Istio);
//! - `outlierDetection` fields left out take Istio's defaults
//!   ([`model::OutlierDetection::default`]); the legacy `consecutiveErrors` counts gateway
//!   errors (502, 503, 504) as it did in Istio before 1.5, and turns the 5xx count off unless
//!   `consecutive5xxErrors` is also given.

use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::policy;
use model::{ConnectionPool, HashOn, LoadBalancer, OutlierDetection, TrafficPolicy};
use serde::Deserialize;
use serde_yaml_ng::Value;

/// TrafficPolicy.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct TrafficPolicySpec {
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetectionSpec>,
    pub tls: Option<Value>,
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    pub tunnel: Option<Value>,
    pub proxy_protocol: Option<Value>,
}

/// TrafficPolicy.PortTrafficPolicy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PortTrafficPolicy {
    pub port: Option<super::virtual_service::PortSelector>,
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetectionSpec>,
    pub tls: Option<Value>,
}

/// LoadBalancerSettings: `simple` or `consistentHash`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LoadBalancerSettings {
    pub simple: Option<String>,
    pub consistent_hash: Option<ConsistentHash>,
    pub locality_lb_setting: Option<Value>,
    pub warmup_duration_secs: Option<Value>,
    pub warmup: Option<Value>,
}

/// LoadBalancerSettings.ConsistentHashLB: one hash key, and a hash algorithm weft does not
/// let anyone choose.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ConsistentHash {
    pub http_header_name: Option<String>,
    pub http_cookie: Option<HttpCookie>,
    pub use_source_ip: Option<bool>,
    pub http_query_parameter_name: Option<String>,
    pub ring_hash: Option<Value>,
    pub maglev: Option<Value>,
    pub minimum_ring_size: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpCookie {
    pub name: String,
    pub path: Option<String>,
    pub ttl: Option<String>,
}

/// ConnectionPoolSettings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConnectionPoolSettings {
    pub tcp: Option<TcpSettings>,
    pub http: Option<HttpSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct TcpSettings {
    pub max_connections: Option<i64>,
    pub connect_timeout: Option<String>,
    pub tcp_keepalive: Option<Value>,
    pub max_connection_duration: Option<Value>,
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HttpSettings {
    pub http1_max_pending_requests: Option<i64>,
    pub http2_max_requests: Option<i64>,
    pub max_requests_per_connection: Option<i64>,
    pub max_retries: Option<i64>,
    pub idle_timeout: Option<String>,
    /// Accepted, no effect: weft's proxies always speak HTTP/2 to each other.
    pub h2_upgrade_policy: Option<String>,
    /// Accepted, no effect, for the same reason.
    #[allow(dead_code)]
    pub use_client_protocol: Option<bool>,
    pub max_concurrent_streams: Option<Value>,
}

/// OutlierDetection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct OutlierDetectionSpec {
    /// Deprecated (hidden from Istio's docs since 1.5): gateway errors, see the module docs.
    pub consecutive_errors: Option<i64>,
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<i64>,
    pub consecutive_gateway_errors: Option<i64>,
    pub split_external_local_origin_errors: Option<Value>,
    pub consecutive_local_origin_failures: Option<Value>,
    pub interval: Option<String>,
    pub base_ejection_time: Option<String>,
    pub max_ejection_percent: Option<i64>,
    pub min_health_percent: Option<i64>,
}

/// Field paths (under `field`) that weft accepts and ignores, with why when it is not simply
/// "not yet supported".
pub(crate) fn ignored(tp: &TrafficPolicySpec, field: &str, out: &mut Vec<(String, &'static str)>) {
    let groups = |out: &mut Vec<(String, &'static str)>,
                  field: &str,
                  lb: &Option<LoadBalancerSettings>,
                  pool: &Option<ConnectionPoolSettings>,
                  outlier: &Option<OutlierDetectionSpec>,
                  tls: &Option<Value>| {
        if let Some(lb) = lb {
            let f = format!("{field}.loadBalancer");
            for (name, set) in [
                ("localityLbSetting", lb.locality_lb_setting.is_some()),
                ("warmupDurationSecs", lb.warmup_duration_secs.is_some()),
                ("warmup", lb.warmup.is_some()),
            ] {
                if set {
                    out.push((format!("{f}.{name}"), NOT_YET));
                }
            }
            if let Some(h) = &lb.consistent_hash {
                for (name, set) in [
                    ("ringHash", h.ring_hash.is_some()),
                    ("maglev", h.maglev.is_some()),
                    ("minimumRingSize", h.minimum_ring_size.is_some()),
                ] {
                    if set {
                        out.push((format!("{f}.consistentHash.{name}"), HASH_ALGORITHM));
                    }
                }
            }
        }
        if let Some(pool) = pool {
            let f = format!("{field}.connectionPool");
            if let Some(tcp) = &pool.tcp {
                for (name, set) in [
                    ("tcpKeepalive", tcp.tcp_keepalive.is_some()),
                    (
                        "maxConnectionDuration",
                        tcp.max_connection_duration.is_some(),
                    ),
                ] {
                    if set {
                        out.push((format!("{f}.tcp.{name}"), NOT_YET));
                    }
                }
            }
            if let Some(http) = &pool.http {
                if http.max_concurrent_streams.is_some() {
                    out.push((format!("{f}.http.maxConcurrentStreams"), NOT_YET));
                }
            }
        }
        if let Some(o) = outlier {
            let f = format!("{field}.outlierDetection");
            for (name, set) in [
                (
                    "splitExternalLocalOriginErrors",
                    o.split_external_local_origin_errors.is_some(),
                ),
                (
                    "consecutiveLocalOriginFailures",
                    o.consecutive_local_origin_failures.is_some(),
                ),
            ] {
                if set {
                    out.push((format!("{f}.{name}"), NOT_YET));
                }
            }
        }
        if tls.as_ref().is_some_and(|t| !is_istio_mutual(t)) {
            out.push((format!("{field}.tls"), TLS));
        }
    };
    groups(
        out,
        field,
        &tp.load_balancer,
        &tp.connection_pool,
        &tp.outlier_detection,
        &tp.tls,
    );
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        let f = format!("{field}.portLevelSettings[{i}]");
        groups(
            out,
            &f,
            &p.load_balancer,
            &p.connection_pool,
            &p.outlier_detection,
            &p.tls,
        );
    }
    for (name, set) in [
        ("tunnel", tp.tunnel.is_some()),
        ("proxyProtocol", tp.proxy_protocol.is_some()),
    ] {
        if set {
            out.push((format!("{field}.{name}"), NOT_YET));
        }
    }
}

const NOT_YET: &str = "is not yet supported; ignored";
const HASH_ALGORITHM: &str = "is ignored: weft picks its own consistent-hash algorithm";
const TLS: &str =
    "is ignored: weft's proxies secure traffic between them with mutual TLS themselves";

/// `tls: {mode: ISTIO_MUTUAL}` alone says what weft does anyway: no notice.
fn is_istio_mutual(tls: &Value) -> bool {
    match tls {
        Value::Mapping(m) => {
            m.len() == 1 && m.get("mode").and_then(Value::as_str) == Some("ISTIO_MUTUAL")
        }
        _ => false,
    }
}

/// A policy as translated, with whether it set a load balancer (which then replaces the one it
/// is merged over, `simple` and `consistentHash` together).
#[derive(Clone, Debug, Default)]
pub(crate) struct Translated {
    pub policy: TrafficPolicy,
    pub load_balancer: bool,
}

impl Translated {
    /// `self` with `over`'s fields replacing its own, as a subset overrides its service.
    pub fn merged(&self, over: &Translated) -> Translated {
        let mut policy = self.policy.merged(&over.policy);
        if over.load_balancer {
            policy.lb = over.policy.lb;
            policy.consistent_hash = over.policy.consistent_hash.clone();
        }
        Translated {
            policy,
            load_balancer: self.load_balancer || over.load_balancer,
        }
    }
}

/// A `trafficPolicy` at `field`, for a service listening on `port` (`None` without a mesh:
/// `portLevelSettings` are then only checked). Returns the policy before and after its
/// port-level settings: a subset's policy is merged over the former's result and then replaced
/// by its own port-level entry (see the module docs).
pub(crate) fn translate(
    doc: &Doc,
    field: &str,
    tp: &TrafficPolicySpec,
    port: Option<u16>,
    errors: &mut Vec<Diagnostic>,
) -> (Translated, Option<Translated>) {
    let own = groups(
        doc,
        field,
        &tp.load_balancer,
        &tp.connection_pool,
        &tp.outlier_detection,
        errors,
    );
    let mut port_level = None;
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        let f = format!("{field}.portLevelSettings[{i}]");
        let number = match &p.port {
            Some(s) if (1..=65535).contains(&s.number) => Some(s.number),
            Some(_) => {
                errors.push(doc.error(
                    &format!("{f}.port.number"),
                    "port must be between 1 and 65535",
                ));
                None
            }
            None => {
                errors.push(doc.error(&f, "needs port.number"));
                None
            }
        };
        let t = groups(
            doc,
            &f,
            &p.load_balancer,
            &p.connection_pool,
            &p.outlier_detection,
            errors,
        );
        if number.is_some() && number == port.map(u32::from) && port_level.is_none() {
            port_level = Some(Translated {
                load_balancer: true,
                ..t
            });
        }
    }
    (own, port_level)
}

/// The effective policy of a `trafficPolicy` (its port-level entry when there is one).
pub(crate) fn effective(t: (Translated, Option<Translated>)) -> Translated {
    let (own, port_level) = t;
    port_level.unwrap_or(own)
}

fn groups(
    doc: &Doc,
    field: &str,
    lb: &Option<LoadBalancerSettings>,
    pool: &Option<ConnectionPoolSettings>,
    outlier: &Option<OutlierDetectionSpec>,
    errors: &mut Vec<Diagnostic>,
) -> Translated {
    let mut policy = TrafficPolicy::default();
    if let Some(lb) = lb {
        let f = format!("{field}.loadBalancer");
        (policy.lb, policy.consistent_hash) = load_balancer(doc, &f, lb, errors);
    }
    if let Some(pool) = pool {
        let f = format!("{field}.connectionPool");
        policy.connection_pool = Some(connection_pool(doc, &f, pool, errors));
    }
    if let Some(o) = outlier {
        let f = format!("{field}.outlierDetection");
        policy.outlier_detection = Some(outlier_detection(doc, &f, o, errors));
    }
    Translated {
        policy,
        load_balancer: lb.is_some(),
    }
}

fn load_balancer(
    doc: &Doc,
    field: &str,
    lb: &LoadBalancerSettings,
    errors: &mut Vec<Diagnostic>,
) -> (Option<LoadBalancer>, Option<HashOn>) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        errors.push(doc.error(field, "set only one of simple and consistentHash"));
        return (None, None);
    }
    let simple = match lb.simple.as_deref() {
        None | Some("UNSPECIFIED") => None,
        Some("ROUND_ROBIN") => Some(LoadBalancer::RoundRobin),
        Some("LEAST_REQUEST" | "LEAST_CONN") => Some(LoadBalancer::LeastRequest),
        Some("RANDOM") => Some(LoadBalancer::Random),
        Some("PASSTHROUGH") => {
            errors.push(doc.error(
                &format!("{field}.simple"),
                "PASSTHROUGH is not supported: weft always balances over the service's endpoints",
            ));
            None
        }
        Some(other) => {
            errors.push(doc.error(
                &format!("{field}.simple"),
                format!(
                    "unknown load balancer `{other}`: use ROUND_ROBIN, LEAST_REQUEST, RANDOM or \
                     UNSPECIFIED"
                ),
            ));
            None
        }
    };
    let hash = lb.consistent_hash.as_ref().and_then(|h| {
        let f = format!("{field}.consistentHash");
        let mut keys = Vec::new();
        if let Some(name) = &h.http_header_name {
            let hf = format!("{f}.httpHeaderName");
            doc.check(&hf, model::valid::header_name(name), errors);
            keys.push(HashOn::Header(name.to_ascii_lowercase()));
        }
        if let Some(c) = &h.http_cookie {
            let ttl_s = match c.ttl.as_deref().map(policy::istio_duration) {
                None => None,
                // `0s`: a session cookie; a part of a second counts as a whole one.
                Some(Ok(ms)) => Some(ms.unwrap_or(0).div_ceil(1000)),
                Some(Err(message)) => {
                    errors.push(doc.error(&format!("{f}.httpCookie.ttl"), message));
                    None
                }
            };
            if c.name.is_empty() {
                errors.push(doc.error(&format!("{f}.httpCookie.name"), "must not be empty"));
            }
            keys.push(HashOn::Cookie {
                name: c.name.clone(),
                path: c.path.clone(),
                ttl_s,
            });
        }
        if h.use_source_ip == Some(true) {
            keys.push(HashOn::SourceIp);
        }
        if let Some(name) = &h.http_query_parameter_name {
            keys.push(HashOn::QueryParam(name.clone()));
        }
        match keys.len() {
            1 => keys.pop(),
            0 => {
                errors.push(doc.error(
                    &f,
                    "needs one of httpHeaderName, httpCookie, useSourceIp: true, \
                     httpQueryParameterName",
                ));
                None
            }
            _ => {
                errors.push(doc.error(
                    &f,
                    "set only one of httpHeaderName, httpCookie, useSourceIp, \
                     httpQueryParameterName",
                ));
                None
            }
        }
    });
    (simple, hash)
}

/// A positive count; Istio reads 0 as "not set".
fn count(doc: &Doc, field: &str, n: Option<i64>, errors: &mut Vec<Diagnostic>) -> Option<u32> {
    match n.map(u32::try_from) {
        None | Some(Ok(0)) => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            errors.push(doc.error(
                field,
                format!(
                    "{} must be between 0 and {}",
                    n.unwrap_or_default(),
                    u32::MAX
                ),
            ));
            None
        }
    }
}

/// A duration of at least 1 ms (`0s` is refused, as Istio's validation does).
fn positive_ms(
    doc: &Doc,
    field: &str,
    text: &Option<String>,
    errors: &mut Vec<Diagnostic>,
) -> Option<u64> {
    match text.as_deref().map(policy::istio_duration) {
        None => None,
        Some(Ok(Some(ms))) => Some(ms),
        Some(Ok(None)) => {
            errors.push(doc.error(field, "must be at least 1ms"));
            None
        }
        Some(Err(message)) => {
            errors.push(doc.error(field, message));
            None
        }
    }
}

/// An idle timeout; `0s` disables it.
fn idle_ms(
    doc: &Doc,
    field: &str,
    text: &Option<String>,
    errors: &mut Vec<Diagnostic>,
) -> Option<u64> {
    match text.as_deref().map(policy::istio_duration) {
        None => None,
        Some(Ok(ms)) => ms,
        Some(Err(message)) => {
            errors.push(doc.error(field, message));
            None
        }
    }
}

fn connection_pool(
    doc: &Doc,
    field: &str,
    pool: &ConnectionPoolSettings,
    errors: &mut Vec<Diagnostic>,
) -> ConnectionPool {
    let mut out = ConnectionPool::default();
    let mut tcp_idle = None;
    if let Some(tcp) = &pool.tcp {
        let f = format!("{field}.tcp");
        out.max_connections = count(
            doc,
            &format!("{f}.maxConnections"),
            tcp.max_connections,
            errors,
        );
        out.connect_timeout_ms = positive_ms(
            doc,
            &format!("{f}.connectTimeout"),
            &tcp.connect_timeout,
            errors,
        );
        tcp_idle = idle_ms(doc, &format!("{f}.idleTimeout"), &tcp.idle_timeout, errors);
    }
    let mut http_idle = None;
    if let Some(http) = &pool.http {
        let f = format!("{field}.http");
        out.max_pending_requests = count(
            doc,
            &format!("{f}.http1MaxPendingRequests"),
            http.http1_max_pending_requests,
            errors,
        );
        out.max_requests = count(
            doc,
            &format!("{f}.http2MaxRequests"),
            http.http2_max_requests,
            errors,
        );
        out.max_requests_per_connection = count(
            doc,
            &format!("{f}.maxRequestsPerConnection"),
            http.max_requests_per_connection,
            errors,
        );
        out.max_retries = count(doc, &format!("{f}.maxRetries"), http.max_retries, errors);
        http_idle = idle_ms(doc, &format!("{f}.idleTimeout"), &http.idle_timeout, errors);
        if let Some(p) = &http.h2_upgrade_policy {
            if !matches!(p.as_str(), "DEFAULT" | "DO_NOT_UPGRADE" | "UPGRADE") {
                errors.push(doc.error(
                    &format!("{f}.h2UpgradePolicy"),
                    format!("h2UpgradePolicy `{p}` must be DEFAULT, DO_NOT_UPGRADE or UPGRADE"),
                ));
            }
        }
    }
    // weft pools HTTP/2 connections between proxies, so the HTTP idle timeout (no request in
    // flight) is the one that closes them; the TCP one stands in when it is the only one.
    out.idle_timeout_ms = http_idle.or(tcp_idle);
    out
}

fn percent(doc: &Doc, field: &str, n: Option<i64>, errors: &mut Vec<Diagnostic>) -> Option<u32> {
    match n.map(u32::try_from) {
        None => None,
        Some(Ok(n)) if n <= 100 => Some(n),
        Some(_) => {
            errors.push(doc.error(
                field,
                format!("{} must be between 0 and 100", n.unwrap_or_default()),
            ));
            None
        }
    }
}

fn outlier_detection(
    doc: &Doc,
    field: &str,
    o: &OutlierDetectionSpec,
    errors: &mut Vec<Diagnostic>,
) -> OutlierDetection {
    let mut out = OutlierDetection::default();
    let mut number = |name: &str, n: Option<i64>| match n.map(u32::try_from) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            errors.push(doc.error(
                &format!("{field}.{name}"),
                format!("{name} must be 0 or more"),
            ));
            None
        }
    };
    let legacy = number("consecutiveErrors", o.consecutive_errors);
    let five_xx = number("consecutive5xxErrors", o.consecutive_5xx_errors);
    let gateway = number("consecutiveGatewayErrors", o.consecutive_gateway_errors);
    if let Some(n) = legacy.filter(|&n| n > 0) {
        out.consecutive_gateway = n;
        out.consecutive_5xx = 0;
    }
    if let Some(n) = five_xx {
        out.consecutive_5xx = n;
    }
    if let Some(n) = gateway {
        out.consecutive_gateway = n;
    }
    if let Some(ms) = positive_ms(doc, &format!("{field}.interval"), &o.interval, errors) {
        out.interval_ms = ms;
    }
    if let Some(ms) = positive_ms(
        doc,
        &format!("{field}.baseEjectionTime"),
        &o.base_ejection_time,
        errors,
    ) {
        out.base_ejection_ms = ms;
    }
    // As in Istio, 0 means "not set" (Envoy's 10%).
    if let Some(p) = percent(
        doc,
        &format!("{field}.maxEjectionPercent"),
        o.max_ejection_percent,
        errors,
    )
    .filter(|&p| p > 0)
    {
        out.max_ejection_percent = p;
    }
    if let Some(p) = percent(
        doc,
        &format!("{field}.minHealthPercent"),
        o.min_health_percent,
        errors,
    ) {
        out.min_health_percent = p;
    }
    out
}
