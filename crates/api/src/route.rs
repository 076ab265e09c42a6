//! Route conversions between `model::route` and the wire: matches, destinations, retries,
//! faults, the route filters (header edits, rewrite, redirect, direct response, mirrors, CORS,
//! response classes) and the ingress gateway's virtual hosts.

use crate::pb;
use crate::WireError;
use model::route::{
    Cors, Destination, DirectResponse, Fault, HeaderEdits, HeaderMatch, HttpRoute, Mirror,
    PathMatch, PathRewrite, QueryMatch, Redirect, ResponseClass, RetryOn, RetryPolicy, Rewrite,
    RouteMatch, StringMatch, TcpDestination, TcpMatch, TcpRoute,
};
use model::{ServiceKey, VirtualHost};

/// Shares are in millionths; more than all requests is all requests.
const PER_MILLION: u32 = 1_000_000;

fn bad(route: &str, why: impl Into<String>) -> WireError {
    WireError::Route {
        route: route.to_string(),
        why: why.into(),
    }
}

/// A status from the wire as the model holds it; whether it is one the route may use is
/// `model::valid::route`'s to say.
fn status16(s: u32, what: &str, route: &str) -> Result<u16, WireError> {
    u16::try_from(s).map_err(|_| bad(route, format!("{what} {s}: not an HTTP status")))
}

pub(crate) fn vhost_to(v: &VirtualHost) -> pb::VirtualHost {
    pb::VirtualHost {
        name: v.name.clone(),
        hosts: v.hosts.clone(),
        routes: v.routes.iter().map(to_wire).collect(),
    }
}

pub(crate) fn vhost_from(v: pb::VirtualHost) -> Result<VirtualHost, WireError> {
    Ok(VirtualHost {
        name: v.name,
        hosts: v.hosts,
        routes: v
            .routes
            .into_iter()
            .map(from_wire)
            .collect::<Result<_, _>>()?,
    })
}

pub(crate) fn to_wire(r: &HttpRoute) -> pb::HttpRoute {
    pb::HttpRoute {
        name: r.name.clone(),
        matches: r.matches.iter().map(match_to).collect(),
        destinations: r.destinations.iter().map(destination_to).collect(),
        timeout_ms: r.timeout_ms.unwrap_or(0),
        retry: r.retry.as_ref().map(|p| pb::RetryPolicy {
            attempts: p.attempts,
            per_try_timeout_ms: p.per_try_timeout_ms.unwrap_or(0),
            server_error: p.on.server_error,
            gateway_error: p.on.gateway_error,
            connect_failure: p.on.connect_failure,
            reset: p.on.reset,
            refused_stream: p.on.refused_stream,
            status_codes: p.on.status_codes.iter().map(|c| u32::from(*c)).collect(),
            retriable_4xx: p.on.retriable_4xx,
            failure_class: p.on.failure_class,
            grpc_statuses: p.on.grpc_statuses.clone(),
        }),
        fault: r.fault.as_ref().map(|f| pb::Fault {
            delay_ms: f.delay_ms.unwrap_or(0),
            delay_per_million: f.delay_per_million,
            abort_status: f.abort_status.map_or(0, u32::from),
            abort_per_million: f.abort_per_million,
        }),
        request_headers: edits_to(&r.request_headers),
        response_headers: edits_to(&r.response_headers),
        rewrite: r.rewrite.as_ref().map(|w| pb::Rewrite {
            path: w.path.as_ref().map(path_rewrite_to),
            authority: w.authority.clone(),
        }),
        redirect: r.redirect.as_ref().map(|d| pb::Redirect {
            scheme: d.scheme.clone(),
            host: d.host.clone(),
            port: d.port.map(u32::from),
            path: d.path.as_ref().map(path_rewrite_to),
            status: d.status.into(),
        }),
        direct_response: r.direct_response.as_ref().map(|d| pb::DirectResponse {
            status: d.status.into(),
            body: d.body.clone(),
        }),
        mirrors: r
            .mirrors
            .iter()
            .map(|m| pb::Mirror {
                destination: Some(destination_to(&m.destination)),
                per_million: m.per_million,
            })
            .collect(),
        cors: r.cors.as_ref().map(|c| pb::Cors {
            allow_origins: c.allow_origins.iter().map(string_to).collect(),
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            max_age_s: c.max_age_s,
            allow_credentials: c.allow_credentials,
        }),
        response_classes: r
            .response_classes
            .iter()
            .map(|c| pb::ResponseClass {
                min: c.min.into(),
                max: c.max.into(),
                is_failure: c.is_failure,
            })
            .collect(),
    }
}

/// A route from the wire, checked whole as the proxy compiles it (`model::valid::route`).
pub(crate) fn from_wire(r: pb::HttpRoute) -> Result<HttpRoute, WireError> {
    let name = r.name;
    let matches = r
        .matches
        .into_iter()
        .map(|m| match_from(m, &name))
        .collect::<Result<_, _>>()?;
    let destinations = r.destinations.into_iter().map(destination_from).collect();
    let retry = r.retry.map(|p| retry_from(p, &name)).transpose()?;
    let fault = r.fault.map(|f| fault_from(f, &name)).transpose()?;
    let request_headers = edits_from(r.request_headers);
    let response_headers = edits_from(r.response_headers);
    let rewrite = match r.rewrite {
        None => None,
        Some(w) => Some(Rewrite {
            path: w.path.map(|p| path_rewrite_from(p, &name)).transpose()?,
            authority: w.authority,
        }),
    };
    let redirect = r.redirect.map(|d| redirect_from(d, &name)).transpose()?;
    let direct_response = match r.direct_response {
        None => None,
        Some(d) => Some(DirectResponse {
            status: status16(d.status, "direct response status", &name)?,
            body: d.body,
        }),
    };
    let mut mirrors = Vec::with_capacity(r.mirrors.len());
    for m in r.mirrors {
        let d = m
            .destination
            .ok_or_else(|| bad(&name, "a mirror without a destination"))?;
        mirrors.push(Mirror {
            destination: destination_from(d),
            per_million: m.per_million.min(PER_MILLION),
        });
    }
    let cors = r.cors.map(|c| cors_from(c, &name)).transpose()?;
    let response_classes = r
        .response_classes
        .into_iter()
        .map(|c| response_class_from(c, &name))
        .collect::<Result<_, _>>()?;
    let route = HttpRoute {
        name,
        matches,
        destinations,
        timeout_ms: (r.timeout_ms > 0).then_some(r.timeout_ms),
        retry,
        fault,
        request_headers,
        response_headers,
        rewrite,
        redirect,
        direct_response,
        mirrors,
        cors,
        response_classes,
    };
    model::valid::route(&route).map_err(|why| bad(&route.name, why))?;
    Ok(route)
}

fn string_to(m: &StringMatch) -> pb::StringMatch {
    use pb::string_match::Kind;
    pb::StringMatch {
        kind: Some(match m {
            StringMatch::Exact(s) => Kind::Exact(s.clone()),
            StringMatch::Prefix(s) => Kind::Prefix(s.clone()),
            StringMatch::Regex(s) => Kind::Regex(s.clone()),
            StringMatch::Present => Kind::Present(true),
        }),
    }
}

fn string_from(m: Option<pb::StringMatch>, route: &str) -> Result<StringMatch, WireError> {
    use pb::string_match::Kind;
    match m.and_then(|m| m.kind) {
        Some(Kind::Exact(s)) => Ok(StringMatch::Exact(s)),
        Some(Kind::Prefix(s)) => Ok(StringMatch::Prefix(s)),
        Some(Kind::Regex(s)) => Ok(StringMatch::Regex(s)),
        Some(Kind::Present(_)) => Ok(StringMatch::Present),
        None => Err(bad(route, "a match without a value")),
    }
}

pub(crate) fn match_to(m: &RouteMatch) -> pb::RouteMatch {
    use pb::path_match::Kind;
    pb::RouteMatch {
        path: m.path.as_ref().map(|p| pb::PathMatch {
            kind: Some(match p {
                PathMatch::Exact(s) => Kind::Exact(s.clone()),
                PathMatch::Prefix(s) => Kind::Prefix(s.clone()),
                PathMatch::SegmentPrefix(s) => Kind::SegmentPrefix(s.clone()),
                PathMatch::Regex(s) => Kind::Regex(s.clone()),
            }),
        }),
        method: m.method.clone().unwrap_or_default(),
        headers: m
            .headers
            .iter()
            .map(|h| pb::HeaderMatch {
                name: h.name.clone(),
                value: Some(string_to(&h.value)),
                invert: h.invert,
            })
            .collect(),
        query: m
            .query
            .iter()
            .map(|q| pb::QueryMatch {
                name: q.name.clone(),
                value: Some(string_to(&q.value)),
            })
            .collect(),
        negated: m.negated.iter().map(match_to).collect(),
        scheme: m.scheme.as_ref().map(string_to),
        authority: m.authority.as_ref().map(string_to),
        port: m.port.map(u32::from),
        source_labels: m.source_labels.clone().into_iter().collect(),
        source_namespace: m.source_namespace.clone(),
    }
}

/// Recursive through `negated`; prost's decoder already bounds the nesting depth.
pub(crate) fn match_from(m: pb::RouteMatch, route: &str) -> Result<RouteMatch, WireError> {
    use pb::path_match::Kind;
    let path = match m.path.and_then(|p| p.kind) {
        None => None,
        Some(Kind::Exact(s)) => Some(PathMatch::Exact(s)),
        Some(Kind::Prefix(s)) => Some(PathMatch::Prefix(s)),
        Some(Kind::SegmentPrefix(s)) => Some(PathMatch::SegmentPrefix(s)),
        Some(Kind::Regex(s)) => Some(PathMatch::Regex(s)),
    };
    let mut headers = Vec::with_capacity(m.headers.len());
    for h in m.headers {
        headers.push(HeaderMatch {
            name: h.name,
            value: string_from(h.value, route)?,
            invert: h.invert,
        });
    }
    let mut query = Vec::with_capacity(m.query.len());
    for q in m.query {
        query.push(QueryMatch {
            name: q.name,
            value: string_from(q.value, route)?,
        });
    }
    let negated = m
        .negated
        .into_iter()
        .map(|n| match_from(n, route))
        .collect::<Result<_, _>>()?;
    let port = match m.port {
        None => None,
        Some(p) => {
            Some(
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| WireError::Route {
                        route: route.to_string(),
                        why: format!("match on port {p}: not a port"),
                    })?,
            )
        }
    };
    Ok(RouteMatch {
        path,
        method: (!m.method.is_empty()).then_some(m.method),
        headers,
        query,
        negated,
        scheme: m.scheme.map(|v| string_from(Some(v), route)).transpose()?,
        authority: m
            .authority
            .map(|v| string_from(Some(v), route))
            .transpose()?,
        port,
        source_labels: m.source_labels.into_iter().collect(),
        source_namespace: m.source_namespace,
    })
}

pub(crate) fn tcp_to_wire(r: &TcpRoute) -> pb::TcpRoute {
    pb::TcpRoute {
        name: r.name.clone(),
        matches: r
            .matches
            .iter()
            .map(|m| pb::TcpMatch {
                port: m.port.map_or(0, u32::from),
                sni_hosts: m.sni_hosts.clone(),
                source_labels: m.source_labels.clone().into_iter().collect(),
                source_namespace: m.source_namespace.clone().unwrap_or_default(),
            })
            .collect(),
        destinations: r
            .destinations
            .iter()
            .map(|d| pb::TcpDestination {
                to: Some(destination_to(&d.to)),
                port: d.port.map_or(0, u32::from),
            })
            .collect(),
    }
}

/// A connection route of `service` from the wire.
pub(crate) fn tcp_from_wire(r: pb::TcpRoute, service: &str) -> Result<TcpRoute, WireError> {
    let port = |p: u32, what: &str| match p {
        0 => Ok(None),
        p => u16::try_from(p).map(Some).map_err(|_| WireError::Port {
            service: format!("{service} ({} {what})", r.name),
            port: p,
        }),
    };
    let mut matches = Vec::with_capacity(r.matches.len());
    for m in &r.matches {
        matches.push(TcpMatch {
            port: port(m.port, "match")?,
            sni_hosts: m.sni_hosts.clone(),
            source_labels: m.source_labels.clone().into_iter().collect(),
            source_namespace: (!m.source_namespace.is_empty()).then(|| m.source_namespace.clone()),
        });
    }
    let mut destinations = Vec::with_capacity(r.destinations.len());
    for d in &r.destinations {
        let Some(to) = d.to.clone() else {
            return Err(bad(&r.name, "a destination names no service"));
        };
        destinations.push(TcpDestination {
            to: destination_from(to),
            port: port(d.port, "destination")?,
        });
    }
    Ok(TcpRoute {
        name: r.name,
        matches,
        destinations,
    })
}

fn destination_to(d: &Destination) -> pb::Destination {
    pb::Destination {
        service: d.service.name.clone(),
        namespace: d.service.namespace.clone(),
        subset: d.subset.clone().unwrap_or_default(),
        labels: d.labels.clone().into_iter().collect(),
        weight: d.weight,
        request_headers: edits_to(&d.request_headers),
        response_headers: edits_to(&d.response_headers),
    }
}

fn destination_from(d: pb::Destination) -> Destination {
    Destination {
        service: ServiceKey::new(d.service, d.namespace),
        subset: (!d.subset.is_empty()).then_some(d.subset),
        labels: d.labels.into_iter().collect(),
        weight: d.weight,
        request_headers: edits_from(d.request_headers),
        response_headers: edits_from(d.response_headers),
    }
}

/// `None` for no edits, which is what an absent message decodes to.
fn edits_to(e: &HeaderEdits) -> Option<pb::HeaderEdits> {
    let pairs = |v: &[(String, String)]| {
        v.iter()
            .map(|(name, value)| pb::Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    };
    (!e.is_empty()).then(|| pb::HeaderEdits {
        set: pairs(&e.set),
        add: pairs(&e.add),
        remove: e.remove.clone(),
    })
}

fn edits_from(e: Option<pb::HeaderEdits>) -> HeaderEdits {
    let Some(e) = e else {
        return HeaderEdits::default();
    };
    let pairs = |v: Vec<pb::Header>| v.into_iter().map(|h| (h.name, h.value)).collect();
    HeaderEdits {
        set: pairs(e.set),
        add: pairs(e.add),
        remove: e.remove,
    }
}

fn retry_from(p: pb::RetryPolicy, route: &str) -> Result<RetryPolicy, WireError> {
    let mut status_codes = Vec::with_capacity(p.status_codes.len());
    for c in p.status_codes {
        status_codes.push(status16(c, "retry on status", route)?);
    }
    Ok(RetryPolicy {
        attempts: p.attempts,
        per_try_timeout_ms: (p.per_try_timeout_ms > 0).then_some(p.per_try_timeout_ms),
        on: RetryOn {
            server_error: p.server_error,
            gateway_error: p.gateway_error,
            connect_failure: p.connect_failure,
            reset: p.reset,
            refused_stream: p.refused_stream,
            status_codes,
            retriable_4xx: p.retriable_4xx,
            failure_class: p.failure_class,
            grpc_statuses: p.grpc_statuses,
        },
    })
}

fn fault_from(f: pb::Fault, route: &str) -> Result<Fault, WireError> {
    let abort_status = match f.abort_status {
        0 => None,
        s => Some(status16(s, "fault abort status", route)?),
    };
    Ok(Fault {
        delay_ms: (f.delay_ms > 0).then_some(f.delay_ms),
        delay_per_million: f.delay_per_million.min(PER_MILLION),
        abort_status,
        abort_per_million: f.abort_per_million.min(PER_MILLION),
    })
}

fn path_rewrite_to(p: &PathRewrite) -> pb::PathRewrite {
    use pb::path_rewrite::Kind;
    pb::PathRewrite {
        kind: Some(match p {
            PathRewrite::Full(s) => Kind::Full(s.clone()),
            PathRewrite::Prefix(s) => Kind::Prefix(s.clone()),
            PathRewrite::Regex {
                pattern,
                substitution,
            } => Kind::Regex(pb::RegexRewrite {
                pattern: pattern.clone(),
                substitution: substitution.clone(),
            }),
        }),
    }
}

fn path_rewrite_from(p: pb::PathRewrite, route: &str) -> Result<PathRewrite, WireError> {
    use pb::path_rewrite::Kind;
    match p.kind {
        Some(Kind::Full(s)) => Ok(PathRewrite::Full(s)),
        Some(Kind::Prefix(s)) => Ok(PathRewrite::Prefix(s)),
        Some(Kind::Regex(r)) => Ok(PathRewrite::Regex {
            pattern: r.pattern,
            substitution: r.substitution,
        }),
        // Also what a kind added by a newer control plane decodes to.
        None => Err(bad(route, "a path rewrite of an unknown kind")),
    }
}

fn redirect_from(d: pb::Redirect, route: &str) -> Result<Redirect, WireError> {
    let status = status16(d.status, "redirect status", route)?;
    let port = match d.port {
        None => None,
        Some(p) => Some(
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad(route, format!("redirect port {p}: not a valid port")))?,
        ),
    };
    Ok(Redirect {
        scheme: d.scheme,
        host: d.host,
        port,
        path: d.path.map(|p| path_rewrite_from(p, route)).transpose()?,
        status,
    })
}

fn cors_from(c: pb::Cors, route: &str) -> Result<Cors, WireError> {
    let allow_origins = c
        .allow_origins
        .into_iter()
        .map(|o| string_from(Some(o), route))
        .collect::<Result<_, _>>()?;
    Ok(Cors {
        allow_origins,
        allow_methods: c.allow_methods,
        allow_headers: c.allow_headers,
        expose_headers: c.expose_headers,
        max_age_s: c.max_age_s,
        allow_credentials: c.allow_credentials,
    })
}

fn response_class_from(c: pb::ResponseClass, route: &str) -> Result<ResponseClass, WireError> {
    let what = "response class bound";
    Ok(ResponseClass {
        min: status16(c.min, what, route)?,
        max: status16(c.max, what, route)?,
        is_failure: c.is_failure,
    })
}
