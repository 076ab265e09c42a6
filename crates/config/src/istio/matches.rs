//! A VirtualService's `match[]` block as a [`RouteMatch`], and Istio's StringMatch as the
//! model's.

use super::virtual_service::{IstioStringMatch, MatchRequest};
use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::pattern;
use model::{HeaderMatch, PathMatch, QueryMatch, RouteMatch, StringMatch};

/// One `match[]` block, or `None` (with errors) if it cannot be honoured.
pub(super) fn translate_match(
    doc: &Doc,
    field: &str,
    m: &MatchRequest,
    errors: &mut Vec<Diagnostic>,
) -> Option<RouteMatch> {
    let before = errors.len();
    for name in m.unsupported() {
        errors.push(doc.error(
            &format!("{field}.{name}"),
            "matching on this is not yet supported",
        ));
    }
    let mut out = RouteMatch::default();
    if let Some(uri) = &m.uri {
        let f = format!("{field}.uri");
        out.path = match string_match(doc, &f, uri, false, errors) {
            Some(StringMatch::Exact(s)) => Some(PathMatch::Exact(s)),
            Some(StringMatch::Prefix(s)) => Some(PathMatch::Prefix(s)),
            Some(StringMatch::Regex(s)) => Some(PathMatch::Regex(s)),
            _ => None,
        };
    }
    if let Some(method) = &m.method {
        let f = format!("{field}.method");
        match method {
            IstioStringMatch {
                exact: Some(exact),
                prefix: None,
                regex: None,
            } => {
                if doc.check(&f, model::valid::method(exact), errors) {
                    out.method = Some(exact.clone());
                }
            }
            _ => errors.push(doc.error(&f, "only exact is supported for method")),
        }
    }
    for (headers, invert, key) in [
        (&m.headers, false, "headers"),
        (&m.without_headers, true, "withoutHeaders"),
    ] {
        for (name, value) in headers {
            let f = format!("{field}.{key}.{name}");
            let named = format!("{field}.{key}[{name}]");
            if !doc.check(&named, model::valid::header_name(name), errors) {
                continue;
            }
            if let Some(value) = string_match(doc, &f, value, true, errors) {
                out.headers.push(HeaderMatch {
                    name: name.to_ascii_lowercase(),
                    value,
                    invert,
                });
            }
        }
    }
    if let Some(scheme) = &m.scheme {
        out.scheme = string_match(doc, &format!("{field}.scheme"), scheme, false, errors);
    }
    if let Some(authority) = &m.authority {
        out.authority = string_match(doc, &format!("{field}.authority"), authority, false, errors);
    }
    if let Some(port) = m.port {
        match u16::try_from(port).ok().filter(|p| *p != 0) {
            Some(p) => out.port = Some(p),
            None => errors.push(doc.error(
                &format!("{field}.port"),
                format!("{port} is not a port number"),
            )),
        }
    }
    out.source_labels = m.source_labels.clone().into_iter().collect();
    out.source_namespace = m.source_namespace.clone();
    for (name, value) in &m.query_params {
        let f = format!("{field}.queryParams.{name}");
        if value.prefix.is_some() {
            errors.push(doc.error(
                &format!("{f}.prefix"),
                "Istio does not support prefix for queryParams; use exact or regex",
            ));
            continue;
        }
        if let Some(value) = string_match(doc, &f, value, true, errors) {
            out.query.push(QueryMatch {
                name: name.clone(),
                value,
            });
        }
    }
    (errors.len() == before).then_some(out)
}

/// An Istio StringMatch as the model's; `{}` is a presence test where `empty_is_present`.
pub(super) fn string_match(
    doc: &Doc,
    field: &str,
    m: &IstioStringMatch,
    empty_is_present: bool,
    errors: &mut Vec<Diagnostic>,
) -> Option<StringMatch> {
    match (&m.exact, &m.prefix, &m.regex) {
        (None, None, None) if empty_is_present => Some(StringMatch::Present),
        (None, None, None) => {
            errors.push(doc.error(field, "needs one of exact, prefix, regex"));
            None
        }
        (Some(s), None, None) => Some(StringMatch::Exact(s.clone())),
        (None, Some(s), None) => Some(StringMatch::Prefix(s.clone())),
        (None, None, Some(s)) => match pattern::error(s) {
            None => Some(StringMatch::Regex(s.clone())),
            Some(message) => {
                errors.push(doc.error(&format!("{field}.regex"), message));
                None
            }
        },
        _ => {
            errors.push(doc.error(field, "set only one of exact, prefix, regex"));
            None
        }
    }
}
