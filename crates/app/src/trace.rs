//! OpenTelemetry tracing for the app: a server span per request, continuing the trace the request
//! carries (W3C `traceparent`/`tracestate`, else B3 multi-header `x-b3-*`, else B3 single `b3`),
//! and the span's context injected into the requests the SDK's client makes while serving it, so
//! a trace goes on through the app (the mesh's proxies add their own spans on each side).
//!
//! [`Otlp::from_env`] sets up export: to `OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP/HTTP protobuf, or
//! gRPC when `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`), and nothing at all when it is unset — the
//! layer then creates no span of its own and passes the incoming context on unchanged.

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use axum::extract::MatchedPath;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use opentelemetry::context::FutureExt as _;
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// Where spans go: unset means no export.
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `grpc` or `http/protobuf` (the default, as the OTLP exporter specification says).
pub const PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// The path OTLP/HTTP takes spans on, under the base endpoint.
pub const OTLP_HTTP_TRACES_PATH: &str = "/v1/traces";
/// The instrumentation scope of the layer's spans.
pub const SCOPE: &str = "weft-app";

const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// The context `h` carries: W3C first, then B3 multi-header, then B3 single-header; an empty
/// context when none parses. A B3 context that defers the sampling decision is taken as sampled
/// (the proxy in front of the app has normally decided already).
pub fn extract(h: &HeaderMap) -> Context {
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(h));
    if cx.span().span_context().is_valid() {
        return cx;
    }
    let get = |n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let multi = || {
        let sampled = match (get(&B3_FLAGS), get(&B3_SAMPLED)) {
            (Some("1"), _) => "1",
            (_, Some("0" | "false")) => "0",
            _ => "1",
        };
        b3_context(get(&B3_TRACE_ID)?, get(&B3_SPAN_ID)?, sampled)
    };
    let single = || {
        let mut parts = get(&B3)?.split('-');
        let (trace, span) = (parts.next()?, parts.next()?);
        b3_context(trace, span, parts.next().unwrap_or("1"))
    };
    match multi().or_else(single) {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    }
}

/// A B3 trace id is 16 or 32 hex digits (a 64-bit one is the low half), a span id 16.
fn b3_context(trace: &str, span: &str, sampled: &str) -> Option<SpanContext> {
    let hex = |s: &str, lens: &[usize]| {
        lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
    };
    if !hex(trace, &[16, 32]) || !hex(span, &[16]) {
        return None;
    }
    let flags = match sampled {
        "0" => TraceFlags::default(),
        _ => TraceFlags::SAMPLED,
    };
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let sc = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    sc.is_valid().then_some(sc)
}

/// Writes `cx`'s span context into `h` as `traceparent`/`tracestate`, and in the B3 forms `h`
/// already carries (copied from the incoming request), so the next hop sees this span as its
/// parent whichever format it reads. Nothing when `cx` has no valid span.
pub fn inject(cx: &Context, h: &mut HeaderMap) {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(h));
    let (trace, span) = (sc.trace_id().to_string(), sc.span_id().to_string());
    let sampled = if sc.is_sampled() { "1" } else { "0" };
    let value = |s: &str| HeaderValue::from_str(s).expect("hex digits are a valid header value");
    if h.contains_key(B3_TRACE_ID) {
        h.insert(B3_TRACE_ID, value(&trace));
        h.insert(B3_SPAN_ID, value(&span));
        h.remove(B3_PARENT_SPAN_ID);
        if h.get(B3_FLAGS).is_none_or(|v| v != "1") {
            h.insert(B3_SAMPLED, value(sampled));
        }
    }
    if h.contains_key(B3) {
        h.insert(B3, value(&format!("{trace}-{span}-{sampled}")));
    }
}

/// [`inject`] with the context of the running task (the server span while a request is served
/// under [`TraceLayer`]).
pub fn inject_current(h: &mut HeaderMap) {
    inject(&Context::current(), h);
}

/// A server span per request, named `METHOD route` (axum's matched route, else the method
/// alone), with the HTTP semantic-convention attributes; an error status on 5xx and on errors.
/// The span ends when the response head is ready.
///
/// ```
/// use app::trace::TraceLayer;
/// use axum::{routing::get, Router};
///
/// // After `Otlp::from_env` (the global tracer is bound when the layer is made).
/// let app: Router = Router::new()
///     .route("/items/{id}", get(|| async { "item" }))
///     .layer(TraceLayer::global());
/// ```
#[derive(Debug)]
pub struct TraceLayer<T = BoxedTracer> {
    tracer: std::sync::Arc<T>,
}

impl<T> Clone for TraceLayer<T> {
    fn clone(&self) -> Self {
        TraceLayer {
            tracer: self.tracer.clone(),
        }
    }
}

impl TraceLayer<BoxedTracer> {
    /// Spans from the global tracer provider (set by [`Otlp::start`]).
    pub fn global() -> Self {
        Self::new(global::tracer(SCOPE))
    }
}

impl<T> TraceLayer<T> {
    pub fn new(tracer: T) -> Self {
        TraceLayer {
            tracer: std::sync::Arc::new(tracer),
        }
    }
}

impl<S, T> tower::Layer<S> for TraceLayer<T> {
    type Service = Traced<S, T>;

    fn layer(&self, inner: S) -> Traced<S, T> {
        Traced {
            inner,
            tracer: self.tracer.clone(),
        }
    }
}

/// The service [`TraceLayer`] makes.
#[derive(Debug)]
pub struct Traced<S, T> {
    inner: S,
    tracer: std::sync::Arc<T>,
}

impl<S: Clone, T> Clone for Traced<S, T> {
    fn clone(&self) -> Self {
        Traced {
            inner: self.inner.clone(),
            tracer: self.tracer.clone(),
        }
    }
}

impl<S, T, B, RB> tower::Service<Request<B>> for Traced<S, T>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    T: Tracer,
    T::Span: Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let parent = extract(req.headers());
        let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
        let method = req.method().as_str();
        let name = match route {
            Some(r) => format!("{method} {r}"),
            None => method.to_string(),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("url.path", req.uri().path().to_string()),
        ];
        if let Some(r) = route {
            attributes.push(KeyValue::new("http.route", r.to_string()));
        }
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&*self.tracer, &parent);
        let cx = parent.with_span(span);
        let response = self.inner.call(req).with_context(cx.clone());
        Box::pin(async move {
            let result = response.await;
            let span = cx.span();
            match &result {
                Ok(r) => {
                    let status = r.status();
                    span.set_attribute(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status.as_u16()),
                    ));
                    if status.is_server_error() {
                        span.set_status(Status::error(status.as_str().to_string()));
                    }
                }
                Err(_) => span.set_status(Status::error("service error")),
            }
            span.end();
            result
        })
    }
}

/// Errors setting up export.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{PROTOCOL_ENV}={0:?}: expected grpc or http/protobuf")]
    Protocol(String),
    #[error("OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// How spans are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// OTLP export of the app's spans, installed as the global tracer provider. Keep it for the
/// life of the app and [`Otlp::shutdown`] it at exit so the last spans are sent.
///
/// ```no_run
/// # async fn run() -> Result<(), app::trace::TraceError> {
/// let otlp = app::trace::Otlp::from_env("orders")?; // None when OTEL_EXPORTER_OTLP_ENDPOINT is unset
/// // ... serve with TraceLayer::global() ...
/// if let Some(otlp) = otlp {
///     otlp.shutdown().await;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Otlp {
    provider: SdkTracerProvider,
}

impl Otlp {
    /// Export to `OTEL_EXPORTER_OTLP_ENDPOINT` if set, else `None` (tracing off). The service
    /// name is `OTEL_SERVICE_NAME`, else `WEFT_SERVICE` (set by the mesh), else `service`.
    /// Call it inside the tokio runtime, before building any [`TraceLayer::global`].
    pub fn from_env(service: &str) -> Result<Option<Otlp>, TraceError> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        let Some(endpoint) = var(ENDPOINT_ENV) else {
            return Ok(None);
        };
        let protocol = match var(PROTOCOL_ENV).as_deref() {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => return Err(TraceError::Protocol(other.to_string())),
        };
        let service = var("OTEL_SERVICE_NAME")
            .or_else(|| var("WEFT_SERVICE"))
            .unwrap_or_else(|| service.to_string());
        Otlp::start(&endpoint, protocol, &service).map(Some)
    }

    /// Export to `endpoint` (a base URL: OTLP/HTTP appends `/v1/traces`).
    pub fn start(endpoint: &str, protocol: Protocol, service: &str) -> Result<Otlp, TraceError> {
        let builder = opentelemetry_otlp::SpanExporter::builder();
        let exporter = match protocol {
            Protocol::Grpc => builder.with_tonic().with_endpoint(endpoint).build(),
            Protocol::HttpProtobuf => builder
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(
                    opentelemetry_http::hyper::HyperClient::with_default_connector(
                        EXPORT_TIMEOUT,
                        None,
                    ),
                )
                .with_endpoint(format!(
                    "{}{OTLP_HTTP_TRACES_PATH}",
                    endpoint.trim_end_matches('/')
                ))
                .build(),
        }
        .map_err(|source| TraceError::Exporter {
            endpoint: endpoint.to_string(),
            source,
        })?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter, Tokio).build())
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_string())
                    .build(),
            )
            .build();
        global::set_tracer_provider(provider.clone());
        Ok(Otlp { provider })
    }

    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Sends the spans still queued and stops exporting.
    pub async fn shutdown(self) {
        // The SDK blocks this thread until the export task, on this runtime, is done.
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::debug!(error = %e, "tracer shutdown");
        }
    }
}

/// How long one export may take (the OTLP default is 10 s; an app shutting down should not wait
/// that long for a collector that is gone).
pub const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
