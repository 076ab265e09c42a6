//! An HTTPRoute's rules as routes: each `(rule, match)` pair becomes one [`HttpRoute`] with the
//! rule's backends, filters, timeouts and retries, ranked against those of the other HTTPRoutes
//! of the same service (or ingress host) by the Gateway API's precedence.

use super::{filters, service_backend};
use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::http_route::{translate_match, HttpRouteSpec, Match, Rule};
use crate::k8s::Object;
use crate::policy;
use crate::services::Services;
use crate::valid;
use model::{
    Destination, DirectResponse, HttpRoute, PathMatch, RetryOn, RetryPolicy, RouteMatch, ServiceKey,
};

/// Retries when an HTTPRoute's `retry` leaves `attempts` out (implementation-specific; Istio's).
const DEFAULT_RETRY_ATTEMPTS: u32 = 2;

/// The Gateway API's largest backend weight.
const MAX_WEIGHT: i64 = 1_000_000;

/// How old an HTTPRoute is, oldest first: by `metadata.creationTimestamp` (RFC 3339, UTC,
/// whole seconds, so text order is time order); routes without one come after, in load order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Age {
    Created(String),
    Loaded(usize),
}

/// One `(rule, match)` pair of one HTTPRoute, as a route, with what orders it.
#[derive(Clone, Debug)]
pub(super) struct Ranked {
    pub age: Age,
    /// The HTTPRoute's `namespace/name`.
    pub owner: String,
    pub rule: usize,
    pub index: usize,
    /// With exactly one match.
    pub route: HttpRoute,
    /// The rule has no backendRefs (and no redirect): its destination depends on the parent
    /// it is bound through ([`Ranked::for_service`], [`Ranked::for_gateway`]).
    pub to_parent: bool,
}

/// What a Gateway answers for a rule without backendRefs: the Gateway API's 500 ("If *all*
/// entries in BackendRefs are invalid, and there are also no filters specified in this route
/// rule, *all* traffic which matches this rule MUST receive a 500 status code"; its
/// conformance test HTTPRouteNoBackendRefs expects 500 for omitted and for empty backendRefs).
const NO_BACKEND_STATUS: u16 = 500;

impl Ranked {
    /// The route as bound to a Service parent (GAMMA): a rule without backendRefs sends to
    /// that Service, as Linkerd and the mesh examples of its docs do.
    pub fn for_service(&self, parent: &ServiceKey) -> HttpRoute {
        let mut route = self.route.clone();
        if self.to_parent {
            route.destinations = vec![Destination::service(parent.clone(), 1)];
        }
        route
    }

    /// The route as bound to a Gateway: a rule without backendRefs answers 500.
    pub fn for_gateway(&self) -> HttpRoute {
        let mut route = self.route.clone();
        if self.to_parent {
            route.direct_response = Some(DirectResponse {
                status: NO_BACKEND_STATUS,
                body: String::new(),
            });
        }
        route
    }
}

/// Orders the `(rule, match)` pairs of every HTTPRoute of one service by the Gateway API's
/// precedence (first match wins, so the most specific comes first):
///
/// 1. an `Exact` path before any prefix, and a (segment-wise) path prefix before a
///    `RegularExpression` path (regex precedence is implementation-specific; this is Istio's);
///    within a kind, the longer path (in characters) first;
/// 2. then a match with a `method` before one without;
/// 3. then more header matches first;
/// 4. then more query-parameter matches first;
/// 5. ties: the older HTTPRoute ([`Age`]), then the HTTPRoute's `namespace/name`
///    alphabetically, then rule order, then match order within the rule.
pub(super) fn order_by_gateway_api_precedence(routes: &mut [Ranked]) {
    fn path_rank(m: &RouteMatch) -> (u8, std::cmp::Reverse<usize>) {
        let (kind, len) = match &m.path {
            Some(PathMatch::Exact(p)) => (0, p.chars().count()),
            Some(PathMatch::SegmentPrefix(p) | PathMatch::Prefix(p)) => (1, p.chars().count()),
            Some(PathMatch::Regex(p)) => (2, p.chars().count()),
            // The Gateway API's default match is `PathPrefix /`.
            None => (1, 1),
        };
        (kind, std::cmp::Reverse(len))
    }
    routes.sort_by_cached_key(|r| {
        let empty = RouteMatch::default();
        let m = r.route.matches.first().unwrap_or(&empty);
        (
            path_rank(m),
            m.method.is_none(),
            std::cmp::Reverse(m.headers.len()),
            std::cmp::Reverse(m.query.len()),
            r.age.clone(),
            r.owner.clone(),
            r.rule,
            r.index,
        )
    });
}

/// An HTTPRoute's `(rule, match)` pairs as routes with their filters, to be ordered with those
/// of the other HTTPRoutes of the same service or host.
pub(super) fn http_route_rules(
    doc: &Doc,
    o: &Object<HttpRouteSpec>,
    label: &str,
    age: Age,
    services: &Services,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Ranked> {
    let namespace = o.metadata.namespace();
    let mut ranked = Vec::new();
    for (i, rule) in o.spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let before = errors.len();
        let first = ranked.len();
        let f = filters::rule_filters(doc, &field, &rule.filters, namespace, services, errors);
        let destinations = match &f.redirect {
            Some(_) if !rule.backend_refs.is_empty() => {
                errors.push(doc.error(
                    &format!("{field}.backendRefs"),
                    "a rule with a RequestRedirect filter cannot have backendRefs",
                ));
                Vec::new()
            }
            Some(_) => Vec::new(),
            // Routed to the parent (Service) or answered 500 (Gateway), once bound.
            None if rule.backend_refs.is_empty() => Vec::new(),
            None => backends(doc, &field, rule, namespace, services, errors),
        };
        let to_parent = f.redirect.is_none() && rule.backend_refs.is_empty();
        let (timeout_ms, retry) = timeout_and_retry(doc, &field, rule, errors);
        let default = [Match::default()];
        let matches = if rule.matches.is_empty() {
            &default[..]
        } else {
            &rule.matches[..]
        };
        for (j, m) in matches.iter().enumerate() {
            let mfield = format!("{field}.matches[{j}]");
            let Some(m) = translate_match(doc, &mfield, m, errors) else {
                continue;
            };
            if f.replaces_prefix && !matches!(m.path, Some(PathMatch::SegmentPrefix(_))) {
                errors.push(doc.error(
                    &format!("{mfield}.path"),
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix",
                ));
            }
            ranked.push(Ranked {
                age: age.clone(),
                owner: format!("{namespace}/{}", o.metadata.name),
                rule: i,
                index: j,
                route: HttpRoute {
                    name: format!("{label} rules[{i}].matches[{j}]"),
                    matches: vec![m],
                    destinations: destinations.clone(),
                    timeout_ms,
                    retry: retry.clone(),
                    request_headers: f.request_headers.clone(),
                    response_headers: f.response_headers.clone(),
                    rewrite: f.rewrite.clone(),
                    redirect: f.redirect.clone(),
                    mirrors: f.mirrors.clone(),
                    cors: f.cors.clone(),
                    ..Default::default()
                },
                to_parent,
            });
        }
        if errors.len() == before {
            // A rule routed to its parent is checked as bound to a Gateway (it answers): its
            // values are what may be wrong.
            let routes: Vec<HttpRoute> = ranked[first..].iter().map(Ranked::for_gateway).collect();
            valid::routes(doc, &field, &routes, true, errors);
        }
    }
    ranked
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as Kubernetes writes creation timestamps.
pub(super) fn is_timestamp(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// A rule's `timeouts` and `retry`: `request` is the route's timeout, `backendRequest` each
/// attempt's (with `attempts: 0` when the rule does not retry).
fn timeout_and_retry(
    doc: &Doc,
    field: &str,
    rule: &Rule,
    errors: &mut Vec<Diagnostic>,
) -> (Option<u64>, Option<RetryPolicy>) {
    let mut duration =
        |name: &str, text: &Option<String>| match text.as_deref().map(policy::gateway_duration) {
            Some(Ok(ms)) => ms,
            Some(Err(message)) => {
                errors.push(doc.error(&format!("{field}.{name}"), message));
                None
            }
            None => None,
        };
    let (timeout_ms, per_try_timeout_ms) = match &rule.timeouts {
        Some(t) => (
            duration("timeouts.request", &t.request),
            duration("timeouts.backendRequest", &t.backend_request),
        ),
        None => (None, None),
    };
    if let (Some(request), Some(backend)) = (timeout_ms, per_try_timeout_ms) {
        if backend > request {
            errors.push(doc.error(
                &format!("{field}.timeouts.backendRequest"),
                format!(
                    "backendRequest ({backend}ms) must not be longer than request ({request}ms)"
                ),
            ));
        }
    }
    let retry = match &rule.retry {
        Some(r) => {
            let attempts = match r.attempts.map(u32::try_from) {
                None => DEFAULT_RETRY_ATTEMPTS,
                Some(Ok(a)) => a,
                Some(Err(_)) => {
                    errors.push(doc.error(
                        &format!("{field}.retry.attempts"),
                        "attempts must be 0 or more",
                    ));
                    0
                }
            };
            let mut status_codes = Vec::new();
            for (k, &code) in r.codes.iter().enumerate() {
                match u16::try_from(code).ok().filter(|c| (400..=599).contains(c)) {
                    Some(c) if !status_codes.contains(&c) => status_codes.push(c),
                    Some(_) => {}
                    None => errors.push(doc.error(
                        &format!("{field}.retry.codes[{k}]"),
                        format!("retry code {code} must be between 400 and 599"),
                    )),
                }
            }
            Some(RetryPolicy {
                attempts,
                per_try_timeout_ms,
                on: RetryOn {
                    connect_failure: true,
                    status_codes,
                    ..RetryOn::default()
                },
            })
        }
        // A per-attempt timeout without retries.
        None => per_try_timeout_ms.map(|ms| RetryPolicy {
            attempts: 0,
            per_try_timeout_ms: Some(ms),
            on: RetryOn::default(),
        }),
    };
    (timeout_ms, retry)
}

/// A rule's `backendRefs` as weighted destinations, with their own header filters.
fn backends(
    doc: &Doc,
    field: &str,
    rule: &Rule,
    namespace: &str,
    services: &Services,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Destination> {
    let mut out = Vec::new();
    let before = errors.len();
    for (j, b) in rule.backend_refs.iter().enumerate() {
        let field = format!("{field}.backendRefs[{j}]");
        if let Err(message) = service_backend(b.group.as_deref(), b.kind.as_deref()) {
            errors.push(doc.error(&field, message));
            continue;
        }
        let weight = match b.weight.unwrap_or(1) {
            w @ 0..=MAX_WEIGHT => w as u32,
            w => {
                errors.push(doc.error(
                    &format!("{field}.weight"),
                    format!("weight {w} must be between 0 and {MAX_WEIGHT}"),
                ));
                0
            }
        };
        let ns = b.namespace.as_deref().unwrap_or(namespace);
        let key = match services.named(&b.name, ns, "backend") {
            Ok(key) => key,
            Err(message) => {
                errors.push(doc.error(&format!("{field}.name"), message));
                continue;
            }
        };
        if let Some(message) = b.port.and_then(|n| services.check_port(&key, n)) {
            errors.push(doc.error(&format!("{field}.port"), message));
        }
        let (request_headers, response_headers) =
            filters::backend_filters(doc, &field, &b.filters, errors);
        out.push(Destination {
            request_headers,
            response_headers,
            ..Destination::service(key, weight)
        });
    }
    if errors.len() == before && out.iter().all(|d| d.weight == 0) {
        errors.push(doc.error(&format!("{field}.backendRefs"), "all weights are 0"));
    }
    out
}
