//! What an Istio VirtualService `http[]` rule does besides choosing destinations: `rewrite`
//! (with `uriRegexRewrite`), `redirect`, `directResponse`, `mirror` / `mirrors`, `corsPolicy` and
//! `headers` (also per destination), as serde shapes and their translation into the model's
//! route filters.

use super::matches::string_match;
use super::virtual_service::{per_million, IstioDestination, IstioStringMatch, Percent};
use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::{pattern, policy};
use model::{Cors, DirectResponse, HeaderEdits, PathRewrite, Redirect, StringMatch};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::BTreeMap;

/// Istio's redirect status when `redirectCode` is absent.
const DEFAULT_REDIRECT_CODE: u32 = 301;

/// The redirect statuses Envoy can answer with.
const REDIRECT_CODES: [u32; 5] = [301, 302, 303, 307, 308];

/// HTTPRewrite. `uri` after a prefix match replaces the matched prefix, otherwise the whole path.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HttpRewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// RegexRewrite: RE2 `match` replaced by `rewrite` (`\1` for groups).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegexRewrite {
    #[serde(rename = "match")]
    pub pattern: String,
    pub rewrite: String,
}

/// HTTPRedirect. `uri` replaces the whole path, whatever the match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HttpRedirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub port: Option<i64>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    pub derive_port: Option<String>,
    pub scheme: Option<String>,
    pub redirect_code: Option<i64>,
}

/// HTTPDirectResponse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpDirectResponse {
    pub status: i64,
    pub body: Option<HttpBody>,
}

/// HTTPBody: `string`, or base64 `bytes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpBody {
    pub string: Option<String>,
    pub bytes: Option<String>,
}

/// HTTPMirrorPolicy (`mirrors[]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MirrorPolicy {
    pub destination: IstioDestination,
    pub percentage: Option<Percent>,
}

/// CorsPolicy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CorsPolicy {
    #[serde(default)]
    pub allow_origins: Vec<IstioStringMatch>,
    /// Deprecated: exact origins; used only when `allowOrigins` is empty, as Istio does.
    #[serde(default)]
    pub allow_origin: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    pub max_age: Option<String>,
    pub allow_credentials: Option<bool>,
    /// Newer Istio: what to do with preflights whose origin does not match; not implemented.
    pub unmatched_preflights: Option<Value>,
}

/// Headers: edits of the request sent upstream and of the response returned.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Headers {
    pub request: Option<HeaderOperations>,
    pub response: Option<HeaderOperations>,
}

/// Headers.HeaderOperations. Values may be any scalar (`test: true`); they are read as text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderOperations {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl Headers {
    /// (request edits, response edits) of the `headers` at `field`, header names lowercase;
    /// names and values the proxy could not build headers from are errors.
    pub fn edits(
        &self,
        doc: &Doc,
        field: &str,
        errors: &mut Vec<Diagnostic>,
    ) -> (HeaderEdits, HeaderEdits) {
        let mut edits = |ops: &Option<HeaderOperations>, which: &str| match ops {
            None => HeaderEdits::default(),
            Some(ops) => {
                let field = format!("{field}.{which}");
                HeaderEdits {
                    set: lower(doc, &format!("{field}.set"), &ops.set, errors),
                    add: lower(doc, &format!("{field}.add"), &ops.add, errors),
                    remove: ops
                        .remove
                        .iter()
                        .enumerate()
                        .map(|(i, n)| {
                            let f = format!("{field}.remove[{i}]");
                            doc.check(&f, model::valid::header_name(n), errors);
                            n.to_ascii_lowercase()
                        })
                        .collect(),
                }
            }
        };
        (
            edits(&self.request, "request"),
            edits(&self.response, "response"),
        )
    }
}

/// A `set` or `add` map at `field` as (lowercase name, value) pairs, each checked.
fn lower(
    doc: &Doc,
    field: &str,
    map: &BTreeMap<String, String>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            let f = format!("{field}[{k}]");
            if doc.check(&f, model::valid::header_name(k), errors) {
                doc.check(&f, model::valid::header_value(v), errors);
            }
            (k.to_ascii_lowercase(), v.clone())
        })
        .collect()
}

/// `rewrite.uri` / `uriRegexRewrite` and `rewrite.authority`; `uri` is returned as written,
/// since whether it replaces a prefix or the whole path depends on each match.
pub(crate) fn rewrite(
    doc: &Doc,
    field: &str,
    r: &HttpRewrite,
    errors: &mut Vec<Diagnostic>,
) -> (Option<String>, Option<PathRewrite>, Option<String>) {
    let regex = r.uri_regex_rewrite.as_ref().and_then(|re| {
        if r.uri.is_some() {
            errors.push(doc.error(
                &format!("{field}.uriRegexRewrite"),
                "set only one of uri and uriRegexRewrite",
            ));
            return None;
        }
        match pattern::error(&re.pattern) {
            None => Some(PathRewrite::Regex {
                pattern: re.pattern.clone(),
                substitution: re.rewrite.clone(),
            }),
            Some(message) => {
                errors.push(doc.error(&format!("{field}.uriRegexRewrite.match"), message));
                None
            }
        }
    });
    // An empty `uri` drops a matched prefix; whether it may (or replaces the whole path) the
    // rule's matches decide, and the route's check says.
    if let Some(uri) = r.uri.as_deref().filter(|u| !u.is_empty()) {
        doc.check(&format!("{field}.uri"), model::valid::uri_path(uri), errors);
    }
    if let Some(a) = &r.authority {
        doc.check(
            &format!("{field}.authority"),
            model::valid::authority(a),
            errors,
        );
    }
    (r.uri.clone(), regex, r.authority.clone())
}

/// A `redirect`, with Istio's default code 301.
pub(crate) fn redirect(
    doc: &Doc,
    field: &str,
    r: &HttpRedirect,
    errors: &mut Vec<Diagnostic>,
) -> Redirect {
    let scheme = r.scheme.as_ref().map(|s| s.to_ascii_lowercase());
    if let Some(s) = &scheme {
        if s != "http" && s != "https" {
            errors.push(doc.error(
                &format!("{field}.scheme"),
                format!("scheme `{s}` must be http or https"),
            ));
        }
    }
    let mut port = match r.port.map(u16::try_from) {
        None => None,
        Some(Ok(p)) if p > 0 => Some(p),
        Some(_) => {
            errors.push(doc.error(&format!("{field}.port"), "port must be between 1 and 65535"));
            None
        }
    };
    match r.derive_port.as_deref() {
        _ if r.derive_port.is_some() && r.port.is_some() => errors.push(doc.error(
            &format!("{field}.derivePort"),
            "set only one of port and derivePort",
        )),
        None | Some("FROM_REQUEST_PORT") => {}
        // The scheme's own port; without a scheme the request's scheme decides, so the request's
        // port is kept (the `notices` say so).
        Some("FROM_PROTOCOL_DEFAULT") => {
            port = match scheme.as_deref() {
                Some("http") => Some(80),
                Some("https") => Some(443),
                _ => None,
            }
        }
        Some(other) => errors.push(doc.error(
            &format!("{field}.derivePort"),
            format!("derivePort `{other}` must be FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
        )),
    }
    let status = match r.redirect_code {
        None => DEFAULT_REDIRECT_CODE,
        Some(c) => match u32::try_from(c) {
            Ok(c) if REDIRECT_CODES.contains(&c) => c,
            _ => {
                errors.push(doc.error(
                    &format!("{field}.redirectCode"),
                    format!("redirectCode {c} must be one of 301, 302, 303, 307, 308"),
                ));
                DEFAULT_REDIRECT_CODE
            }
        },
    };
    if let Some(uri) = &r.uri {
        doc.check(&format!("{field}.uri"), model::valid::uri_path(uri), errors);
    }
    if let Some(a) = &r.authority {
        doc.check(
            &format!("{field}.authority"),
            model::valid::authority(a),
            errors,
        );
    }
    Redirect {
        scheme,
        host: r.authority.clone(),
        port,
        path: r.uri.clone().map(PathRewrite::Full),
        // One of REDIRECT_CODES.
        status: status as u16,
    }
}

/// A `directResponse`.
pub(crate) fn direct_response(
    doc: &Doc,
    field: &str,
    d: &HttpDirectResponse,
    errors: &mut Vec<Diagnostic>,
) -> DirectResponse {
    let status = match u16::try_from(d.status) {
        Ok(s) if (200..=599).contains(&s) => s,
        _ => {
            errors.push(doc.error(
                &format!("{field}.status"),
                format!("status {} must be between 200 and 599", d.status),
            ));
            500
        }
    };
    let body = match &d.body {
        None => String::new(),
        Some(HttpBody {
            string: Some(s),
            bytes: None,
        }) => s.clone(),
        Some(HttpBody {
            string: None,
            bytes: Some(b),
        }) => match base64_text(b) {
            Some(text) => text,
            None => {
                errors.push(doc.error(
                    &format!("{field}.body.bytes"),
                    "bytes must be base64 of UTF-8 text (weft's bodies are text)",
                ));
                String::new()
            }
        },
        Some(_) => {
            errors.push(doc.error(
                &format!("{field}.body"),
                "set exactly one of string and bytes",
            ));
            String::new()
        }
    };
    DirectResponse { status, body }
}

/// Standard base64 (with or without padding) decoded to UTF-8 text.
fn base64_text(text: &str) -> Option<String> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A mirror's share in millionths: `percentage.value` (0–100), else the deprecated integer
/// `percent`, else all requests. `fields` names the two as the rule spells them.
pub(crate) fn mirror_share(
    doc: &Doc,
    fields: (&str, &str),
    percentage: Option<&Percent>,
    percent: Option<i64>,
    errors: &mut Vec<Diagnostic>,
) -> u32 {
    if percentage.is_none() && percent.is_none() {
        return 1_000_000;
    }
    match per_million(percentage, percent) {
        Ok(share) => share,
        Err((name, message)) => {
            let field = if name == "percent" {
                fields.1
            } else {
                fields.0
            };
            errors.push(doc.error(field, message));
            0
        }
    }
}

/// A `corsPolicy`.
pub(crate) fn cors(doc: &Doc, field: &str, c: &CorsPolicy, errors: &mut Vec<Diagnostic>) -> Cors {
    let allow_origins = if c.allow_origins.is_empty() {
        c.allow_origin
            .iter()
            .map(|o| StringMatch::Exact(o.clone()))
            .collect()
    } else {
        c.allow_origins
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                string_match(doc, &format!("{field}.allowOrigins[{i}]"), m, false, errors)
            })
            .collect()
    };
    // Istio passes whole seconds on (`0s` included: no caching of preflights).
    let max_age_s = match c.max_age.as_deref().map(policy::istio_duration) {
        None => None,
        Some(Ok(ms)) => Some(ms.unwrap_or(0) / 1000),
        Some(Err(message)) => {
            errors.push(doc.error(&format!("{field}.maxAge"), message));
            None
        }
    };
    Cors {
        allow_origins,
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age_s,
        allow_credentials: c.allow_credentials.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::base64_text;

    #[test]
    fn base64_bodies() {
        assert_eq!(base64_text("aGVsbG8=").as_deref(), Some("hello"));
        assert_eq!(base64_text("aGVsbG8").as_deref(), Some("hello"));
        assert_eq!(base64_text("").as_deref(), Some(""));
        assert_eq!(base64_text("e30=").as_deref(), Some("{}"));
        assert_eq!(base64_text("a$"), None);
        assert_eq!(base64_text("/w=="), None);
    }
}
