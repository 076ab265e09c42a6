//! An HTTPRoute `matches[]` entry as a [`RouteMatch`]: the path (a `PathPrefix` matches whole
//! segments), the method, and the header and query-parameter matches, of which only the first of
//! equivalent names counts, as the Gateway API says.

use super::{Match, Method, NameValue, PathType, ValueType};
use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::pattern;
use model::{HeaderMatch, PathMatch, QueryMatch, RouteMatch, StringMatch};

/// One `matches[]` entry, or `None` (with errors) if it cannot be honoured.
pub(crate) fn translate_match(
    doc: &Doc,
    field: &str,
    m: &Match,
    errors: &mut Vec<Diagnostic>,
) -> Option<RouteMatch> {
    let before = errors.len();
    let (kind, value) = match &m.path {
        Some(p) => (p.kind, p.value.clone().unwrap_or_else(|| "/".into())),
        None => (PathType::PathPrefix, "/".into()),
    };
    let vfield = format!("{field}.path.value");
    let path = match kind {
        PathType::RegularExpression => {
            check_regex(doc, &vfield, &value, errors);
            PathMatch::Regex(value)
        }
        _ if !value.starts_with('/') => {
            errors.push(doc.error(&vfield, "a path must start with `/`"));
            PathMatch::Exact(value)
        }
        PathType::Exact => PathMatch::Exact(value),
        PathType::PathPrefix => PathMatch::SegmentPrefix(value),
    };
    let mut out = RouteMatch {
        path: Some(path),
        method: m.method.map(|m| m_name(m).to_string()),
        ..RouteMatch::default()
    };
    // Equivalent names after the first are not considered, as the Gateway API says.
    for (i, h) in m.headers.iter().enumerate() {
        let name = h.name.to_ascii_lowercase();
        if out.headers.iter().any(|x| x.name == name) {
            continue;
        }
        let f = format!("{field}.headers[{i}]");
        doc.check(
            &format!("{f}.name"),
            model::valid::header_name(&h.name),
            errors,
        );
        out.headers.push(HeaderMatch {
            value: value_match(doc, &f, h, errors),
            name,
            invert: false,
        });
    }
    for (i, q) in m.query_params.iter().enumerate() {
        if out.query.iter().any(|x| x.name == q.name) {
            continue;
        }
        let f = format!("{field}.queryParams[{i}]");
        out.query.push(QueryMatch {
            value: value_match(doc, &f, q, errors),
            name: q.name.clone(),
        });
    }
    (errors.len() == before).then_some(out)
}

fn m_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
    }
}

fn value_match(doc: &Doc, field: &str, v: &NameValue, errors: &mut Vec<Diagnostic>) -> StringMatch {
    if v.name.is_empty() {
        errors.push(doc.error(&format!("{field}.name"), "must not be empty"));
    }
    match v.kind {
        ValueType::Exact => StringMatch::Exact(v.value.clone()),
        ValueType::RegularExpression => {
            check_regex(doc, &format!("{field}.value"), &v.value, errors);
            StringMatch::Regex(v.value.clone())
        }
    }
}

fn check_regex(doc: &Doc, field: &str, re: &str, errors: &mut Vec<Diagnostic>) {
    if let Some(message) = pattern::error(re) {
        errors.push(doc.error(field, message));
    }
}
