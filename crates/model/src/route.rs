//! HTTP routes: how a request to a service is matched and split across versions. One shape for
//! every API that routes (Istio VirtualService, Gateway API HTTPRoute, SMI TrafficSplit…): the
//! `config` crate translates each into these, keeping each API's own matching rules.

use crate::names::ServiceKey;
use crate::Labels;
use serde::{Deserialize, Serialize};

/// How a string (a header value, a query parameter, a path) is matched.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatch {
    Exact(String),
    /// Plain string prefix (Istio's `prefix`).
    Prefix(String),
    /// RE2 syntax, matched against the whole value.
    Regex(String),
    /// The header is present, whatever its value (Istio's empty match).
    Present,
}

/// A path match. Gateway API's `PathPrefix` is segment-wise (`/v2` matches `/v2/x`, not
/// `/v2x`); Istio's `prefix` is a plain string prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    SegmentPrefix(String),
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Lowercase.
    pub name: String,
    pub value: StringMatch,
    /// Istio's `withoutHeaders`: the request matches when this does not.
    #[serde(default)]
    pub invert: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueryMatch {
    /// Case-sensitive, as in the Gateway API.
    pub name: String,
    pub value: StringMatch,
}

/// Conditions that must all hold. An empty match matches every request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryMatch>,
    /// The request matches only if it matches none of these (Linkerd ServiceProfile `not`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub negated: Vec<RouteMatch>,
    /// Istio `scheme`: the request's scheme (`http` for what apps send their sidecar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// Istio `authority`: the `Host` / `:authority` as the client sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Istio `port`: the port the client addressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Istio `sourceLabels`: the calling workload carries all of these labels.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub source_labels: Labels,
    /// Istio `sourceNamespace`: the calling workload's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// Where a share of a route's traffic goes: a service, optionally only its endpoints carrying
/// `labels` (an Istio subset).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Destination {
    pub service: ServiceKey,
    /// The subset's name, for display; `labels` is what selects endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Relative weight; a weight of 0 gets no traffic.
    pub weight: u32,
    /// Header edits for requests sent to this destination (Istio's per-destination `headers`,
    /// Gateway API's backendRef filters), applied after the route's own.
    #[serde(default, skip_serializing_if = "HeaderEdits::is_empty")]
    pub request_headers: HeaderEdits,
    #[serde(default, skip_serializing_if = "HeaderEdits::is_empty")]
    pub response_headers: HeaderEdits,
}

impl Destination {
    /// All of `service`'s endpoints, with this weight.
    pub fn service(service: ServiceKey, weight: u32) -> Self {
        Self {
            service,
            subset: None,
            labels: Labels::new(),
            weight,
            request_headers: HeaderEdits::default(),
            response_headers: HeaderEdits::default(),
        }
    }
}

/// One routing rule. Rules are tried in order; the first whose any-of `matches` holds wins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HttpRoute {
    /// Where it came from (`VirtualService default/reviews`, rule index), for `weft routes` and logs.
    pub name: String,
    /// Any of these; empty means every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    pub destinations: Vec<Destination>,
    /// The whole request, retries included, must finish within this (ms); the proxy answers
    /// 504 with flag UT otherwise. `None`: no timeout (Istio's default; `0s` also means none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// When and how often a failed attempt is sent again. `None`: the proxy's default (retry
    /// only what provably never reached the app: connect failures, refused streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Istio's fault injection: delays and aborts for a share of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Header edits on the request sent upstream (Istio `headers.request`, Gateway API
    /// `RequestHeaderModifier`).
    #[serde(default, skip_serializing_if = "HeaderEdits::is_empty")]
    pub request_headers: HeaderEdits,
    /// Header edits on the response returned downstream (Istio `headers.response`, Gateway API
    /// `ResponseHeaderModifier`).
    #[serde(default, skip_serializing_if = "HeaderEdits::is_empty")]
    pub response_headers: HeaderEdits,
    /// Path and authority rewritten before the request goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Answer with a redirect instead of forwarding (then `destinations` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Answer with this status and body instead of forwarding (Istio `directResponse`; also
    /// what an invalid Gateway API backend becomes: 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    /// Copies of a share of requests, sent fire-and-forget; their answers are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    /// Answered by the proxy for CORS preflights; adds the CORS headers to responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// Which responses count as failures (Linkerd ServiceProfile `responseClasses`), for
    /// retries, failure accrual and metrics. Empty: 5xx are failures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_classes: Vec<ResponseClass>,
}

/// One rule for connections (Istio VirtualService `tcp[]` and `tls[]`): tried in order for
/// each tunnel or TCP connection to the service; the first whose any-of `matches` holds picks
/// a destination by weight for the whole connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcpRoute {
    /// Where it came from (`VirtualService default/db tcp[0]`), for `weft routes` and logs.
    pub name: String,
    /// Any of these; empty means every connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TcpMatch>,
    pub destinations: Vec<TcpDestination>,
}

impl TcpRoute {
    /// Whether any match needs the TLS server name the client sends first.
    pub fn needs_sni(&self) -> bool {
        self.matches.iter().any(|m| !m.sni_hosts.is_empty())
    }
}

/// What a connection must have for a [`TcpRoute`] to take it; every field set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcpMatch {
    /// The service port the client addressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Server names of the TLS ClientHello (`tls[]` rules): exact, `*.suffix` (any name
    /// ending in `.suffix`) or `*`. Empty: not a TLS rule, any connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    /// Labels the calling workload must carry.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub source_labels: Labels,
    /// The namespace the calling workload must be in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

impl TcpMatch {
    /// Whether `name` (a ClientHello's server name) is one of `sni_hosts`.
    pub fn sni_matches(&self, name: Option<&str>) -> bool {
        if self.sni_hosts.is_empty() {
            return true;
        }
        let Some(name) = name else {
            return false;
        };
        self.sni_hosts.iter().any(|h| sni_host_matches(h, name))
    }
}

/// Whether the SNI pattern `pattern` (exact, `*.suffix`, `*`) takes the server name `name`;
/// case-insensitive.
pub fn sni_host_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => name.ends_with(suffix) && name.len() > suffix.len(),
        None => pattern == name,
    }
}

/// Where a share of a [`TcpRoute`]'s connections go: a service (or subset of it) and, when
/// set, its port (else the port the client addressed).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcpDestination {
    #[serde(flatten)]
    pub to: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Header edits, applied in the order remove, set, add (as Envoy does).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderEdits {
    /// Replace (or create) these headers. Names lowercase.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    /// Append these values (a header may then carry several).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// How a path is rewritten.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRewrite {
    /// The whole path becomes this (Gateway API `ReplaceFullPath`; Istio `uri` after an exact
    /// or regex match).
    Full(String),
    /// The part the route's prefix match matched becomes this (Gateway API
    /// `ReplacePrefixMatch`, Istio `uri` after a prefix match).
    Prefix(String),
    /// RE2 `pattern` replaced by `substitution` (`\1` groups), Istio `uriRegexRewrite`.
    Regex {
        pattern: String,
        substitution: String,
    },
}

/// Rewrites applied to the request sent upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// New Host / :authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// An HTTP redirect answered by the proxy. Fields left `None` keep the request's own.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Redirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathRewrite>,
    /// 301 by default (Istio and Gateway API), or 302, 303, 307, 308.
    pub status: u16,
}

/// A fixed answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

/// A mirror target and the share of requests copied to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mirror {
    pub destination: Destination,
    /// In millionths; Istio's default (no `mirrorPercentage`) is 100%.
    pub per_million: u32,
}

/// Istio `corsPolicy` / Gateway API CORS filter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cors {
    /// Origins allowed; `Exact("*")` allows any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u64>,
    #[serde(default)]
    pub allow_credentials: bool,
}

/// Linkerd's `responseClasses[]`: responses whose status is in `min..=max` are failures (or
/// successes, when `is_failure` is false). The first class that matches decides.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResponseClass {
    pub min: u16,
    pub max: u16,
    pub is_failure: bool,
}

/// Whether `status` is a failure under `classes` (empty: 5xx are failures).
pub fn is_failure(classes: &[ResponseClass], status: u16) -> bool {
    classes
        .iter()
        .find(|c| (c.min..=c.max).contains(&status))
        .map_or(status >= 500, |c| c.is_failure)
}

/// Faults injected by the client-side proxy before the request goes anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fault {
    /// Delay this long (ms)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// …for this share of requests, in millionths (100% = 1,000,000; Istio's `percentage.value`).
    #[serde(default)]
    pub delay_per_million: u32,
    /// Answer with this status instead of forwarding…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_status: Option<u16>,
    /// …for this share of requests, in millionths.
    #[serde(default)]
    pub abort_per_million: u32,
}

/// Istio's `retries` / Gateway API's `retry` / Envoy's retry policy, in one shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt (Istio `attempts`; Gateway API `attempts`).
    pub attempts: u32,
    /// Each attempt's own deadline (ms); an attempt that exceeds it is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// Envoy `retry-on` conditions.
    #[serde(default)]
    pub on: RetryOn,
}

/// What makes an attempt worth retrying (Envoy's `x-envoy-retry-on` values).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetryOn {
    /// `5xx`: any 5xx answer (and connect failures, resets, timeouts of an attempt).
    #[serde(default)]
    pub server_error: bool,
    /// `gateway-error`: 502, 503, 504.
    #[serde(default)]
    pub gateway_error: bool,
    /// `connect-failure`.
    #[serde(default)]
    pub connect_failure: bool,
    /// `reset`: the upstream reset or closed the connection mid-request.
    #[serde(default)]
    pub reset: bool,
    /// `refused-stream`.
    #[serde(default)]
    pub refused_stream: bool,
    /// `retriable-status-codes` (Istio: listed codes in `retryOn`; Gateway API: `codes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<u16>,
    /// `retriable-4xx`: 409.
    #[serde(default)]
    pub retriable_4xx: bool,
    /// A failure as the route's response classes define it (Linkerd `isRetryable`).
    #[serde(default)]
    pub failure_class: bool,
    /// gRPC statuses (from `grpc-status`) worth a retry: `cancelled` 1, `deadline-exceeded` 4,
    /// `resource-exhausted` 8, `internal` 13, `unavailable` 14.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_statuses: Vec<u32>,
}
