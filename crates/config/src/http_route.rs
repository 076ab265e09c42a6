//! The HTTPRoute as both the Gateway API (`gateway.networking.k8s.io`) and Linkerd
//! (`policy.linkerd.io`) write it: its serde shape, its filters' shape and the translation of
//! its `matches`. `gateway` translates the routes bound to Services (GAMMA) and Gateways,
//! `security` those bound to Linkerd Servers (inbound routes).
//!
//! Layout: `filters` (the filters' serde shape), `matches` (a match into a
//! [`model::RouteMatch`]).

pub(crate) mod filters;
mod matches;

pub(crate) use matches::translate_match;

use serde::Deserialize;
use serde_yaml_ng::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HttpRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// For Gateway parents; a Service parent (GAMMA) is reached by its own name.
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ParentRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<u32>,
}

/// What a parentRef names.
pub(crate) enum Parent<'a> {
    Service,
    /// `kind: Service` without `group: ""`: the group then defaults to the Gateway API's.
    ServiceWithoutGroup,
    Gateway,
    /// A Linkerd `Server`: an inbound route, translated by `security` (and skipped by
    /// `gateway`).
    Server,
    Other(&'a str, &'a str),
}

impl ParentRef {
    /// A Linkerd `Server` parent: the route is an inbound route of that Server.
    pub(crate) fn is_server(&self) -> bool {
        matches!(self.parent(), Parent::Server)
    }

    /// What the parentRef names, its group and kind defaulted as the Gateway API defaults
    /// them.
    pub(crate) fn parent(&self) -> Parent<'_> {
        let group = self.group.as_deref();
        match (group, self.kind.as_deref()) {
            (Some("" | "core"), Some("Service")) => Parent::Service,
            (None, Some("Service")) => Parent::ServiceWithoutGroup,
            (None | Some("gateway.networking.k8s.io"), None | Some("Gateway")) => Parent::Gateway,
            (Some("policy.linkerd.io"), Some("Server")) => Parent::Server,
            (g, k) => Parent::Other(
                g.unwrap_or("gateway.networking.k8s.io"),
                k.unwrap_or("Gateway"),
            ),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Rule {
    #[allow(dead_code)]
    pub name: Option<String>,
    #[serde(default)]
    pub matches: Vec<Match>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default)]
    pub filters: Vec<filters::Filter>,
    pub timeouts: Option<Timeouts>,
    /// Experimental (HTTPRouteRetry).
    pub retry: Option<Retry>,
    pub session_persistence: Option<Value>,
}

/// HTTPRouteTimeouts: Gateway API Durations; `0s` disables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Timeouts {
    pub request: Option<String>,
    pub backend_request: Option<String>,
}

/// HTTPRouteRetry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retry {
    #[serde(default)]
    pub codes: Vec<i64>,
    pub attempts: Option<i64>,
    pub backoff: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Match {
    pub path: Option<PathSpec>,
    #[serde(default)]
    pub headers: Vec<NameValue>,
    #[serde(default)]
    pub query_params: Vec<NameValue>,
    pub method: Option<Method>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathSpec {
    #[serde(rename = "type", default)]
    pub kind: PathType,
    pub value: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(crate) enum PathType {
    Exact,
    #[default]
    PathPrefix,
    RegularExpression,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NameValue {
    #[serde(rename = "type", default)]
    pub kind: ValueType,
    pub name: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(crate) enum ValueType {
    #[default]
    Exact,
    RegularExpression,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackendRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<u32>,
    pub weight: Option<i64>,
    #[serde(default)]
    pub filters: Vec<filters::Filter>,
}
