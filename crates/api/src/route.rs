//! Route conversions between `model::route` and the wire.

use crate::pb;
use crate::WireError;
use model::route::{
    Destination, Fault, HeaderMatch, HttpRoute, PathMatch, QueryMatch, RetryOn, RetryPolicy,
    RouteMatch, StringMatch,
};
use model::ServiceKey;

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
        None => Err(WireError::Route {
            route: route.to_string(),
            why: "a match without a value".into(),
        }),
    }
}

pub(crate) fn to_wire(r: &HttpRoute) -> pb::HttpRoute {
    use pb::path_match::Kind;
    pb::HttpRoute {
        name: r.name.clone(),
        matches: r
            .matches
            .iter()
            .map(|m| pb::RouteMatch {
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
            })
            .collect(),
        destinations: r
            .destinations
            .iter()
            .map(|d| pb::Destination {
                service: d.service.name.clone(),
                namespace: d.service.namespace.clone(),
                subset: d.subset.clone().unwrap_or_default(),
                labels: d.labels.clone().into_iter().collect(),
                weight: d.weight,
            })
            .collect(),
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
        }),
        fault: r.fault.as_ref().map(|f| pb::Fault {
            delay_ms: f.delay_ms.unwrap_or(0),
            delay_per_million: f.delay_per_million,
            abort_status: f.abort_status.map_or(0, u32::from),
            abort_per_million: f.abort_per_million,
        }),
    }
}

pub(crate) fn from_wire(r: pb::HttpRoute) -> Result<HttpRoute, WireError> {
    use pb::path_match::Kind;
    let name = r.name;
    let mut matches = Vec::with_capacity(r.matches.len());
    for m in r.matches {
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
                value: string_from(h.value, &name)?,
                invert: h.invert,
            });
        }
        let mut query = Vec::with_capacity(m.query.len());
        for q in m.query {
            query.push(QueryMatch {
                name: q.name,
                value: string_from(q.value, &name)?,
            });
        }
        matches.push(RouteMatch {
            path,
            method: (!m.method.is_empty()).then_some(m.method),
            headers,
            query,
            negated: Vec::new(),
        });
    }
    if r.destinations.is_empty() {
        return Err(WireError::Route {
            route: name,
            why: "no destination".into(),
        });
    }
    let destinations = r
        .destinations
        .into_iter()
        .map(|d| Destination {
            service: ServiceKey::new(d.service, d.namespace),
            subset: (!d.subset.is_empty()).then_some(d.subset),
            labels: d.labels.into_iter().collect(),
            weight: d.weight,
            request_headers: Default::default(),
            response_headers: Default::default(),
        })
        .collect();
    let retry = match r.retry {
        None => None,
        Some(p) => {
            let mut status_codes = Vec::with_capacity(p.status_codes.len());
            for c in p.status_codes {
                let code = u16::try_from(c).ok().filter(|c| (100..=599).contains(c));
                status_codes.push(code.ok_or_else(|| WireError::Route {
                    route: name.clone(),
                    why: format!("retry on status {c}: not an HTTP status"),
                })?);
            }
            Some(RetryPolicy {
                attempts: p.attempts,
                per_try_timeout_ms: (p.per_try_timeout_ms > 0).then_some(p.per_try_timeout_ms),
                on: RetryOn {
                    server_error: p.server_error,
                    gateway_error: p.gateway_error,
                    connect_failure: p.connect_failure,
                    reset: p.reset,
                    refused_stream: p.refused_stream,
                    status_codes,
                    ..Default::default()
                },
            })
        }
    };
    let fault = match r.fault {
        None => None,
        Some(f) => {
            let abort_status = match f.abort_status {
                0 => None,
                s => Some(
                    u16::try_from(s)
                        .ok()
                        .filter(|s| (200..=599).contains(s))
                        .ok_or_else(|| WireError::Route {
                            route: name.clone(),
                            why: format!("fault abort status {s}: not an HTTP status"),
                        })?,
                ),
            };
            Some(Fault {
                delay_ms: (f.delay_ms > 0).then_some(f.delay_ms),
                delay_per_million: f.delay_per_million.min(1_000_000),
                abort_status,
                abort_per_million: f.abort_per_million.min(1_000_000),
            })
        }
    };
    Ok(HttpRoute {
        name,
        matches,
        destinations,
        timeout_ms: (r.timeout_ms > 0).then_some(r.timeout_ms),
        retry,
        fault,
        ..Default::default()
    })
}
