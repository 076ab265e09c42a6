//! Linkerd `ServiceProfile` (`linkerd.io/v1alpha2`): its serde shape and its translation into
//! routes — request conditions into disjunctive normal form, response classes into status
//! ranges, `dstOverrides` weights from Kubernetes quantities — and into a retry budget.
//!
//! The translation follows what Linkerd's destination controller (`profile_translator.go`) and
//! proxy (`service-profiles/src/proto.rs`) do with a profile, not only what its CRD allows.

use crate::diagnostic::Diagnostic;
use crate::doc::Doc;
use crate::{pattern, policy};
use model::names::CLUSTER_DOMAIN;
use model::{
    Authority, PathMatch, ResponseClass, RetryBudget, RetryOn, RetryPolicy, RouteMatch, ServiceKey,
};
use serde::Deserialize;
use serde_yaml_ng::Value;

/// Retries per request for a route with `isRetryable: true`. Linkerd's legacy retries have no
/// per-request count: a failed request is retried as long as the service's retry budget allows.
/// weft's retries need a count, so this one is high enough that the budget stays what limits
/// retries, and equals the budget's default floor (`minRetriesPerSecond: 10`), so one failing
/// request on an idle service can spend at most what the budget grants per second.
pub(crate) const RETRYABLE_ATTEMPTS: u32 = 10;

/// Beyond this many any-of alternatives, a condition is kept as nested negations instead
/// (`A and B` = none of [none of A, none of B]), so a hostile profile cannot blow up.
const MAX_ALTERNATIVES: usize = 64;

/// The status codes a response class can match (`http::StatusCode` accepts 100–999; a
/// `not` complements within this).
const ANY_STATUS: (u16, u16) = (100, 999);

/// The status codes a `status` range may name (Linkerd's `ValidateResponseMatch`).
const STATUS_RANGE: std::ops::RangeInclusive<i64> = 100..=599;

/// The retry budget's `ttl` bounds: Linkerd's proxy drops a budget (and so every retry) whose
/// ttl is outside them.
const TTL_MIN_MS: u64 = 1_000;
const TTL_MAX_MS: u64 = 60_000;

/// `spec` of a ServiceProfile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ProfileSpec {
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    pub retry_budget: Option<RetryBudgetSpec>,
    #[serde(default)]
    pub dst_overrides: Vec<WeightedDst>,
    /// Ports the proxy should not detect a protocol on; not yet supported (a notice).
    pub opaque_ports: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RouteSpec {
    pub name: String,
    pub condition: Option<RequestCondition>,
    #[serde(default)]
    pub response_classes: Vec<ResponseClassSpec>,
    #[serde(default)]
    pub is_retryable: bool,
    /// A Go duration (`300ms`, `1.5s`, `1m`); `0` means none.
    pub timeout: Option<String>,
}

/// Every field set must hold; an empty string counts as unset, as in Linkerd.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RequestCondition {
    pub all: Option<Vec<RequestCondition>>,
    pub any: Option<Vec<RequestCondition>>,
    pub not: Option<Box<RequestCondition>>,
    pub path_regex: Option<String>,
    pub method: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ResponseClassSpec {
    pub condition: Option<ResponseCondition>,
    #[serde(default)]
    pub is_failure: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResponseCondition {
    pub all: Option<Vec<ResponseCondition>>,
    pub any: Option<Vec<ResponseCondition>>,
    pub not: Option<Box<ResponseCondition>>,
    pub status: Option<StatusRange>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusRange {
    pub min: Option<i64>,
    pub max: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RetryBudgetSpec {
    /// Missing fields are zero, as Go reads them.
    pub retry_ratio: Option<f64>,
    pub min_retries_per_second: Option<i64>,
    pub ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WeightedDst {
    pub authority: String,
    /// A Kubernetes quantity: `1`, `100`, `500m`, `0.5`.
    pub weight: Value,
}

/// The service a profile named `NAME.NAMESPACE.svc.cluster.local` is for; Linkerd looks
/// profiles up by that exact name.
pub(crate) fn profile_service(name: &str) -> Option<ServiceKey> {
    let rest = name.strip_suffix(CLUSTER_DOMAIN)?.strip_suffix(".svc.")?;
    let (service, namespace) = rest.split_once('.')?;
    let label = |s: &str| !s.is_empty() && !s.contains('.');
    (label(service) && label(namespace)).then(|| ServiceKey::new(service, namespace))
}

/// A route's `condition` as any-of alternatives (each all-of), or `None` after reporting its
/// errors. An empty result matches no request.
pub(crate) fn condition(
    doc: &Doc,
    field: &str,
    c: &RequestCondition,
    errors: &mut Vec<Diagnostic>,
) -> Option<Vec<RouteMatch>> {
    let before = errors.len();
    let dnf = to_dnf(doc, field, c, errors);
    (errors.len() == before).then_some(dnf)
}

fn to_dnf(
    doc: &Doc,
    field: &str,
    c: &RequestCondition,
    errors: &mut Vec<Diagnostic>,
) -> Vec<RouteMatch> {
    let set = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
    let (method, path) = (set(&c.method), set(&c.path_regex));
    if method.is_none() && path.is_none() && c.all.is_none() && c.any.is_none() && c.not.is_none() {
        errors.push(doc.error(
            field,
            "a condition needs at least one of method, pathRegex, all, any or not",
        ));
        return Vec::new();
    }
    // Every request, narrowed by each field set.
    let mut out = vec![RouteMatch::default()];
    if let Some(m) = method {
        doc.check(&format!("{field}.method"), model::valid::method(&m), errors);
        out = and(
            out,
            vec![RouteMatch {
                method: Some(m),
                ..RouteMatch::default()
            }],
        );
    }
    if let Some(p) = path {
        let re = linkerd_path_regex(&p);
        if let Some(message) = pattern::error(&format!("^(?:{re})$")) {
            errors.push(doc.error(&format!("{field}.pathRegex"), message));
        }
        out = and(
            out,
            vec![RouteMatch {
                path: Some(PathMatch::Regex(re)),
                ..RouteMatch::default()
            }],
        );
    }
    for (i, child) in c.all.iter().flatten().enumerate() {
        let child = to_dnf(doc, &format!("{field}.all[{i}]"), child, errors);
        out = and(out, child);
    }
    if let Some(any) = &c.any {
        let mut alternatives = Vec::new();
        for (i, child) in any.iter().enumerate() {
            for m in to_dnf(doc, &format!("{field}.any[{i}]"), child, errors) {
                if !alternatives.contains(&m) {
                    alternatives.push(m);
                }
            }
        }
        out = and(out, compact(alternatives));
    }
    if let Some(not) = &c.not {
        let inner = to_dnf(doc, &format!("{field}.not"), not, errors);
        out = and(out, negate(inner));
    }
    out
}

/// `none of alternatives`, as any-of alternatives.
fn negate(alternatives: Vec<RouteMatch>) -> Vec<RouteMatch> {
    if alternatives.is_empty() {
        // Not "nothing": everything.
        vec![RouteMatch::default()]
    } else if alternatives.contains(&RouteMatch::default()) {
        // Not "everything": nothing.
        Vec::new()
    } else {
        vec![RouteMatch {
            negated: alternatives,
            ..RouteMatch::default()
        }]
    }
}

/// Too many alternatives become one match: none of [none of them].
fn compact(alternatives: Vec<RouteMatch>) -> Vec<RouteMatch> {
    if alternatives.len() <= MAX_ALTERNATIVES {
        return alternatives;
    }
    vec![RouteMatch {
        negated: vec![RouteMatch {
            negated: alternatives,
            ..RouteMatch::default()
        }],
        ..RouteMatch::default()
    }]
}

/// `a and b`: every pair of alternatives that can hold together.
fn and(a: Vec<RouteMatch>, b: Vec<RouteMatch>) -> Vec<RouteMatch> {
    if a.len().saturating_mul(b.len()) > MAX_ALTERNATIVES {
        let not = |d| RouteMatch {
            negated: d,
            ..RouteMatch::default()
        };
        return vec![RouteMatch {
            negated: vec![not(a), not(b)],
            ..RouteMatch::default()
        }];
    }
    let mut out = Vec::new();
    for x in &a {
        for y in &b {
            if let Some(m) = both(x, y) {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// One match holding when `x` and `y` both do; `None` if they cannot (two methods).
fn both(x: &RouteMatch, y: &RouteMatch) -> Option<RouteMatch> {
    let mut m = x.clone();
    match (&m.method, &y.method) {
        (Some(a), Some(b)) if a != b => return None,
        (None, Some(b)) => m.method = Some(b.clone()),
        _ => {}
    }
    match (&m.path, &y.path) {
        (None, Some(p)) => m.path = Some(p.clone()),
        // A match holds one path: the second is kept as "not (not path)".
        (Some(a), Some(b)) if a != b => {
            let only_path = RouteMatch {
                path: Some(b.clone()),
                ..RouteMatch::default()
            };
            m.negated.push(RouteMatch {
                negated: vec![only_path],
                ..RouteMatch::default()
            });
        }
        _ => {}
    }
    for n in &y.negated {
        if !m.negated.contains(n) {
            m.negated.push(n.clone());
        }
    }
    // "Not everything" never holds.
    (!m.negated.contains(&RouteMatch::default())).then_some(m)
}

/// `pathRegex` as weft's proxy matches it (against the whole path) with Linkerd's meaning.
/// Linkerd trims the regex, adds `^` unless it starts with one and `$` unless it ends with one,
/// then searches the path for it. So `/books/\d+` means the whole path, but `/a|/b` means
/// "starts with /a or ends with /b" and `^/api` means "starts with /api". A regex whose
/// anchors plainly bracket it (no `|`) is kept as Linkerd anchors it; any other is wrapped in
/// `.*( )` so that a whole-path match is Linkerd's search.
pub(crate) fn linkerd_path_regex(regex: &str) -> String {
    let r = regex.trim();
    let anchored = format!(
        "{}{r}{}",
        if r.starts_with('^') { "" } else { "^" },
        if r.ends_with('$') { "" } else { "$" }
    );
    // The final `$` is an anchor unless an odd number of backslashes escapes it.
    let body = &anchored[..anchored.len() - 1];
    let escaped = (body.len() - body.trim_end_matches('\\').len()) % 2 == 1;
    if !anchored.contains('|') && !escaped {
        anchored
    } else {
        format!("(?s:.*)(?:{anchored})(?s:.*)")
    }
}

/// A route's `responseClasses` as status ranges, first match deciding; `None` after errors.
pub(crate) fn response_classes(
    doc: &Doc,
    field: &str,
    classes: &[ResponseClassSpec],
    errors: &mut Vec<Diagnostic>,
) -> Vec<ResponseClass> {
    let mut out = Vec::new();
    for (i, class) in classes.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let Some(c) = &class.condition else {
            errors.push(doc.error(&field, "a response class needs a condition"));
            continue;
        };
        let before = errors.len();
        let set = statuses(doc, &format!("{field}.condition"), c, errors);
        if errors.len() != before {
            continue;
        }
        out.extend(set.into_iter().map(|(min, max)| ResponseClass {
            min,
            max,
            is_failure: class.is_failure,
        }));
    }
    out
}

/// Sorted, disjoint, inclusive status ranges.
type Statuses = Vec<(u16, u16)>;

/// The statuses a response condition matches (every field set must hold).
fn statuses(
    doc: &Doc,
    field: &str,
    c: &ResponseCondition,
    errors: &mut Vec<Diagnostic>,
) -> Statuses {
    let mut parts: Vec<Statuses> = Vec::new();
    if let Some(r) = &c.status {
        let mut bound = |name: &str, v: Option<i64>| match v {
            Some(v) if STATUS_RANGE.contains(&v) => Some(v as u16),
            Some(v) => {
                errors.push(doc.error(
                    &format!("{field}.status.{name}"),
                    format!("status {name} {v} must be between 100 and 599"),
                ));
                None
            }
            None => {
                errors.push(doc.error(
                    &format!("{field}.status"),
                    format!(
                        "status needs a {name} (Linkerd's proxy ignores a response class \
                         without one)"
                    ),
                ));
                None
            }
        };
        let (min, max) = (bound("min", r.min), bound("max", r.max));
        match (min, max) {
            (Some(min), Some(max)) if min > max => errors.push(doc.error(
                &format!("{field}.status"),
                format!("status min {min} is greater than max {max}"),
            )),
            (Some(min), Some(max)) => parts.push(vec![(min, max)]),
            _ => {}
        }
    }
    for (name, list) in [("all", &c.all), ("any", &c.any)] {
        let Some(list) = list else { continue };
        if list.is_empty() {
            errors.push(doc.error(
                &format!("{field}.{name}"),
                format!("{name} must not be empty"),
            ));
            continue;
        }
        let sets: Vec<Statuses> = list
            .iter()
            .enumerate()
            .map(|(i, child)| statuses(doc, &format!("{field}.{name}[{i}]"), child, errors))
            .collect();
        parts.push(if name == "all" {
            sets.into_iter()
                .reduce(|a, b| intersect(&a, &b))
                .unwrap_or_default()
        } else {
            union(sets.concat())
        });
    }
    if let Some(not) = &c.not {
        parts.push(complement(&statuses(
            doc,
            &format!("{field}.not"),
            not,
            errors,
        )));
    }
    if c.status.is_none() && c.all.is_none() && c.any.is_none() && c.not.is_none() {
        errors.push(doc.error(
            field,
            "a response condition needs at least one of status, all, any or not",
        ));
    }
    parts
        .into_iter()
        .reduce(|a, b| intersect(&a, &b))
        .unwrap_or_default()
}

fn union(mut ranges: Statuses) -> Statuses {
    ranges.sort_unstable();
    let mut out: Statuses = Vec::new();
    for (min, max) in ranges {
        match out.last_mut() {
            Some(last) if min <= last.1.saturating_add(1) => last.1 = last.1.max(max),
            _ => out.push((min, max)),
        }
    }
    out
}

fn intersect(a: &Statuses, b: &Statuses) -> Statuses {
    let mut out = Vec::new();
    for &(a0, a1) in a {
        for &(b0, b1) in b {
            let (min, max) = (a0.max(b0), a1.min(b1));
            if min <= max {
                out.push((min, max));
            }
        }
    }
    union(out)
}

fn complement(set: &Statuses) -> Statuses {
    let mut out = Vec::new();
    let mut next = ANY_STATUS.0;
    for &(min, max) in set {
        if min > next {
            out.push((next, min - 1));
        }
        next = next.max(max.saturating_add(1));
    }
    if next <= ANY_STATUS.1 {
        out.push((next, ANY_STATUS.1));
    }
    out
}

/// What `isRetryable: true` means: retry what the route's response classes call a failure,
/// within the service's retry budget.
pub(crate) fn retryable() -> RetryPolicy {
    RetryPolicy {
        attempts: RETRYABLE_ATTEMPTS,
        per_try_timeout_ms: None,
        on: RetryOn {
            failure_class: true,
            ..RetryOn::default()
        },
    }
}

/// A route's `timeout` (a Go duration) in milliseconds; `None` for `0`.
pub(crate) fn go_duration(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("`{text}` is negative"));
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t == "0" {
        return Ok(None);
    }
    policy::istio_duration(t)
}

/// `retryBudget`, checked as Linkerd's proxy checks it.
pub(crate) fn retry_budget(
    doc: &Doc,
    b: &RetryBudgetSpec,
    errors: &mut Vec<Diagnostic>,
) -> Option<RetryBudget> {
    let field = "spec.retryBudget";
    let before = errors.len();
    let ratio = b.retry_ratio.unwrap_or(0.0);
    if !(0.0..=1000.0).contains(&ratio) {
        errors.push(doc.error(
            &format!("{field}.retryRatio"),
            format!("retryRatio {ratio} must be between 0 and 1000"),
        ));
    }
    let min = b.min_retries_per_second.unwrap_or(0);
    let min_per_second = match u32::try_from(min) {
        Ok(m) if i32::try_from(m).is_ok() => m,
        _ => {
            errors.push(doc.error(
                &format!("{field}.minRetriesPerSecond"),
                format!(
                    "minRetriesPerSecond {min} must be between 0 and {}",
                    i32::MAX
                ),
            ));
            0
        }
    };
    let ttl_ms = match b.ttl.as_deref().map(go_duration) {
        None => {
            errors.push(doc.error(field, "missing field `ttl`"));
            0
        }
        Some(Ok(ms)) => match ms.unwrap_or(0) {
            ms @ TTL_MIN_MS..=TTL_MAX_MS => ms,
            _ => {
                errors.push(doc.error(
                    &format!("{field}.ttl"),
                    "ttl must be between 1s and 60s (Linkerd's proxy drops the budget, and so \
                     every retry, otherwise)",
                ));
                0
            }
        },
        Some(Err(message)) => {
            errors.push(doc.error(&format!("{field}.ttl"), message));
            0
        }
    };
    (errors.len() == before).then_some(RetryBudget {
        ratio: ratio as f32,
        min_per_second,
        ttl_ms,
    })
}

/// A `dstOverrides[]` authority: the service it names (a bare name is in `namespace`) and the
/// port it gives, if any.
pub(crate) fn authority(text: &str, namespace: &str) -> Option<(ServiceKey, Option<u16>)> {
    let a = Authority::parse(text.trim());
    Some((a.service_key(namespace)?, a.port))
}

/// A `dstOverrides[]` weight in thousandths (Kubernetes `Quantity.MilliValue()`; Linkerd sends
/// ten times that, which keeps the same proportions).
pub(crate) fn weight(v: &Value) -> Result<u32, String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let shown = || {
        serde_yaml_ng::to_string(v)
            .unwrap_or_default()
            .trim_end()
            .to_string()
    };
    let milli = quantity_milli(&text).ok_or_else(|| {
        format!(
            "weight `{}` is not a non-negative Kubernetes quantity like 1, 100, 500m or 0.5",
            shown()
        )
    })?;
    u32::try_from(milli).map_err(|_| format!("weight `{}` is too large", shown()))
}

/// A Kubernetes quantity (`1`, `500m`, `0.5`, `1k`, `1Ki`, `1e3`) in thousandths, rounded up as
/// `MilliValue()` rounds; `None` if it is not one or is negative.
pub(crate) fn quantity_milli(text: &str) -> Option<u64> {
    let rest = text.strip_prefix('+').unwrap_or(text);
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let mantissa: u128 = if digits.is_empty() {
        0
    } else if digits.len() > 36 {
        return None;
    } else {
        digits.parse().ok()?
    };
    let (pow10, pow2): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        s => {
            let e = s.strip_prefix(['e', 'E'])?;
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) || e.len() > 4 {
                return None;
            }
            (e.parse().ok()?, 0)
        }
    };
    let scaled = mantissa.checked_mul(1u128 << pow2)?;
    // Thousandths, less the fraction's digits.
    let exp = pow10 + 3 - frac.len() as i64;
    let milli = if exp >= 0 {
        scaled.checked_mul(10u128.checked_pow(u32::try_from(exp).ok()?)?)?
    } else {
        match 10u128.checked_pow(u32::try_from(-exp).ok()?) {
            Some(d) => scaled.div_ceil(d),
            // Smaller than any thousandth: rounds up to one, unless zero.
            None => u128::from(scaled > 0),
        }
    };
    u64::try_from(milli).ok()
}
