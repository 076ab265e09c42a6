//! Gateway API HTTPRoute filters (`rules[].filters` and `rules[].backendRefs[].filters`)
//! translated into the model's route filters (their serde shape is in `http_route::filters`).
//!
//! `RequestHeaderModifier`, `ResponseHeaderModifier` (header names case-insensitive, kept
//! lowercase), `RequestRedirect` (status 302 unless said otherwise, as the Gateway API
//! defaults), `URLRewrite`, `RequestMirror` (100% unless `percent` or `fraction` says less) and
//! `CORS` are implemented on rules; on a backendRef only the two header modifiers are.
//! `ExtensionRef` and `ExternalAuth` cannot be skipped safely (the spec says so), so a rule
//! using them is an error.

use super::service_backend;
use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::http_route::filters::{
    CorsFilter, Filter, HeaderFilter, MirrorFilter, PathModifier, RedirectFilter,
};
use crate::services::Services;
use model::{Cors, Destination, HeaderEdits, Mirror, PathRewrite, Redirect, Rewrite, StringMatch};

/// The Gateway API's redirect status when `statusCode` is absent (not Istio's 301).
const DEFAULT_REDIRECT_STATUS: i64 = 302;

/// HTTPCORSFilter's `maxAge` when absent, in seconds.
const DEFAULT_CORS_MAX_AGE_S: u64 = 5;

/// What a rule's filters do to its routes.
#[derive(Debug, Default)]
pub(crate) struct RuleFilters {
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    pub rewrite: Option<Rewrite>,
    pub redirect: Option<Redirect>,
    pub mirrors: Vec<Mirror>,
    pub cors: Option<Cors>,
    /// A `ReplacePrefixMatch` path modifier is used: every match must be a `PathPrefix`.
    pub replaces_prefix: bool,
}

/// The filter's own field, by `type`; an error when it is missing or another one is set.
fn check_type(doc: &Doc, field: &str, f: &Filter, errors: &mut Vec<Diagnostic>) -> bool {
    let set = [
        (
            "RequestHeaderModifier",
            "requestHeaderModifier",
            f.request_header_modifier.is_some(),
        ),
        (
            "ResponseHeaderModifier",
            "responseHeaderModifier",
            f.response_header_modifier.is_some(),
        ),
        ("RequestMirror", "requestMirror", f.request_mirror.is_some()),
        (
            "RequestRedirect",
            "requestRedirect",
            f.request_redirect.is_some(),
        ),
        ("URLRewrite", "urlRewrite", f.url_rewrite.is_some()),
        ("CORS", "cors", f.cors.is_some()),
        ("ExtensionRef", "extensionRef", f.extension_ref.is_some()),
        ("ExternalAuth", "externalAuth", f.external_auth.is_some()),
    ];
    let before = errors.len();
    match set.iter().find(|(kind, ..)| *kind == f.kind) {
        None => errors.push(doc.error(
            &format!("{field}.type"),
            format!(
                "unknown filter type `{}`: use RequestHeaderModifier, ResponseHeaderModifier, \
                 RequestRedirect, URLRewrite, RequestMirror or CORS",
                f.kind
            ),
        )),
        Some((kind, name, false)) => {
            errors.push(doc.error(field, format!("a {kind} filter needs `{name}`")))
        }
        Some(_) => {}
    }
    for (kind, name, present) in set {
        if present && kind != f.kind {
            errors.push(doc.error(
                &format!("{field}.{name}"),
                format!("`{name}` belongs to a {kind} filter, not {}", f.kind),
            ));
        }
    }
    errors.len() == before
}

/// A header filter as edits, names lowercase. Two actions on one header name are invalid.
fn header_edits(
    doc: &Doc,
    field: &str,
    h: &HeaderFilter,
    errors: &mut Vec<Diagnostic>,
) -> HeaderEdits {
    let mut seen: Vec<String> = Vec::new();
    let mut once = |name: &str, f: String, errors: &mut Vec<Diagnostic>| {
        let lower = name.to_ascii_lowercase();
        if name.is_empty() {
            errors.push(doc.error(&f, "a header name must not be empty"));
        } else if seen.contains(&lower) {
            errors.push(doc.error(
                &f,
                format!("header {lower} has more than one action in this filter"),
            ));
        } else if doc.check(&f, model::valid::header_name(name), errors) {
            seen.push(lower.clone());
        }
        lower
    };
    let mut edits = HeaderEdits::default();
    for (i, x) in h.set.iter().enumerate() {
        let name = once(&x.name, format!("{field}.set[{i}].name"), errors);
        let f = format!("{field}.set[{i}].value");
        doc.check(&f, model::valid::header_value(&x.value), errors);
        edits.set.push((name, x.value.clone()));
    }
    for (i, x) in h.add.iter().enumerate() {
        let name = once(&x.name, format!("{field}.add[{i}].name"), errors);
        let f = format!("{field}.add[{i}].value");
        doc.check(&f, model::valid::header_value(&x.value), errors);
        edits.add.push((name, x.value.clone()));
    }
    for (i, x) in h.remove.iter().enumerate() {
        let name = once(x, format!("{field}.remove[{i}]"), errors);
        edits.remove.push(name);
    }
    edits
}

fn path_modifier(
    doc: &Doc,
    field: &str,
    p: &PathModifier,
    errors: &mut Vec<Diagnostic>,
) -> Option<PathRewrite> {
    let path = match (
        p.kind.as_str(),
        &p.replace_full_path,
        &p.replace_prefix_match,
    ) {
        ("ReplaceFullPath", Some(full), None) => PathRewrite::Full(full.clone()),
        ("ReplacePrefixMatch", None, Some(prefix)) => PathRewrite::Prefix(prefix.clone()),
        ("ReplaceFullPath", _, _) => {
            errors.push(doc.error(field, "type ReplaceFullPath needs replaceFullPath only"));
            return None;
        }
        ("ReplacePrefixMatch", _, _) => {
            errors.push(doc.error(
                field,
                "type ReplacePrefixMatch needs replacePrefixMatch only",
            ));
            return None;
        }
        (other, ..) => {
            errors.push(doc.error(
                &format!("{field}.type"),
                format!(
                    "unknown path modifier `{other}`: use ReplaceFullPath or ReplacePrefixMatch"
                ),
            ));
            return None;
        }
    };
    let value = match &path {
        PathRewrite::Full(v) | PathRewrite::Prefix(v) => v,
        PathRewrite::Regex { .. } => unreachable!("not a Gateway API modifier"),
    };
    // An empty ReplacePrefixMatch is allowed (it strips the prefix).
    if !value.is_empty() && !value.starts_with('/') {
        errors.push(doc.error(field, format!("path `{value}` must start with `/`")));
    } else if !value.is_empty() {
        let name = match &path {
            PathRewrite::Full(_) => "replaceFullPath",
            _ => "replacePrefixMatch",
        };
        let f = format!("{field}.{name}");
        doc.check(&f, model::valid::uri_path(value), errors);
    }
    Some(path)
}

/// A rule's `filters`. `namespace` is the HTTPRoute's (for mirror backends).
pub(crate) fn rule_filters(
    doc: &Doc,
    field: &str,
    filters: &[Filter],
    namespace: &str,
    services: &Services,
    errors: &mut Vec<Diagnostic>,
) -> RuleFilters {
    let mut out = RuleFilters::default();
    // Each kind at most once, except RequestMirror (and ExtensionRef), as the spec allows.
    let mut seen: Vec<&str> = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let field = format!("{field}.filters[{i}]");
        if !check_type(doc, &field, f, errors) {
            continue;
        }
        if f.kind != "RequestMirror" && f.kind != "ExtensionRef" {
            if seen.contains(&f.kind.as_str()) {
                errors.push(doc.error(
                    &format!("{field}.type"),
                    format!("a rule may have one {} filter", f.kind),
                ));
                continue;
            }
            seen.push(&f.kind);
        }
        if let Some(h) = &f.request_header_modifier {
            let f = format!("{field}.requestHeaderModifier");
            out.request_headers = header_edits(doc, &f, h, errors);
        }
        if let Some(h) = &f.response_header_modifier {
            let f = format!("{field}.responseHeaderModifier");
            out.response_headers = header_edits(doc, &f, h, errors);
        }
        if let Some(r) = &f.request_redirect {
            out.redirect = Some(redirect(
                doc,
                &format!("{field}.requestRedirect"),
                r,
                errors,
            ));
            out.replaces_prefix |= is_prefix(&r.path);
        }
        if let Some(r) = &f.url_rewrite {
            let f = format!("{field}.urlRewrite");
            let path = r
                .path
                .as_ref()
                .and_then(|p| path_modifier(doc, &format!("{f}.path"), p, errors));
            out.replaces_prefix |= is_prefix(&r.path);
            if let Some(h) = &r.hostname {
                let f = format!("{f}.hostname");
                doc.check(&f, model::valid::authority(h), errors);
            }
            out.rewrite = Some(Rewrite {
                path,
                authority: r.hostname.clone(),
            });
        }
        if let Some(m) = &f.request_mirror {
            let f = format!("{field}.requestMirror");
            if let Some(mirror) = mirror(doc, &f, m, namespace, services, errors) {
                out.mirrors.push(mirror);
            }
        }
        if let Some(c) = &f.cors {
            out.cors = Some(cors(doc, &format!("{field}.cors"), c, errors));
        }
        if f.extension_ref.is_some() || f.external_auth.is_some() {
            errors.push(doc.error(
                &format!("{field}.type"),
                format!(
                    "{} filters are not supported, and a rule cannot go without one it names",
                    f.kind
                ),
            ));
        }
    }
    if out.redirect.is_some() && out.rewrite.is_some() {
        errors.push(doc.error(
            &format!("{field}.filters"),
            "a rule cannot have both RequestRedirect and URLRewrite",
        ));
    }
    out
}

fn is_prefix(p: &Option<PathModifier>) -> bool {
    p.as_ref().is_some_and(|p| p.kind == "ReplacePrefixMatch")
}

/// A backendRef's `filters`: only the header modifiers, as (request, response) edits.
pub(crate) fn backend_filters(
    doc: &Doc,
    field: &str,
    filters: &[Filter],
    errors: &mut Vec<Diagnostic>,
) -> (HeaderEdits, HeaderEdits) {
    let (mut request, mut response) = (HeaderEdits::default(), HeaderEdits::default());
    let mut seen: Vec<&str> = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        let field = format!("{field}.filters[{i}]");
        if !check_type(doc, &field, f, errors) {
            continue;
        }
        if seen.contains(&f.kind.as_str()) {
            errors.push(doc.error(
                &format!("{field}.type"),
                format!("a backendRef may have one {} filter", f.kind),
            ));
            continue;
        }
        seen.push(&f.kind);
        match (&f.request_header_modifier, &f.response_header_modifier) {
            (Some(h), _) => {
                let f = format!("{field}.requestHeaderModifier");
                request = header_edits(doc, &f, h, errors);
            }
            (_, Some(h)) => {
                let f = format!("{field}.responseHeaderModifier");
                response = header_edits(doc, &f, h, errors);
            }
            _ => errors.push(doc.error(
                &format!("{field}.type"),
                format!(
                    "{} filters on a backendRef are not supported: only RequestHeaderModifier \
                     and ResponseHeaderModifier (put the filter on the rule)",
                    f.kind
                ),
            )),
        }
    }
    (request, response)
}

fn redirect(doc: &Doc, field: &str, r: &RedirectFilter, errors: &mut Vec<Diagnostic>) -> Redirect {
    let scheme = r.scheme.clone();
    if let Some(s) = &scheme {
        if s != "http" && s != "https" {
            errors.push(doc.error(
                &format!("{field}.scheme"),
                format!("scheme `{s}` must be http or https"),
            ));
        }
    }
    let port = match r.port {
        Some(p) => match u16::try_from(p) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                errors.push(doc.error(
                    &format!("{field}.port"),
                    format!("port {p} must be between 1 and 65535"),
                ));
                None
            }
        },
        // With a scheme, its well-known port (left out of `Location` by the proxy); without,
        // the port the request came in on.
        None => match scheme.as_deref() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => None,
        },
    };
    let code = r.status_code.unwrap_or(DEFAULT_REDIRECT_STATUS);
    let status = match code {
        301 | 302 | 303 | 307 | 308 => code as u16,
        _ => {
            errors.push(doc.error(
                &format!("{field}.statusCode"),
                format!("statusCode {code} must be one of 301, 302, 303, 307, 308"),
            ));
            DEFAULT_REDIRECT_STATUS as u16
        }
    };
    let path = r
        .path
        .as_ref()
        .and_then(|p| path_modifier(doc, &format!("{field}.path"), p, errors));
    if let Some(h) = &r.hostname {
        let f = format!("{field}.hostname");
        doc.check(&f, model::valid::authority(h), errors);
    }
    Redirect {
        scheme,
        host: r.hostname.clone(),
        port,
        path,
        status,
    }
}

fn mirror(
    doc: &Doc,
    field: &str,
    m: &MirrorFilter,
    namespace: &str,
    services: &Services,
    errors: &mut Vec<Diagnostic>,
) -> Option<Mirror> {
    let per_million = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => {
            errors.push(doc.error(field, "set only one of percent and fraction"));
            0
        }
        (Some(p @ 0..=100), None) => p as u32 * 10_000,
        (Some(p), None) => {
            errors.push(doc.error(
                &format!("{field}.percent"),
                format!("percent {p} must be between 0 and 100"),
            ));
            0
        }
        (None, Some(f)) => {
            let denominator = f.denominator.unwrap_or(100);
            if denominator < 1 || f.numerator < 0 || f.numerator > denominator {
                errors.push(doc.error(
                    &format!("{field}.fraction"),
                    format!(
                        "fraction {}/{denominator} must have 0 <= numerator <= denominator and \
                         denominator >= 1",
                        f.numerator
                    ),
                ));
                0
            } else {
                // At most 1e6 since numerator <= denominator.
                (f.numerator as u128 * 1_000_000 / denominator as u128) as u32
            }
        }
        (None, None) => 1_000_000,
    };
    let b = &m.backend_ref;
    let f = format!("{field}.backendRef");
    if let Err(message) = service_backend(b.group.as_deref(), b.kind.as_deref()) {
        errors.push(doc.error(&f, message));
        return None;
    }
    let ns = b.namespace.as_deref().unwrap_or(namespace);
    let key = match services.named(&b.name, ns, "mirror backend") {
        Ok(key) => key,
        Err(message) => {
            errors.push(doc.error(&format!("{f}.name"), message));
            return None;
        }
    };
    if let Some(message) = b.port.and_then(|n| services.check_port(&key, n)) {
        errors.push(doc.error(&format!("{f}.port"), message));
    }
    Some(Mirror {
        destination: Destination::service(key, 1),
        per_million,
    })
}

/// An origin pattern: `*` alone is any origin; a `*` elsewhere stands for any characters
/// (greedy to the left, spanning DNS labels).
fn origin(pattern: &str) -> StringMatch {
    if pattern == "*" || !pattern.contains('*') {
        return StringMatch::Exact(pattern.to_string());
    }
    let parts: Vec<String> = pattern.split('*').map(regex::escape).collect();
    StringMatch::Regex(parts.join(".*"))
}

fn cors(doc: &Doc, field: &str, c: &CorsFilter, errors: &mut Vec<Diagnostic>) -> Cors {
    let max_age_s = match c.max_age {
        None => DEFAULT_CORS_MAX_AGE_S,
        Some(s) if s >= 1 => s as u64,
        Some(s) => {
            errors.push(doc.error(
                &format!("{field}.maxAge"),
                format!("maxAge {s} must be 1 or more"),
            ));
            DEFAULT_CORS_MAX_AGE_S
        }
    };
    Cors {
        allow_origins: c.allow_origins.iter().map(|o| origin(o)).collect(),
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age_s: Some(max_age_s),
        allow_credentials: c.allow_credentials.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins() {
        assert_eq!(origin("*"), StringMatch::Exact("*".into()));
        assert_eq!(
            origin("https://app.example"),
            StringMatch::Exact("https://app.example".into())
        );
        let StringMatch::Regex(re) = origin("https://*.example.com") else {
            panic!()
        };
        let re = regex::Regex::new(&format!("^(?:{re})$")).unwrap();
        assert!(re.is_match("https://a.b.example.com"));
        assert!(!re.is_match("https://example.com"));
        assert!(!re.is_match("http://a.example.com"));
    }
}
