//! The serde shape of an Istio VirtualService and of what its `http[]` rules hold (matches,
//! destinations, faults, retries), with the checks of a fault's or retry's values and the
//! request conditions weft cannot test yet.

use super::filters;
use crate::policy;
use model::{Fault, RetryPolicy};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct VirtualService {
    #[serde(default)]
    pub hosts: Vec<String>,
    /// `mesh` (all sidecars) and gateway names (`NAME` in the VirtualService's namespace, or
    /// `NAMESPACE/NAME`); absent or empty: `mesh`.
    pub gateways: Option<Vec<String>>,
    #[serde(default)]
    pub http: Vec<HttpRule>,
    #[serde(default)]
    pub tls: Vec<TlsRule>,
    #[serde(default)]
    pub tcp: Vec<TcpRule>,
    pub export_to: Option<Value>,
}

/// Istio's TCPRoute: connections matching any of `match` go to `route`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TcpRule {
    #[serde(rename = "match", default)]
    pub matches: Vec<L4Match>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// Istio's TLSRoute: TLS connections (not terminated) routed by their server name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsRule {
    #[serde(rename = "match", default)]
    pub matches: Vec<L4Match>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// Istio's L4MatchAttributes, and TLSMatchAttributes (which adds `sniHosts`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct L4Match {
    /// Only in `tls[]` matches, where it is required.
    pub sni_hosts: Option<Vec<String>>,
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
    pub destination_subnets: Option<Value>,
    pub gateways: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HttpRule {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matches: Vec<MatchRequest>,
    #[serde(default)]
    pub route: Vec<RouteDestination>,
    pub redirect: Option<filters::HttpRedirect>,
    pub direct_response: Option<filters::HttpDirectResponse>,
    pub delegate: Option<Value>,
    pub rewrite: Option<filters::HttpRewrite>,
    /// A protobuf Duration; `0s` disables.
    pub timeout: Option<String>,
    pub retries: Option<HttpRetry>,
    pub fault: Option<HttpFault>,
    pub mirror: Option<IstioDestination>,
    pub mirrors: Option<Vec<filters::MirrorPolicy>>,
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer share of `mirror`; `mirrorPercentage` wins when both are set.
    pub mirror_percent: Option<i64>,
    pub cors_policy: Option<filters::CorsPolicy>,
    pub headers: Option<filters::Headers>,
}

/// Istio's HTTPFaultInjection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpFault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

/// Istio's HTTPFaultInjection.Delay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FaultDelay {
    pub fixed_delay: Option<String>,
    pub exponential_delay: Option<Value>,
    pub percentage: Option<Percent>,
    /// Deprecated integer percentage; `percentage` wins when both are set.
    pub percent: Option<i64>,
}

/// Istio's HTTPFaultInjection.Abort.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct FaultAbort {
    pub http_status: Option<i64>,
    pub grpc_status: Option<Value>,
    pub http2_error: Option<Value>,
    pub percentage: Option<Percent>,
    /// Deprecated integer percentage; `percentage` wins when both are set.
    pub percent: Option<i64>,
}

/// Istio's Percent: a share of requests, 0 to 100.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Percent {
    #[serde(default)]
    pub value: f64,
}

/// A fault's share of requests in millionths, from `percentage.value` or the legacy `percent`,
/// or (field suffix, message). Neither given: no request, as Istio translates it (the legacy
/// integer `percent` defaults to 0).
pub(super) fn per_million(
    percentage: Option<&Percent>,
    percent: Option<i64>,
) -> Result<u32, (&'static str, String)> {
    match (percentage, percent) {
        (Some(p), _) => {
            if (0.0..=100.0).contains(&p.value) {
                // At most 1e6 after the range check, so the cast is exact.
                Ok((p.value * 10_000.0).round() as u32)
            } else {
                Err((
                    "percentage.value",
                    format!("percentage {} must be between 0 and 100", p.value),
                ))
            }
        }
        (None, Some(p)) => match u32::try_from(p) {
            Ok(p) if p <= 100 => Ok(p * 10_000),
            _ => Err(("percent", format!("percent {p} must be between 0 and 100"))),
        },
        (None, None) => Ok(0),
    }
}

impl HttpFault {
    /// The rule's faults, with error messages for (field suffix, message). A delay or abort of
    /// an unsupported kind only (`exponentialDelay`, `grpcStatus`, `http2Error`) is left out;
    /// `notices` reports it.
    pub(super) fn fault(&self) -> (Option<Fault>, Vec<(String, String)>) {
        let mut problems = Vec::new();
        let mut fault = Fault::default();
        if let Some(delay) = &self.delay {
            match (&delay.fixed_delay, &delay.exponential_delay) {
                (Some(text), _) => match policy::istio_duration(text) {
                    Ok(ms) => fault.delay_ms = ms,
                    Err(message) => problems.push(("delay.fixedDelay".into(), message)),
                },
                (None, Some(_)) => {}
                (None, None) => problems.push(("delay".into(), "a delay needs fixedDelay".into())),
            }
            match per_million(delay.percentage.as_ref(), delay.percent) {
                Ok(share) if fault.delay_ms.is_some() => fault.delay_per_million = share,
                Ok(_) => {}
                Err((name, message)) => problems.push((format!("delay.{name}"), message)),
            }
        }
        if let Some(abort) = &self.abort {
            let unsupported_only = abort.grpc_status.is_some() || abort.http2_error.is_some();
            match abort.http_status {
                Some(code) => match u16::try_from(code) {
                    Ok(code) if (200..=599).contains(&code) => fault.abort_status = Some(code),
                    _ => problems.push((
                        "abort.httpStatus".into(),
                        format!("httpStatus {code} must be between 200 and 599"),
                    )),
                },
                None if unsupported_only => {}
                None => problems.push(("abort".into(), "an abort needs httpStatus".into())),
            }
            match per_million(abort.percentage.as_ref(), abort.percent) {
                Ok(share) if fault.abort_status.is_some() => fault.abort_per_million = share,
                Ok(_) => {}
                Err((name, message)) => problems.push((format!("abort.{name}"), message)),
            }
        }
        let any = fault.delay_ms.is_some() || fault.abort_status.is_some();
        (any.then_some(fault), problems)
    }
}

/// Istio's HTTPRetry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HttpRetry {
    pub attempts: i64,
    pub per_try_timeout: Option<String>,
    /// Comma-separated Envoy retry-on names and status codes; absent: Istio's default.
    pub retry_on: Option<String>,
    pub retry_remote_localities: Option<Value>,
}

impl HttpRetry {
    /// The rule's retry policy, with error messages for (field suffix, message).
    pub(super) fn policy(&self) -> (RetryPolicy, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        let attempts = match u32::try_from(self.attempts) {
            Ok(a) => a,
            Err(_) => {
                problems.push((
                    "attempts",
                    format!("attempts {} must be 0 or more", self.attempts),
                ));
                0
            }
        };
        let per_try_timeout_ms = match self.per_try_timeout.as_deref().map(policy::istio_duration) {
            Some(Ok(ms)) => ms,
            Some(Err(message)) => {
                problems.push(("perTryTimeout", message));
                None
            }
            None => None,
        };
        let on = match &self.retry_on {
            Some(text) => {
                let list = policy::istio_retry_on(text);
                problems.extend(list.invalid.into_iter().map(|m| ("retryOn", m)));
                list.on
            }
            None => policy::istio_default_retry_on(),
        };
        let policy = RetryPolicy {
            attempts,
            per_try_timeout_ms,
            on,
        };
        (policy, problems)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct MatchRequest {
    /// Only a label for logs.
    #[allow(dead_code)]
    pub name: Option<String>,
    pub uri: Option<IstioStringMatch>,
    pub method: Option<IstioStringMatch>,
    #[serde(default)]
    pub headers: BTreeMap<String, IstioStringMatch>,
    #[serde(default)]
    pub without_headers: BTreeMap<String, IstioStringMatch>,
    #[serde(default)]
    pub query_params: BTreeMap<String, IstioStringMatch>,
    pub scheme: Option<IstioStringMatch>,
    pub authority: Option<IstioStringMatch>,
    pub port: Option<u32>,
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    pub gateways: Option<Value>,
    pub ignore_uri_case: Option<Value>,
    pub source_namespace: Option<String>,
    pub stat_prefix: Option<Value>,
}

impl MatchRequest {
    /// Conditions weft cannot test yet. Ignoring one would make the match wider than written,
    /// so these are errors rather than notices.
    pub(super) fn unsupported(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("gateways", &self.gateways),
            ("ignoreUriCase", &self.ignore_uri_case),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.is_some().then_some(name))
    }
}

/// Istio's StringMatch: one of `exact`, `prefix`, `regex`; `{}` tests presence (headers).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IstioStringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteDestination {
    pub destination: IstioDestination,
    pub weight: Option<i64>,
    /// Header edits for requests sent to (and responses from) this destination only.
    pub headers: Option<filters::Headers>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IstioDestination {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<PortSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortSelector {
    pub number: u32,
}
