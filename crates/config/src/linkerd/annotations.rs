//! The annotations Linkerd reads on Services and HTTPRoutes — `retry.linkerd.io/*`,
//! `timeout.linkerd.io/*` and `balancer.linkerd.io/failure-accrual*` — read with their lines,
//! checked as Linkerd's policy controller checks them (`outbound/index.rs`, `index/http.rs`),
//! and applied to routes.
//!
//! What each becomes:
//! - `retry.linkerd.io/http` (`5xx`, `gateway-error`, `504`, `500-504`, comma-separated) →
//!   [`RetryOn`] `server_error`, `gateway_error`, `status_codes`;
//! - `retry.linkerd.io/grpc` (`cancelled`, `deadline-exceeded`, `internal`,
//!   `resource-exhausted`, `unavailable`) → `grpc_statuses` (Linkerd reads it on Services and
//!   GRPCRoutes, not on HTTPRoutes);
//! - `retry.linkerd.io/limit` (default 1; `0` also means 1, as in Linkerd) → `attempts`;
//! - `retry.linkerd.io/timeout` → `per_try_timeout_ms`;
//! - `timeout.linkerd.io/request` → the route's `timeout_ms`;
//! - `timeout.linkerd.io/response` (each backend attempt) → `per_try_timeout_ms` too, the
//!   shorter of the two when both are set;
//! - `timeout.linkerd.io/idle` → a notice (not yet supported);
//! - `balancer.linkerd.io/failure-accrual: consecutive` and its
//!   `-consecutive-{max-failures,min-penalty,max-penalty,jitter-ratio}` → [`FailureAccrual`].
//!
//! Durations are Linkerd's: a whole number and one unit (`ms`, `s`, `m`, `h`, `d`), or `0`.

use crate::diagnostic::Diagnostic;
use crate::doc::{Annotation, Doc};
use model::{FailureAccrual, HttpRoute, RetryOn, RetryPolicy};

const RETRY_HTTP: &str = "retry.linkerd.io/http";
const RETRY_GRPC: &str = "retry.linkerd.io/grpc";
const RETRY_LIMIT: &str = "retry.linkerd.io/limit";
const RETRY_TIMEOUT: &str = "retry.linkerd.io/timeout";
const TIMEOUT_REQUEST: &str = "timeout.linkerd.io/request";
const TIMEOUT_RESPONSE: &str = "timeout.linkerd.io/response";
const TIMEOUT_IDLE: &str = "timeout.linkerd.io/idle";
const ACCRUAL: &str = "balancer.linkerd.io/failure-accrual";
const MAX_FAILURES: &str = "balancer.linkerd.io/failure-accrual-consecutive-max-failures";
const MIN_PENALTY: &str = "balancer.linkerd.io/failure-accrual-consecutive-min-penalty";
const MAX_PENALTY: &str = "balancer.linkerd.io/failure-accrual-consecutive-max-penalty";
const JITTER: &str = "balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio";

/// Annotations under these prefixes are read (and unknown ones noticed, to catch typos).
const PREFIXES: [&str; 3] = [
    "retry.linkerd.io/",
    "timeout.linkerd.io/",
    "balancer.linkerd.io/",
];

/// Linkerd's retry limit when the annotations configure retries but leave the limit out.
const DEFAULT_RETRY_LIMIT: u32 = 1;

/// gRPC status names `retry.linkerd.io/grpc` accepts, with their codes.
const GRPC_STATUSES: [(&str, u32); 5] = [
    ("cancelled", 1),
    ("deadline-exceeded", 4),
    ("resource-exhausted", 8),
    ("internal", 13),
    ("unavailable", 14),
];

/// The Linkerd annotations of the object at `base` (`metadata` of a Kubernetes object, or
/// `spec.services[2]` of a Mesh document).
pub(crate) fn read(doc: &Doc, base: &str) -> Vec<Annotation> {
    doc.annotations(base)
        .into_iter()
        .filter(|a| PREFIXES.iter().any(|p| a.key.starts_with(p)))
        .collect()
}

/// Which kind of object the annotations are on: Linkerd reads some only on Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum On {
    Service,
    HttpRoute,
}

/// What the `retry.linkerd.io/*` annotations say.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Retry {
    pub limit: u32,
    pub timeout_ms: Option<u64>,
    pub on: RetryOn,
}

/// What one object's retry and timeout annotations say. Linkerd treats retries and timeouts as
/// two groups: an HTTPRoute's retry annotations replace all of its Service's, and its timeout
/// annotations all of its Service's.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Timing {
    pub request_ms: Option<u64>,
    pub response_ms: Option<u64>,
    /// Some when any retry annotation is set.
    pub retry: Option<Retry>,
    /// Any timeout annotation is set (even one that ends up ignored).
    pub sets_timeouts: bool,
}

fn shorter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Timing {
    /// Whether applying it changes a route.
    pub fn has_effect(&self) -> bool {
        self.request_ms.is_some() || self.response_ms.is_some() || self.retry.is_some()
    }

    /// An HTTPRoute's own annotations on one of its routes: each annotation replaces what the
    /// rule's own fields say (`timeouts.request`, `timeouts.backendRequest`, `retry`), as
    /// Linkerd lets `timeout.linkerd.io/request` win over `timeouts.request`.
    pub fn apply_own(&self, route: &mut HttpRoute) {
        if self.request_ms.is_some() {
            route.timeout_ms = self.request_ms;
        }
        if self.retry.is_none() && self.response_ms.is_none() {
            return;
        }
        let base = route.retry.take().unwrap_or_default();
        // The rule's backendRequest is the route's response timeout.
        let response = self.response_ms.or(base.per_try_timeout_ms);
        route.retry = Some(match &self.retry {
            Some(r) => RetryPolicy {
                attempts: r.limit,
                per_try_timeout_ms: shorter(r.timeout_ms, response),
                on: r.on.clone(),
            },
            None => RetryPolicy {
                per_try_timeout_ms: response,
                ..base
            },
        });
    }

    /// A Service's annotations as defaults of one of its routes: they fill in only what the
    /// route leaves unset — its request timeout, its retries (a route with only a per-attempt
    /// deadline gets the Service's retry conditions and limit), its per-attempt deadline — and
    /// nothing of a group (`own_retry`, `own_timeouts`) the route's HTTPRoute annotates itself.
    pub fn apply_default(&self, route: &mut HttpRoute, own_retry: bool, own_timeouts: bool) {
        if !own_timeouts && route.timeout_ms.is_none() {
            route.timeout_ms = self.request_ms;
        }
        let own_per_try = route.retry.as_ref().and_then(|r| r.per_try_timeout_ms);
        let mut retry_timeout = None;
        if let (false, Some(r)) = (own_retry, &self.retry) {
            match &mut route.retry {
                Some(p) if p.attempts > 0 => {}
                existing => {
                    let p = existing.get_or_insert_with(RetryPolicy::default);
                    p.attempts = r.limit;
                    p.on = r.on.clone();
                    retry_timeout = r.timeout_ms;
                }
            }
        }
        let response = if own_timeouts { None } else { self.response_ms };
        if let (None, Some(ms)) = (own_per_try, shorter(retry_timeout, response)) {
            route
                .retry
                .get_or_insert_with(RetryPolicy::default)
                .per_try_timeout_ms = Some(ms);
        }
    }
}

/// Reads the retry and timeout annotations of one object. `owner` (`service reviews.default`,
/// `HTTPRoute default/reviews`) starts every notice; errors (`annotation KEY: …`) are left for
/// the caller to attribute.
pub(crate) fn timing(
    annotations: &[Annotation],
    owner: &str,
    on: On,
    errors: &mut Vec<Diagnostic>,
    notices: &mut Vec<Diagnostic>,
) -> Timing {
    let mut t = Timing::default();
    let (mut limit, mut retry_timeout, mut retry_on, mut retries) = (None, None, None, false);
    for a in annotations {
        let mut error = |message: String| {
            errors.push(a.at.with_message(format!("annotation {}: {message}", a.key)))
        };
        let Some(value) = a.value.as_deref() else {
            if KNOWN.contains(&a.key.as_str()) {
                error("the value must be a string".into());
            }
            continue;
        };
        match a.key.as_str() {
            RETRY_HTTP => {
                retries = true;
                match http_conditions(value) {
                    Ok(c) => {
                        let on: &mut RetryOn = retry_on.get_or_insert_with(RetryOn::default);
                        on.server_error |= c.server_error;
                        on.gateway_error |= c.gateway_error;
                        on.status_codes.extend(c.status_codes);
                    }
                    Err(message) => error(message),
                }
            }
            RETRY_GRPC if on == On::HttpRoute => notices.push(a.at.with_message(format!(
                "{owner}: annotation {RETRY_GRPC} is read on Services and GRPCRoutes, not on \
                 HTTPRoutes; ignored"
            ))),
            RETRY_GRPC => {
                retries = true;
                match grpc_conditions(value) {
                    Ok(codes) => {
                        retry_on
                            .get_or_insert_with(RetryOn::default)
                            .grpc_statuses
                            .extend(codes);
                    }
                    Err(message) => error(message),
                }
            }
            RETRY_LIMIT => {
                retries = true;
                match value.trim().parse::<u16>() {
                    Ok(0) => notices.push(a.at.with_message(format!(
                        "{owner}: annotation {RETRY_LIMIT}: `0` means the default limit \
                         ({DEFAULT_RETRY_LIMIT}) to Linkerd, not \"no retries\"; remove the retry \
                         annotations to disable retries"
                    ))),
                    Ok(n) => limit = Some(u32::from(n)),
                    Err(_) => error(format!("`{value}` is not a number from 0 to 65535")),
                }
            }
            RETRY_TIMEOUT => {
                retries = true;
                match duration_ms(value) {
                    Ok(ms) => retry_timeout = (ms > 0).then_some(ms),
                    Err(message) => error(message),
                }
            }
            TIMEOUT_REQUEST | TIMEOUT_RESPONSE => {
                t.sets_timeouts = true;
                match duration_ms(value) {
                    Ok(ms) => {
                        let ms = (ms > 0).then_some(ms);
                        if a.key == TIMEOUT_REQUEST {
                            t.request_ms = ms;
                        } else {
                            t.response_ms = ms;
                        }
                    }
                    Err(message) => error(message),
                }
            }
            TIMEOUT_IDLE => {
                t.sets_timeouts = true;
                if let Err(message) = duration_ms(value) {
                    error(message);
                } else {
                    notices.push(a.at.with_message(format!(
                        "{owner}: annotation {TIMEOUT_IDLE} is not yet supported; ignored"
                    )));
                }
            }
            ACCRUAL | MAX_FAILURES | MIN_PENALTY | MAX_PENALTY | JITTER => {
                if on == On::HttpRoute {
                    notices.push(a.at.with_message(format!(
                        "{owner}: annotation {} is read on Services only; ignored",
                        a.key
                    )));
                }
            }
            _ => notices.push(a.at.with_message(format!(
                "{owner}: annotation {} is not one Linkerd reads; ignored",
                a.key
            ))),
        }
    }
    if retries {
        let mut on = retry_on.unwrap_or_default();
        on.status_codes.sort_unstable();
        on.status_codes.dedup();
        on.grpc_statuses.sort_unstable();
        on.grpc_statuses.dedup();
        t.retry = Some(Retry {
            limit: limit.unwrap_or(DEFAULT_RETRY_LIMIT),
            timeout_ms: retry_timeout,
            on,
        });
        if t.response_ms.is_some() {
            if let Some(a) = annotations.iter().find(|a| a.key == TIMEOUT_RESPONSE) {
                notices.push(a.at.with_message(format!(
                    "{owner}: annotation {TIMEOUT_RESPONSE}: with retries, weft retries an \
                     attempt that runs out of it (Linkerd does not)"
                )));
            }
        }
    }
    t
}

const KNOWN: [&str; 12] = [
    RETRY_HTTP,
    RETRY_GRPC,
    RETRY_LIMIT,
    RETRY_TIMEOUT,
    TIMEOUT_REQUEST,
    TIMEOUT_RESPONSE,
    TIMEOUT_IDLE,
    ACCRUAL,
    MAX_FAILURES,
    MIN_PENALTY,
    MAX_PENALTY,
    JITTER,
];

/// `retry.linkerd.io/http`.
fn http_conditions(value: &str) -> Result<RetryOn, String> {
    let code = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|c| (100..600).contains(c) && s.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut on = RetryOn::default();
    for cond in value.split(',').map(str::trim) {
        if cond.eq_ignore_ascii_case("5xx") {
            on.server_error = true;
        } else if cond.eq_ignore_ascii_case("gateway-error") {
            on.gateway_error = true;
        } else if let Some(c) = code(cond) {
            on.status_codes.push(c);
        } else {
            match cond.split_once('-').map(|(a, b)| (code(a), code(b))) {
                Some((Some(a), Some(b))) if a <= b => on.status_codes.extend(a..=b),
                _ => {
                    return Err(format!(
                        "`{cond}` is not a retry condition: use 5xx, gateway-error, a status code \
                         (504) or a range (500-504), separated by commas"
                    ))
                }
            }
        }
    }
    Ok(on)
}

/// `retry.linkerd.io/grpc`.
fn grpc_conditions(value: &str) -> Result<Vec<u32>, String> {
    value
        .split(',')
        .map(str::trim)
        .map(|cond| {
            GRPC_STATUSES
                .iter()
                .find(|(name, _)| cond.eq_ignore_ascii_case(name))
                .map(|(_, code)| *code)
                .ok_or_else(|| {
                    format!(
                        "`{cond}` is not a gRPC retry condition: use cancelled, \
                         deadline-exceeded, internal, resource-exhausted or unavailable, \
                         separated by commas"
                    )
                })
        })
        .collect()
}

/// A Linkerd annotation duration (`100ms`, `5s`, `1m`, `2h`, `1d`, or `0`) in milliseconds.
pub(crate) fn duration_ms(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad = || format!("`{text}` is not a duration like 100ms, 5s, 1m, 2h or 1d");
    let split = s.rfind(|c: char| c.is_ascii_digit()).ok_or_else(bad)? + 1;
    let (number, unit) = s.split_at(split);
    if !number.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "" if n == 0 => 0,
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_ms)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// `balancer.linkerd.io/failure-accrual` and its parameters, on a Service; errors as in
/// [`timing`].
pub(crate) fn failure_accrual(
    annotations: &[Annotation],
    owner: &str,
    errors: &mut Vec<Diagnostic>,
    notices: &mut Vec<Diagnostic>,
) -> Option<FailureAccrual> {
    let get = |key: &str| annotations.iter().find(|a| a.key == key);
    let params = [MAX_FAILURES, MIN_PENALTY, MAX_PENALTY, JITTER];
    let Some(mode) = get(ACCRUAL) else {
        for a in annotations
            .iter()
            .filter(|a| params.contains(&a.key.as_str()))
        {
            notices.push(a.at.with_message(format!(
                "{owner}: annotation {} does nothing without {ACCRUAL}: consecutive; ignored",
                a.key
            )));
        }
        return None;
    };
    let before = errors.len();
    let mut error = |a: &Annotation, message: String| {
        errors.push(a.at.with_message(format!("annotation {}: {message}", a.key)));
    };
    match mode.value.as_deref() {
        Some("consecutive") => {}
        Some(other) => {
            error(
                mode,
                format!("failure accrual `{other}` is not supported: use `consecutive`"),
            );
            return None;
        }
        None => return None,
    }
    let mut accrual = FailureAccrual::default();
    if let Some(a) = get(MAX_FAILURES) {
        match a.value.as_deref().map(|v| v.trim().parse::<u32>()) {
            Some(Ok(n)) if n > 0 => accrual.max_failures = n,
            _ => error(a, "must be a whole number from 1 to 4294967295".into()),
        }
    }
    for (key, slot) in [
        (MIN_PENALTY, &mut accrual.min_penalty_ms),
        (MAX_PENALTY, &mut accrual.max_penalty_ms),
    ] {
        if let Some(a) = get(key) {
            match a.value.as_deref().map(duration_ms) {
                Some(Ok(ms)) if ms > 0 => *slot = ms,
                Some(Ok(_)) => error(a, "the penalty must not be zero".into()),
                Some(Err(message)) => error(a, message),
                None => {}
            }
        }
    }
    if accrual.min_penalty_ms > accrual.max_penalty_ms {
        let a = get(MIN_PENALTY).or(get(MAX_PENALTY)).unwrap_or(mode);
        error(
            a,
            format!(
                "the min penalty ({}ms) is longer than the max penalty ({}ms)",
                accrual.min_penalty_ms, accrual.max_penalty_ms
            ),
        );
    }
    if let Some(a) = get(JITTER) {
        match a.value.as_deref().map(|v| v.trim().parse::<f64>()) {
            Some(Ok(j)) if (0.0..=100.0).contains(&j) => accrual.jitter_ratio = j,
            _ => error(a, "must be a number from 0.0 to 100.0".into()),
        }
    }
    (errors.len() == before).then_some(accrual)
}
