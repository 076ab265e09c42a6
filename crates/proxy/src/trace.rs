//! Distributed tracing: the proxy continues the trace a request carries (W3C `traceparent` /
//! `tracestate` first, then B3 multi-header, then B3 single-header), starts one span per request
//! and side as its child (or a new root, sampled at the configured rate), forwards the new
//! context with the request, and exports the span over OTLP (gRPC or HTTP/protobuf) when the
//! response is done, with the OpenTelemetry HTTP semantic-convention attributes.
//!
//! Off (no endpoint configured) a proxy has no [`Tracer`] and a request pays nothing: no
//! header is parsed, no span object exists. On, the data path builds the span and hands the
//! finished one to the SDK's batch processor with a non-blocking `try_send` (a full queue drops
//! spans); batching runs on the processor's own thread and the network I/O of the export on the
//! proxy's control runtime, never on a data-plane worker.

#[cfg(test)]
mod tests;

use crate::settings::{OtlpProtocol, Tracing};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Version};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, ShouldSample,
    SpanData, SpanExporter,
};
use opentelemetry_sdk::Resource;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long one export may take before it is abandoned (the OTLP default is 10 s; a proxy that
/// is shutting down should not wait that long for a collector that is gone).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Finished spans queued for export; beyond that they are dropped (the SDK's default).
pub const MAX_QUEUED_SPANS: usize = 2048;
/// The path an OTLP/HTTP collector receives spans on, appended to a base endpoint.
pub const OTLP_HTTP_TRACES_PATH: &str = "/v1/traces";

// OpenTelemetry semantic conventions for HTTP spans (stable, v1.26+).
const HTTP_REQUEST_METHOD: &str = "http.request.method";
const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
const URL_PATH: &str = "url.path";
const URL_QUERY: &str = "url.query";
const URL_SCHEME: &str = "url.scheme";
const URL_FULL: &str = "url.full";
const SERVER_ADDRESS: &str = "server.address";
const SERVER_PORT: &str = "server.port";
const CLIENT_ADDRESS: &str = "client.address";
const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
const USER_AGENT_ORIGINAL: &str = "user_agent.original";
const ERROR_TYPE: &str = "error.type";
// weft's own.
/// `inbound` or `outbound` (the ingress gateway's spans are outbound, of kind SERVER).
pub const WEFT_DIRECTION: &str = "weft.direction";
/// The replica that served the request (an endpoint's instance; the sidecar's own on inbound).
pub const WEFT_UPSTREAM_INSTANCE: &str = "weft.upstream.instance";
/// The upstream's address (a peer sidecar's inbound listener; the app on inbound).
pub const WEFT_UPSTREAM_ADDRESS: &str = "weft.upstream.address";
/// Envoy-style response flags (`UF`, `NR`…) when the proxy answered itself.
pub const WEFT_RESPONSE_FLAGS: &str = "weft.response_flags";
/// The peer's mTLS-verified SPIFFE ID: the server on outbound, the client on inbound.
pub const WEFT_PEER_IDENTITY: &str = "weft.peer.identity";
/// The request's `x-request-id`.
pub const WEFT_REQUEST_ID: &str = "weft.request_id";

const TRACEPARENT: &str = "traceparent";
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
const B3_SINGLE: HeaderName = HeaderName::from_static("b3");

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("OTLP endpoint {endpoint:?}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("trace sampling must be between 0 and 1, not {0}")]
    Sampling(f64),
}

/// Which side of the proxy a span describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A sidecar's (or `weft exec`'s) outbound: the app's call, a CLIENT span.
    Outbound,
    /// The ingress gateway: a request entering the mesh, a SERVER span.
    Ingress,
    /// A sidecar's inbound: a request for its app, a SERVER span.
    Inbound,
}

impl Side {
    fn kind(self) -> SpanKind {
        match self {
            Side::Outbound => SpanKind::Client,
            Side::Ingress | Side::Inbound => SpanKind::Server,
        }
    }

    pub fn direction(self) -> &'static str {
        match self {
            Side::Outbound | Side::Ingress => "outbound",
            Side::Inbound => "inbound",
        }
    }
}

/// Who this proxy is, for the spans' resource.
pub struct Origin<'a> {
    /// `service.name`: the workload's service.
    pub service: &'a str,
    pub namespace: &'a str,
    pub workload: &'a str,
    pub instance: &'a str,
}

/// A proxy's tracer: the SDK provider with its OTLP exporter and batch processor.
pub struct Tracer {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    w3c: TraceContextPropagator,
    /// Decides B3 traces that arrive without a sampling decision (the same way on every hop:
    /// the decision is a function of the trace id).
    ratio: Sampler,
}

impl Tracer {
    /// Builds the exporter (on `control`, whose runtime does its network I/O) and the batch
    /// processor (its own thread).
    pub fn start(
        settings: &Tracing,
        origin: Origin<'_>,
        control: &tokio::runtime::Handle,
    ) -> Result<Tracer, TraceError> {
        if !(0.0..=1.0).contains(&settings.sampling) {
            return Err(TraceError::Sampling(settings.sampling));
        }
        let err = |source| TraceError::Exporter {
            endpoint: settings.endpoint.clone(),
            source,
        };
        // tonic's channel spawns its connection worker where it is built: on the control runtime.
        let _in_control_runtime = control.enter();
        let exporter = match settings.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(settings.endpoint.clone())
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(
                    opentelemetry_http::hyper::HyperClient::with_default_connector(
                        EXPORT_TIMEOUT,
                        None,
                    ),
                )
                .with_endpoint(http_traces_url(&settings.endpoint))
                .with_timeout(EXPORT_TIMEOUT)
                .build(),
        }
        .map_err(err)?;
        let exporter = OnRuntime {
            inner: Arc::new(exporter),
            runtime: control.clone(),
            warned: AtomicBool::new(false),
            endpoint: settings.endpoint.clone(),
        };
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(settings.export_interval)
                    .with_max_queue_size(MAX_QUEUED_SPANS)
                    .build(),
            )
            .build();
        let resource = Resource::builder()
            .with_service_name(origin.service.to_string())
            .with_attributes([
                KeyValue::new("service.namespace", origin.namespace.to_string()),
                KeyValue::new("service.instance.id", origin.instance.to_string()),
                KeyValue::new("weft.workload", origin.workload.to_string()),
            ])
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_sampler(sampler(settings.sampling))
            .with_resource(resource)
            .build();
        Ok(Tracer::with_provider(provider, settings.sampling))
    }

    /// A tracer on `provider`, whose sampler should be [`sampler`]`(sampling)`.
    pub fn with_provider(provider: SdkTracerProvider, sampling: f64) -> Tracer {
        Tracer {
            tracer: provider.tracer("weft-proxy"),
            provider,
            w3c: TraceContextPropagator::new(),
            ratio: Sampler::TraceIdRatioBased(sampling),
        }
    }

    /// Sends what is queued and stops the batch processor (waits a few seconds at most).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "tracer shutdown");
        }
    }

    /// Continues the request's trace: starts this side's span as a child of the context the
    /// request carries (or a new root) and replaces that context in `req` with the new span's,
    /// in W3C form and, when the request came with B3, in its B3 form too. `None` when the span
    /// is not sampled (the context still goes on, marked not sampled).
    pub fn begin<B>(&self, req: &mut Request<B>, side: Side, peer: SocketAddr) -> Option<Active> {
        let incoming = self.extract(req.headers());
        let cx = match &incoming.parent {
            Some(sc) => Context::new().with_remote_span_context(sc.clone()),
            None => Context::new(),
        };
        let builder = self
            .tracer
            .span_builder(span_name(req.method()))
            .with_kind(side.kind());
        let mut span = self.tracer.build_with_context(builder, &cx);
        let sc = span.span_context().clone();
        if sc.is_valid() {
            self.inject(req.headers_mut(), &sc, &incoming);
        }
        if !span.is_recording() {
            return None;
        }
        span.set_attributes(request_attributes(req, side, peer));
        Some(Active { span })
    }

    /// The context a request carries: W3C first, then B3 multi-header, then B3 single.
    fn extract(&self, h: &HeaderMap) -> Incoming {
        let b3_multi = h.contains_key(B3_TRACE_ID);
        let b3_single = h.contains_key(B3_SINGLE);
        let mut parent = None;
        if h.contains_key(TRACEPARENT) {
            let cx = self.w3c.extract(&HeaderExtractor(h));
            let sc = cx.span().span_context().clone();
            parent = sc.is_valid().then_some(sc);
        }
        if parent.is_none() && b3_multi {
            parent = b3_multi_context(h).map(|b| self.decide(b));
        }
        if parent.is_none() && b3_single {
            parent = h
                .get(B3_SINGLE)
                .and_then(|v| v.to_str().ok())
                .and_then(b3_single_context)
                .map(|b| self.decide(b));
        }
        Incoming {
            parent,
            b3_multi,
            b3_single,
        }
    }

    /// A B3 context as a remote parent; a deferred sampling decision is made here.
    fn decide(&self, b: B3) -> SpanContext {
        let sampled = b.sampled.unwrap_or_else(|| {
            self.ratio
                .should_sample(None, b.trace_id, "", &SpanKind::Server, &[], &[])
                .decision
                == opentelemetry::trace::SamplingDecision::RecordAndSample
        });
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(b.trace_id, b.span_id, flags, true, TraceState::default())
    }

    fn inject(&self, h: &mut HeaderMap, sc: &SpanContext, incoming: &Incoming) {
        self.w3c.inject_context(
            &Context::new().with_remote_span_context(sc.clone()),
            &mut HeaderInjector(h),
        );
        if !(incoming.b3_multi || incoming.b3_single) {
            return;
        }
        let trace = sc.trace_id().to_string();
        let span = sc.span_id().to_string();
        let sampled = if sc.is_sampled() { "1" } else { "0" };
        let parent = incoming.parent.as_ref().map(|p| p.span_id().to_string());
        let value = |s: &str| HeaderValue::from_str(s).ok();
        if incoming.b3_multi {
            if let (Some(t), Some(s)) = (value(&trace), value(&span)) {
                h.insert(B3_TRACE_ID, t);
                h.insert(B3_SPAN_ID, s);
            }
            match parent.as_deref().and_then(value) {
                Some(p) => h.insert(B3_PARENT_SPAN_ID, p),
                None => h.remove(B3_PARENT_SPAN_ID),
            };
            // The debug flag implies sampling and stays; otherwise say what we decided.
            if h.get(B3_FLAGS).is_none_or(|v| v != "1") {
                h.insert(B3_SAMPLED, HeaderValue::from_static(sampled));
            }
        }
        if incoming.b3_single {
            let mut v = format!("{trace}-{span}-{sampled}");
            if let Some(p) = &parent {
                v.push('-');
                v.push_str(p);
            }
            if let Some(v) = value(&v) {
                h.insert(B3_SINGLE, v);
            }
        }
    }
}

/// A decision already made upstream stands; a new trace is sampled at `rate`.
pub fn sampler(rate: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(rate)))
}

/// What [`Tracer::extract`] found.
struct Incoming {
    parent: Option<SpanContext>,
    b3_multi: bool,
    b3_single: bool,
}

/// A B3 context; `sampled: None` is a deferred decision.
#[derive(Debug, PartialEq)]
struct B3 {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: Option<bool>,
}

/// A 64- or 128-bit trace id in hex (a 64-bit one is the low half of the 128-bit id).
fn b3_trace_id(s: &str) -> Option<TraceId> {
    let ok = matches!(s.len(), 16 | 32) && s.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| TraceId::from_hex(s).ok())
        .flatten()
        .filter(|t| *t != TraceId::INVALID)
}

fn b3_span_id(s: &str) -> Option<SpanId> {
    let ok = s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| SpanId::from_hex(s).ok())
        .flatten()
        .filter(|s| *s != SpanId::INVALID)
}

fn b3_multi_context(h: &HeaderMap) -> Option<B3> {
    let get = |n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let trace_id = b3_trace_id(get(&B3_TRACE_ID)?)?;
    let span_id = b3_span_id(get(&B3_SPAN_ID)?)?;
    let sampled = if get(&B3_FLAGS) == Some("1") {
        Some(true)
    } else {
        match get(&B3_SAMPLED) {
            Some("1") | Some("true") => Some(true),
            Some("0") | Some("false") => Some(false),
            _ => None,
        }
    };
    Some(B3 {
        trace_id,
        span_id,
        sampled,
    })
}

/// `b3: TRACEID-SPANID[-SAMPLED[-PARENTSPANID]]`. A bare sampling decision (`b3: 0`) carries no
/// context and is ignored.
fn b3_single_context(v: &str) -> Option<B3> {
    let mut parts = v.trim().split('-');
    let trace_id = b3_trace_id(parts.next()?)?;
    let span_id = b3_span_id(parts.next()?)?;
    let sampled = match parts.next() {
        Some("1") | Some("d") => Some(true),
        Some("0") => Some(false),
        _ => None,
    };
    Some(B3 {
        trace_id,
        span_id,
        sampled,
    })
}

/// The span's name until the request is routed and named for its route
/// ([`Active::rename`]): the method, as the HTTP semantic conventions name a span whose route
/// is not known.
fn span_name(m: &Method) -> Cow<'static, str> {
    Cow::Borrowed(match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "HTTP",
    })
}

fn protocol_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "",
    }
}

fn request_attributes<B>(req: &Request<B>, side: Side, peer: SocketAddr) -> Vec<KeyValue> {
    let h = req.headers();
    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| header("host"))
        .unwrap_or_default();
    let parsed = authority.parse::<http::uri::Authority>().ok();
    let host = parsed.as_ref().map_or(authority, |a| a.host());
    let mut a = Vec::with_capacity(14);
    let method = match span_name(req.method()) {
        Cow::Borrowed("HTTP") => "_OTHER",
        Cow::Borrowed(m) => m,
        Cow::Owned(_) => "_OTHER",
    };
    a.push(KeyValue::new(HTTP_REQUEST_METHOD, method));
    a.push(KeyValue::new(URL_PATH, req.uri().path().to_string()));
    if let Some(q) = req.uri().query() {
        a.push(KeyValue::new(URL_QUERY, q.to_string()));
    }
    a.push(KeyValue::new(URL_SCHEME, "http"));
    a.push(KeyValue::new(SERVER_ADDRESS, host.to_string()));
    if let Some(p) = parsed.as_ref().and_then(|a| a.port_u16()) {
        a.push(KeyValue::new(SERVER_PORT, p as i64));
    }
    a.push(KeyValue::new(
        NETWORK_PROTOCOL_VERSION,
        protocol_version(req.version()),
    ));
    if let Some(ua) = header("user-agent") {
        a.push(KeyValue::new(USER_AGENT_ORIGINAL, ua.to_string()));
    }
    if let Some(id) = header("x-request-id") {
        a.push(KeyValue::new(WEFT_REQUEST_ID, id.to_string()));
    }
    match side {
        Side::Outbound => {
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            a.push(KeyValue::new(URL_FULL, format!("http://{authority}{pq}")));
        }
        Side::Ingress | Side::Inbound => {
            a.push(KeyValue::new(CLIENT_ADDRESS, peer.ip().to_string()));
        }
    }
    a.push(KeyValue::new(WEFT_DIRECTION, side.direction()));
    a
}

/// A sampled span in flight; it ends (and goes to the exporter) when dropped.
pub struct Active {
    span: opentelemetry_sdk::trace::Span,
}

/// What the response side adds to a span.
pub struct Outcome<'a> {
    pub status: u16,
    /// Response flags, `None` when the proxy did not answer itself.
    pub flags: Option<&'a str>,
    pub upstream_instance: Option<&'a str>,
    pub upstream_address: Option<SocketAddr>,
    /// The peer's verified identity, without `spiffe://`.
    pub peer_identity: Option<&'a str>,
}

impl Active {
    /// Records the response: status, upstream, flags, peer; an error on 5xx or a flag.
    pub fn respond(&mut self, o: &Outcome<'_>) {
        let s = &mut self.span;
        s.set_attribute(KeyValue::new(HTTP_RESPONSE_STATUS_CODE, o.status as i64));
        if let Some(i) = o.upstream_instance {
            s.set_attribute(KeyValue::new(WEFT_UPSTREAM_INSTANCE, i.to_string()));
        }
        if let Some(a) = o.upstream_address {
            s.set_attribute(KeyValue::new(WEFT_UPSTREAM_ADDRESS, a.to_string()));
        }
        if let Some(f) = o.flags {
            s.set_attribute(KeyValue::new(WEFT_RESPONSE_FLAGS, f.to_string()));
        }
        if let Some(p) = o.peer_identity {
            s.set_attribute(KeyValue::new(WEFT_PEER_IDENTITY, format!("spiffe://{p}")));
        }
        if o.status >= 500 || o.flags.is_some() {
            let why = o.flags.map_or_else(|| o.status.to_string(), str::to_string);
            s.set_attribute(KeyValue::new(ERROR_TYPE, why.clone()));
            s.set_status(Status::error(why));
        }
    }

    /// Names the span for what the request turned out to be (its route's operation, once
    /// routed: see `route::operation`).
    pub fn rename(&mut self, operation: &str) {
        self.span.update_name(operation.to_string());
    }

    /// The span's trace id (for the access log).
    pub fn trace_id(&self) -> TraceId {
        self.span.span_context().trace_id()
    }
}

/// Runs each export on the proxy's control runtime: the exporters' HTTP/2 and HTTP clients do
/// their I/O with tokio, while the batch processor calls them from its own plain thread.
struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: tokio::runtime::Handle,
    /// The first failed export is a warning; later ones only debug lines.
    warned: AtomicBool,
    endpoint: String,
}

impl<E> std::fmt::Debug for OnRuntime<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnRuntime")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let inner = self.inner.clone();
        let task = self.runtime.spawn(async move { inner.export(batch).await });
        async move {
            let result = task
                .await
                .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())));
            if let Err(e) = &result {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(endpoint = %self.endpoint, error = %e, "exporting spans failed");
                } else {
                    tracing::debug!(endpoint = %self.endpoint, error = %e, "exporting spans failed");
                }
            }
            result
        }
    }

    fn shutdown(&mut self) -> OTelSdkResult {
        match Arc::get_mut(&mut self.inner) {
            Some(e) => e.shutdown(),
            None => Ok(()),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(e) = Arc::get_mut(&mut self.inner) {
            e.set_resource(resource);
        }
    }
}

/// An OTLP/HTTP endpoint as given, or with `/v1/traces` when it names no path (as the
/// `OTEL_EXPORTER_OTLP_ENDPOINT` convention does).
pub fn http_traces_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    match e.parse::<http::Uri>() {
        Ok(u) if matches!(u.path(), "" | "/") => format!("{e}{OTLP_HTTP_TRACES_PATH}"),
        _ => endpoint.to_string(),
    }
}
