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
}
