//! Istio RequestAuthentications: JWT rules (issuer, audiences, keys inline or by URL, where the
//! token is read from and what is forwarded), for each scope the policy applies to.

use super::super::{values, Ctx, Out};
use super::{scopes, strings, TargetRef, WorkloadSelector};
use crate::k8s::Object;
use crate::policy;
use model::security::{JwtRule, RequestAuthn};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RequestAuthenticationSpec {
    pub selector: Option<WorkloadSelector>,
    pub target_ref: Option<TargetRef>,
    pub target_refs: Option<Vec<TargetRef>>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct JwtRuleSpec {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks_uri: Option<String>,
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// A protobuf Duration: how long fetching `jwksUri` may take.
    pub timeout: Option<String>,
    pub failure_mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtHeader {
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimToHeader {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}

pub(crate) fn request_authentication(
    o: &Object<Option<RequestAuthenticationSpec>>,
    ctx: &Ctx,
    out: &mut Out,
) -> Vec<RequestAuthn> {
    let default = RequestAuthenticationSpec::default();
    let spec = o.spec.as_ref().unwrap_or(&default);
    let namespace = o.metadata.namespace();
    let scopes = scopes(
        ctx,
        namespace,
        &spec.selector,
        &spec.target_ref,
        &spec.target_refs,
        out,
    );
    let mut rules = Vec::new();
    for (i, r) in spec.jwt_rules.iter().enumerate() {
        let field = format!("spec.jwtRules[{i}]");
        if let Some(rule) = jwt_rule(&field, r, out) {
            if rules.iter().any(|x: &JwtRule| x.issuer == rule.issuer) {
                out.error(
                    &format!("{field}.issuer"),
                    format!("issuer `{}` has another rule in this policy", rule.issuer),
                );
            }
            rules.push(rule);
        }
    }
    let name = format!("{namespace}/{}", o.metadata.name);
    scopes
        .into_iter()
        .map(|scope| RequestAuthn {
            name: name.clone(),
            scope,
            rules: rules.clone(),
        })
        .collect()
}

fn jwt_rule(field: &str, r: &JwtRuleSpec, out: &mut Out) -> Option<JwtRule> {
    let before = out.errors.len();
    let f = |name: &str| format!("{field}.{name}");
    if r.issuer.is_empty() {
        out.error(&f("issuer"), "issuer must be set");
    }
    let jwks = r.jwks.clone().filter(|j| !j.is_empty());
    // Keys the proxy can verify tokens with, parsed as the proxy parses them.
    if let Some(Err(why)) = jwks.as_deref().map(model::valid::jwks) {
        out.error(&f("jwks"), why);
    }
    let jwks_uri = r.jwks_uri.clone().filter(|u| !u.is_empty());
    if let Some(uri) = &jwks_uri {
        let host = uri
            .strip_prefix("https://")
            .or_else(|| uri.strip_prefix("http://"))
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
        if host.is_none_or(str::is_empty) {
            out.error(
                &f("jwksUri"),
                format!("`{uri}` is not an http:// or https:// URL with a host"),
            );
        }
    }
    match (&jwks, &jwks_uri) {
        (Some(_), Some(_)) => out.note(
            &f("jwksUri"),
            "jwksUri is ignored when jwks is set, as in Istio",
        ),
        (None, None) if !r.issuer.is_empty() => out.note(
            &f("issuer"),
            format!(
                "neither jwks nor jwksUri is set, and finding the keys of `{}` by OpenID Connect \
                 discovery is not yet supported: its tokens will fail verification",
                r.issuer
            ),
        ),
        _ => {}
    }
    let mut from_headers = Vec::new();
    for (k, h) in r.from_headers.iter().enumerate() {
        if !values::is_header_name(&h.name) {
            out.error(
                &format!("{field}.fromHeaders[{k}].name"),
                format!("`{}` is not a header name", h.name),
            );
        }
        from_headers.push((h.name.to_ascii_lowercase(), h.prefix.clone()));
    }
    let from_params = strings(&f("fromParams"), &r.from_params, out);
    let from_cookies = strings(&f("fromCookies"), &r.from_cookies, out);
    let output_payload_to_header = r.output_payload_to_header.clone().filter(|h| !h.is_empty());
    if let Some(h) = &output_payload_to_header {
        if !values::is_header_name(h) {
            out.error(
                &f("outputPayloadToHeader"),
                format!("`{h}` is not a header name"),
            );
        }
    }
    let mut output_claim_to_headers: Vec<(String, String)> = Vec::new();
    for (k, c) in r.output_claim_to_headers.iter().enumerate() {
        let cf = format!("{field}.outputClaimToHeaders[{k}]");
        if !values::is_header_name(&c.header) {
            out.error(
                &format!("{cf}.header"),
                format!("`{}` is not a header name", c.header),
            );
        } else if output_claim_to_headers
            .iter()
            .any(|(h, _)| h.eq_ignore_ascii_case(&c.header))
        {
            out.error(
                &format!("{cf}.header"),
                format!("header `{}` is set by another claim", c.header),
            );
        }
        if c.claim.is_empty() {
            out.error(&format!("{cf}.claim"), "must not be empty");
        }
        output_claim_to_headers.push((c.header.to_ascii_lowercase(), c.claim.clone()));
    }
    let timeout_ms = match r.timeout.as_deref().map(policy::istio_duration) {
        Some(Ok(ms)) => ms,
        Some(Err(message)) => {
            out.error(&f("timeout"), message);
            None
        }
        None => None,
    };
    match r.failure_mode.as_deref() {
        None | Some("PERMISSIVE") => {}
        Some(mode @ ("IGNORE" | "STRICT")) => out.note(
            &f("failureMode"),
            format!(
                "failureMode {mode} is not yet supported; PERMISSIVE applies (a missing token \
                 passes, an invalid one is refused)"
            ),
        ),
        Some(other) => out.error(
            &f("failureMode"),
            format!("unknown failureMode `{other}`: PERMISSIVE, IGNORE or STRICT"),
        ),
    }
    let audiences = strings(&f("audiences"), &r.audiences, out);
    let rule = JwtRule {
        issuer: r.issuer.clone(),
        audiences,
        jwks,
        jwks_uri,
        from_headers,
        from_params,
        from_cookies,
        forward_original_token: r.forward_original_token,
        output_payload_to_header,
        output_claim_to_headers,
        timeout_ms,
    };
    if out.errors.len() == before {
        crate::valid::jwt_rule(out.doc, field, &rule, out.errors);
    }
    (out.errors.len() == before).then_some(rule)
}
