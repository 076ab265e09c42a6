//! RED metrics for the app's own requests (rate, errors, duration), by method, route and status
//! class, in a prometheus-client registry the app passes in, and the `/metrics` route serving
//! it in the OpenMetrics text format.
//!
//! The mesh's proxies already count every request at the edge of the app (Istio's
//! `istio_requests_total` and friends); these add what only the app knows: the route template
//! that matched (`/items/{id}`, not each id) and the time spent in the handler itself.
//!
//! Exported: `http_server_requests_total{method,route,status}`,
//! `http_server_request_duration_seconds{method,route,status}` (histogram) and
//! `http_server_requests_in_flight{method,route}`.

#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use axum::response::IntoResponse as _;
use axum::routing::get;
use axum::Router;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

/// Histogram buckets in seconds: 5 ms to 10 s, the span of a request an app serves.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// The route label of requests no route matched (so unknown paths don't each make a series).
pub const UNMATCHED: &str = "unmatched";
/// OpenMetrics' content type.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The method label: the standard methods, anything else as `OTHER`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum MethodLabel {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    PATCH,
    OPTIONS,
    CONNECT,
    TRACE,
    OTHER,
}

impl From<&Method> for MethodLabel {
    fn from(m: &Method) -> Self {
        match *m {
            Method::GET => MethodLabel::GET,
            Method::HEAD => MethodLabel::HEAD,
            Method::POST => MethodLabel::POST,
            Method::PUT => MethodLabel::PUT,
            Method::DELETE => MethodLabel::DELETE,
            Method::PATCH => MethodLabel::PATCH,
            Method::OPTIONS => MethodLabel::OPTIONS,
            Method::CONNECT => MethodLabel::CONNECT,
            Method::TRACE => MethodLabel::TRACE,
            _ => MethodLabel::OTHER,
        }
    }
}

/// The status label: the response's class, or `error` when the service failed with no response.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
    Error,
}

impl StatusClass {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::Error => "error",
        }
    }
}

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl From<http::StatusCode> for StatusClass {
    fn from(s: http::StatusCode) -> Self {
        match s.as_u16() {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: MethodLabel,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub method: MethodLabel,
    pub route: String,
    pub status: StatusClass,
}

/// The metrics, registered once; the layer shares them.
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<ResponseLabels, Counter>,
    duration: Family<ResponseLabels, Histogram>,
    in_flight: Family<RouteLabels, Gauge>,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(DURATION_BUCKETS.iter().copied())
            }),
            in_flight: Family::default(),
        };
        registry.register(
            "http_server_requests",
            "Requests served, by method, route and status class",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "http_server_request_duration",
            "Time from the request to the response head",
            prometheus_client::registry::Unit::Seconds,
            m.duration.clone(),
        );
        registry.register(
            "http_server_requests_in_flight",
            "Requests being served",
            m.in_flight.clone(),
        );
        m
    }

    /// The layer recording into these metrics.
    pub fn layer(&self) -> MetricsLayer {
        MetricsLayer {
            metrics: self.clone(),
        }
    }
}

/// Records every request it wraps. Add it with `Router::layer` so the matched route is known
/// (axum runs such a layer for a `fallback` the router sets, not for its implicit 404).
///
/// ```
/// use app::metrics::{self, Metrics};
/// use axum::{routing::get, Router};
/// use prometheus_client::registry::Registry;
/// use std::sync::Arc;
///
/// let mut registry = Registry::default();
/// let metrics = Metrics::new(&mut registry);
/// let app: Router = Router::new()
///     .route("/items/{id}", get(|| async { "item" }))
///     .layer(metrics.layer())
///     .merge(metrics::router(Arc::new(registry)));
/// ```
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Measured<S> {
        Measured {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Clone, Debug)]
pub struct Measured<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, RB> tower::Service<Request<B>> for Measured<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = match req.extensions().get::<MatchedPath>() {
            Some(m) => m.as_str(),
            None => UNMATCHED,
        };
        let labels = RouteLabels {
            method: req.method().into(),
            route: route.to_string(),
        };
        let in_flight = InFlight(self.metrics.in_flight.get_or_create(&labels).clone());
        in_flight.0.inc();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(req);
        Box::pin(async move {
            let result = response.await;
            drop(in_flight);
            let labels = ResponseLabels {
                method: labels.method,
                route: labels.route,
                status: match &result {
                    Ok(r) => r.status().into(),
                    Err(_) => StatusClass::Error,
                },
            };
            metrics.requests.get_or_create(&labels).inc();
            metrics
                .duration
                .get_or_create(&labels)
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// Decrements the gauge however the request ends (a dropped future included).
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /metrics`: `registry` in the OpenMetrics text format.
pub fn router<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || async move {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &registry) {
                Ok(()) => ([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], body).into_response(),
                Err(_) => http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }),
    )
}
