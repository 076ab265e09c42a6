//! Routing and the echo response: what was received, plus injected delay, status and failures.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::fetch::{self, Downstream};
use crate::{parse_duration, EchoOptions};

const X_ECHO_INSTANCE: HeaderName = HeaderName::from_static("x-echo-instance");

/// Shared by every connection of one server.
pub(crate) struct State {
    opts: EchoOptions,
    shutdown: CancellationToken,
    client: fetch::Client,
    instance_header: Option<HeaderValue>,
    fail_status: StatusCode,
    /// Attempts seen per `x-request-id`, for `?fail_times=N` (retries keep the request id).
    attempts: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

/// How many request ids `?fail_times` remembers before it starts over.
const MAX_TRACKED_ATTEMPTS: usize = 10_000;

impl State {
    pub(crate) fn new(opts: EchoOptions, shutdown: CancellationToken) -> Self {
        State {
            instance_header: HeaderValue::from_str(&opts.instance).ok(),
            attempts: Default::default(),
            fail_status: StatusCode::from_u16(opts.fail_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            client: fetch::client(),
            shutdown,
            opts,
        }
    }
}

/// The largest `/bytes/N` body.
pub const MAX_BYTES: usize = 16 << 20;
static BYTES: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();

/// The JSON every non-health endpoint answers with.
#[derive(Serialize)]
struct Echo<'a> {
    service: &'a str,
    version: &'a str,
    instance: &'a str,
    /// The process id, so tests and demos can tell replicas' restarts apart.
    pid: u32,
    method: &'a str,
    path: &'a str,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body_bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    downstream: Option<Downstream>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

enum Route {
    Echo,
    /// `/bytes/N`: N bytes of body (at most [`MAX_BYTES`]), for benchmarks of large answers.
    Bytes(usize),
    Status(StatusCode),
    Delay(Duration),
    Fetch,
    Healthz,
    Readyz,
}

/// What a request asks for, validated before anything is done.
struct Plan {
    route: Route,
    status: Option<StatusCode>,
    delay: Duration,
}

pub(crate) async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let query = parts
        .uri
        .query()
        .map(|q| joined(form_urlencoded::parse(q.as_bytes())))
        .unwrap_or_default();
    let headers = joined(parts.headers.iter().map(|(name, value)| {
        (
            Cow::Borrowed(name.as_str()),
            String::from_utf8_lossy(value.as_bytes()),
        )
    }));
    let mut echo = Echo {
        service: &state.opts.service,
        version: &state.opts.version,
        instance: &state.opts.instance,
        pid: std::process::id(),
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query,
        headers,
        body_bytes: 0,
        downstream: None,
        error: None,
    };
    match body.collect().await {
        Ok(collected) => echo.body_bytes = collected.to_bytes().len(),
        Err(e) => {
            echo.error = Some(format!("reading request body: {e}"));
            return json(state, StatusCode::BAD_REQUEST, &echo);
        }
    }
    let plan = match plan_for(echo.path, &echo.query) {
        Ok(plan) => plan,
        Err(e) => {
            echo.error = Some(e);
            return json(state, StatusCode::BAD_REQUEST, &echo);
        }
    };

    // Health endpoints only honour explicit query knobs, so probes stay meaningful.
    let health = matches!(plan.route, Route::Healthz | Route::Readyz);
    let mut wait = plan.delay;
    if !health {
        wait = wait.saturating_add(state.opts.delay);
    }
    if let Route::Delay(d) = plan.route {
        wait = wait.saturating_add(d);
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let failing =
        !health && state.opts.fail_rate > 0.0 && rand::random::<f64>() < state.opts.fail_rate;

    let mut status = StatusCode::OK;
    match plan.route {
        Route::Healthz => {
            return respond(
                state,
                plan.status.unwrap_or(StatusCode::OK),
                "text/plain",
                "ok\n",
            )
        }
        Route::Readyz => {
            let (ready, text) = if state.shutdown.is_cancelled() {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else {
                (StatusCode::OK, "ready\n")
            };
            return respond(state, plan.status.unwrap_or(ready), "text/plain", text);
        }
        Route::Status(code) => status = code,
        Route::Bytes(n) if !failing => {
            // One shared buffer: the answer costs the app no copy.
            let body = BYTES
                .get_or_init(|| Bytes::from(vec![b'x'; MAX_BYTES]))
                .slice(..n);
            return respond(
                state,
                plan.status.unwrap_or(StatusCode::OK),
                "application/octet-stream",
                body,
            );
        }
        Route::Bytes(_) => {}
        Route::Fetch if !failing => {
            let url = echo.query.get("url").map(String::as_str);
            match fetch::fetch(&state.client, state.opts.proxy, &parts.headers, url).await {
                Ok(downstream) => {
                    status =
                        StatusCode::from_u16(downstream.status).unwrap_or(StatusCode::BAD_GATEWAY);
                    echo.downstream = Some(downstream);
                }
                Err(e) => {
                    status = e.status();
                    echo.error = Some(e.to_string());
                }
            }
        }
        Route::Fetch | Route::Echo | Route::Delay(_) => {}
    }
    if let Some(explicit) = plan.status {
        status = explicit;
    }
    // `?fail_times=N`: the first N attempts of one request (same x-request-id) answer with
    // `?status=` (default 500), later ones succeed: what a retry policy is tested against.
    if let Some(n) = echo.query.get("fail_times") {
        let Ok(n) = n.parse::<u32>() else {
            echo.error = Some(format!("invalid fail_times {n:?}"));
            return json(state, StatusCode::BAD_REQUEST, &echo);
        };
        let id = echo
            .headers
            .get("x-request-id")
            .cloned()
            .unwrap_or_default();
        let seen = {
            let mut a = state.attempts.lock().unwrap_or_else(|e| e.into_inner());
            if a.len() >= MAX_TRACKED_ATTEMPTS {
                a.clear();
            }
            let c = a.entry(id).or_insert(0);
            *c += 1;
            *c - 1
        };
        status = if seen < n {
            plan.status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        } else {
            StatusCode::OK
        };
    }
    if failing {
        status = state.fail_status;
        echo.error = Some("injected failure".into());
    }
    json(state, status, &echo)
}

fn plan_for(path: &str, query: &BTreeMap<String, String>) -> Result<Plan, String> {
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let route = match (segments.next().unwrap_or(""), segments.next()) {
        ("healthz", None) => Route::Healthz,
        ("readyz", None) => Route::Readyz,
        ("fetch", None) => Route::Fetch,
        ("bytes", Some(n)) => Route::Bytes(
            n.parse::<usize>()
                .ok()
                .filter(|n| *n <= MAX_BYTES)
                .ok_or_else(|| format!("invalid size {n:?}: 0 to {MAX_BYTES} bytes"))?,
        ),
        ("status", Some(code)) => Route::Status(parse_status(code)?),
        ("delay", Some(ms)) => {
            Route::Delay(parse_duration(ms).ok_or_else(|| format!("invalid delay {ms:?}"))?)
        }
        _ => Route::Echo,
    };
    let status = query.get("status").map(|s| parse_status(s)).transpose()?;
    let delay = match query.get("delay") {
        Some(d) => parse_duration(d).ok_or_else(|| format!("invalid delay {d:?}"))?,
        None => Duration::ZERO,
    };
    Ok(Plan {
        route,
        status,
        delay,
    })
}

/// A status a server may send as its final answer.
fn parse_status(s: &str) -> Result<StatusCode, String> {
    s.parse::<u16>()
        .ok()
        .filter(|code| (200..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("invalid status {s:?}: expected 200..=599"))
}

/// Collects name/value pairs, joining repeated names with ", " as HTTP does.
fn joined<'a>(
    pairs: impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::<String, String>::new();
    for (name, value) in pairs {
        out.entry(name.into_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

fn json(state: &State, status: StatusCode, echo: &Echo) -> Response<Full<Bytes>> {
    // Serialising string maps and JSON values cannot fail; an empty body would do if it did.
    let mut body = serde_json::to_vec(echo).unwrap_or_default();
    body.push(b'\n');
    respond(state, status, "application/json", body)
}

fn respond(
    state: &State,
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(instance) = &state.instance_header {
        headers.insert(X_ECHO_INSTANCE, instance.clone());
    }
    resp
}
