//! A VirtualService's `http[]` rule as routes: its conflicts, destinations (checked against the
//! mesh's services and the DestinationRules' subsets), timeout and retries, fault, header edits,
//! mirrors, rewrite, redirect, direct response and CORS.

use super::destination_rule::Subsets;
use super::filters;
use super::matches::translate_match;
use super::virtual_service::{HttpRule, IstioDestination, RouteDestination};
use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::policy;
use crate::services::Services;
use model::{
    Destination, HttpRoute, Labels, Mirror, PathMatch, PathRewrite, RetryPolicy, Rewrite,
    RouteMatch,
};

/// One `http[]` rule as routes: one, or several when `rewrite.uri` follows matches of different
/// kinds (after a prefix match it replaces the prefix, after any other the whole path), so that
/// each route's rewrite says what its matches mean. Errors go to `errors`.
#[allow(clippy::too_many_arguments)]
pub(super) fn translate_rule(
    doc: &Doc,
    i: usize,
    rule: &HttpRule,
    label: &str,
    namespace: &str,
    services: &Services,
    subsets: &Subsets,
    errors: &mut Vec<Diagnostic>,
) -> Vec<HttpRoute> {
    let field = format!("spec.http[{i}]");
    let matches: Vec<RouteMatch> = rule
        .matches
        .iter()
        .enumerate()
        .filter_map(|(j, m)| translate_match(doc, &format!("{field}.match[{j}]"), m, errors))
        .collect();
    let forwards = !rule.route.is_empty();
    let conflicts = [
        (
            rule.redirect.is_some() && forwards,
            "redirect",
            "route and redirect",
        ),
        (
            rule.redirect.is_some() && rule.rewrite.is_some(),
            "rewrite",
            "rewrite and redirect",
        ),
        (
            rule.redirect.is_some() && rule.fault.is_some(),
            "fault",
            "fault and redirect",
        ),
        (
            rule.direct_response.is_some() && forwards,
            "directResponse",
            "route and directResponse",
        ),
        (
            rule.direct_response.is_some() && rule.redirect.is_some(),
            "directResponse",
            "redirect and directResponse",
        ),
        (
            rule.mirror.is_some() && rule.mirrors.is_some(),
            "mirrors",
            "mirror and mirrors",
        ),
    ];
    for (_, name, what) in conflicts.iter().filter(|(c, ..)| *c) {
        errors.push(doc.error(
            &format!("{field}.{name}"),
            format!("a rule cannot have both {what}"),
        ));
    }
    let answers = rule.redirect.is_some() || rule.direct_response.is_some();
    for (name, set) in [
        ("rewrite", rule.rewrite.is_some() && rule.redirect.is_none()),
        ("mirror", rule.mirror.is_some()),
        ("mirrors", rule.mirrors.is_some()),
    ] {
        if set && !forwards && answers {
            errors.push(doc.error(
                &format!("{field}.{name}"),
                format!("{name} applies only to forwarded requests: the rule needs route"),
            ));
        }
    }
    let answers =
        rule.redirect.is_some() || rule.direct_response.is_some() || rule.delegate.is_some();
    let destinations = destinations(
        doc,
        &field,
        &rule.route,
        answers,
        namespace,
        services,
        subsets,
        errors,
    );
    let (timeout_ms, retry) = timeout_and_retry(doc, &field, rule, errors);
    let fault = rule.fault.as_ref().and_then(|f| {
        let (fault, problems) = f.fault();
        for (name, message) in problems {
            errors.push(doc.error(&format!("{field}.fault.{name}"), message));
        }
        fault
    });
    if !forwards && !answers && rule.delegate.is_some() {
        // Delegation is not implemented (a notice says so): the rule is left out.
        return Vec::new();
    }
    let (request_headers, response_headers) = rule
        .headers
        .as_ref()
        .map(|h| h.edits(doc, &format!("{field}.headers"), errors))
        .unwrap_or_default();
    let mut mirrors = Vec::new();
    // A mirror's weight means nothing: it gets its share of copies, whatever the split.
    let mirror_of = |d: &IstioDestination, f: &str, errors: &mut Vec<Diagnostic>| {
        destination(doc, f, d, 1, namespace, services, subsets, errors)
    };
    if let Some(d) = &rule.mirror {
        let destination = mirror_of(d, &format!("{field}.mirror"), errors);
        let share = filters::mirror_share(
            doc,
            (
                &format!("{field}.mirrorPercentage.value"),
                &format!("{field}.mirrorPercent"),
            ),
            rule.mirror_percentage.as_ref(),
            rule.mirror_percent,
            errors,
        );
        mirrors.extend(destination.map(|destination| Mirror {
            destination,
            per_million: share,
        }));
    }
    for (j, m) in rule.mirrors.iter().flatten().enumerate() {
        let f = format!("{field}.mirrors[{j}]");
        let destination = mirror_of(&m.destination, &format!("{f}.destination"), errors);
        let share = filters::mirror_share(
            doc,
            (&format!("{f}.percentage.value"), &f),
            m.percentage.as_ref(),
            None,
            errors,
        );
        mirrors.extend(destination.map(|destination| Mirror {
            destination,
            per_million: share,
        }));
    }
    let (uri, regex, authority) = match &rule.rewrite {
        Some(r) => filters::rewrite(doc, &format!("{field}.rewrite"), r, errors),
        None => (None, None, None),
    };
    let route = HttpRoute {
        name: rule
            .name
            .clone()
            .unwrap_or_else(|| format!("{label} http[{i}]")),
        matches,
        destinations,
        timeout_ms,
        retry,
        fault,
        request_headers,
        response_headers,
        rewrite: (regex.is_some() || authority.is_some()).then(|| Rewrite {
            path: regex,
            authority: authority.clone(),
        }),
        redirect: rule
            .redirect
            .as_ref()
            .map(|r| filters::redirect(doc, &format!("{field}.redirect"), r, errors)),
        direct_response: rule
            .direct_response
            .as_ref()
            .map(|d| filters::direct_response(doc, &format!("{field}.directResponse"), d, errors)),
        mirrors,
        cors: rule
            .cors_policy
            .as_ref()
            .map(|c| filters::cors(doc, &format!("{field}.corsPolicy"), c, errors)),
        response_classes: Vec::new(),
    };
    let Some(uri) = uri else {
        return vec![route];
    };
    // Istio matches a block without `uri` as the prefix `/`; the rewrite then replaces that `/`.
    let mut matches = route.matches.clone();
    if matches.is_empty() {
        matches.push(RouteMatch::default());
    }
    let mut out: Vec<HttpRoute> = Vec::new();
    for mut m in matches {
        let path = match m.path.get_or_insert_with(|| PathMatch::Prefix("/".into())) {
            PathMatch::Prefix(_) => PathRewrite::Prefix(uri.clone()),
            _ => PathRewrite::Full(uri.clone()),
        };
        let rewrite = Some(Rewrite {
            path: Some(path),
            authority: authority.clone(),
        });
        match out.last_mut() {
            Some(last) if last.rewrite == rewrite => last.matches.push(m),
            _ => out.push(HttpRoute {
                matches: vec![m],
                rewrite,
                ..route.clone()
            }),
        }
    }
    out
}

/// A rule's `timeout` (`0s`: none) and `retries` (`attempts: 0`: retries disabled).
fn timeout_and_retry(
    doc: &Doc,
    field: &str,
    rule: &HttpRule,
    errors: &mut Vec<Diagnostic>,
) -> (Option<u64>, Option<RetryPolicy>) {
    let timeout_ms = match rule.timeout.as_deref().map(policy::istio_duration) {
        Some(Ok(ms)) => ms,
        Some(Err(message)) => {
            errors.push(doc.error(&format!("{field}.timeout"), message));
            None
        }
        None => None,
    };
    let retry = rule.retries.as_ref().map(|r| {
        let (policy, problems) = r.policy();
        for (name, message) in problems {
            errors.push(doc.error(&format!("{field}.retries.{name}"), message));
        }
        policy
    });
    (timeout_ms, retry)
}

/// A rule's `route[]` as weighted destinations; `answers`: the rule may have none (it answers
/// by itself).
#[allow(clippy::too_many_arguments)]
pub(super) fn destinations(
    doc: &Doc,
    field: &str,
    route: &[RouteDestination],
    answers: bool,
    namespace: &str,
    services: &Services,
    subsets: &Subsets,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Destination> {
    if route.is_empty() {
        if !answers {
            errors.push(doc.error(&format!("{field}.route"), "needs at least one destination"));
        }
        return Vec::new();
    }
    let several = route.len() > 1;
    if several && route.iter().all(|r| r.weight.is_none()) {
        errors.push(doc.error(
            &format!("{field}.route"),
            "several destinations need weights",
        ));
    }
    let before = errors.len();
    let mut out = Vec::new();
    for (j, r) in route.iter().enumerate() {
        let field = format!("{field}.route[{j}]");
        let weight = match r.weight {
            None if several => 0,
            None => 100,
            Some(w @ 0..=100) => w as u32,
            Some(w) => {
                errors.push(doc.error(
                    &format!("{field}.weight"),
                    format!("weight {w} must be between 0 and 100"),
                ));
                0
            }
        };
        let d = destination(
            doc,
            &format!("{field}.destination"),
            &r.destination,
            weight,
            namespace,
            services,
            subsets,
            errors,
        );
        if let Some(mut d) = d {
            if let Some(h) = &r.headers {
                (d.request_headers, d.response_headers) =
                    h.edits(doc, &format!("{field}.headers"), errors);
            }
            out.push(d);
        }
    }
    let ok = errors.len() == before;
    if ok
        && several
        && out.iter().all(|d| d.weight == 0)
        && route.iter().any(|r| r.weight.is_some())
    {
        errors.push(doc.error(&format!("{field}.route"), "all weights are 0"));
    } else if ok && !several && route[0].weight == Some(0) {
        errors.push(doc.error(&format!("{field}.route[0].weight"), "all weights are 0"));
    }
    out
}

/// One Istio Destination (`field` is where it is written): its service, subset and port
/// checked against the mesh. `None` when it names no service (an error says why, or, without
/// a mesh, the host is not a service name).
#[allow(clippy::too_many_arguments)]
pub(super) fn destination(
    doc: &Doc,
    field: &str,
    d: &IstioDestination,
    weight: u32,
    namespace: &str,
    services: &Services,
    subsets: &Subsets,
    errors: &mut Vec<Diagnostic>,
) -> Option<Destination> {
    let key = match services.host(&d.host, namespace) {
        Ok(key) => key,
        Err(message) => {
            errors.push(doc.error(&format!("{field}.host"), message));
            None
        }
    };
    if let Some(port) = &d.port {
        let message = match &key {
            Some(k) => services.check_port(k, port.number),
            None if port.number == 0 || port.number > 65535 => {
                Some("port must be between 1 and 65535".to_string())
            }
            None => None,
        };
        if let Some(message) = message {
            errors.push(doc.error(&format!("{field}.port.number"), message));
        }
    }
    let mut labels = Labels::new();
    if let (Some(subset), Some(key)) = (&d.subset, &key) {
        match subsets.get(key).and_then(|(named, _)| named.get(subset)) {
            Some(l) => labels = l.clone(),
            None if services.checked() => errors.push(doc.error(
                &format!("{field}.subset"),
                format!("unknown subset {subset} of {key}"),
            )),
            None => {}
        }
    }
    key.map(|key| Destination {
        subset: d.subset.clone(),
        labels,
        ..Destination::service(key, weight)
    })
}
