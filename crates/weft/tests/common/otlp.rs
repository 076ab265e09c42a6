//! A real OTLP/gRPC trace receiver for the tests (the collector's protobuf service definitions,
//! `opentelemetry-proto`): what it got, by trace, with each span's `service.name`.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A span as received, with its resource's `service.name`.
#[derive(Clone, Debug)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

/// Everything the receiver got, and how (path and content type of HTTP requests).
#[derive(Clone, Default)]
pub struct Collected {
    pub spans: Arc<Mutex<Vec<Received>>>,
    pub http_requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl Collected {
    pub fn add(&self, req: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| string_attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }

    /// The spans of the trace `trace_id`, once there are `n` of them.
    pub async fn trace(&self, trace_id: &[u8], n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let spans: Vec<Received> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.span.trace_id == trace_id)
                .cloned()
                .collect();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "trace {} has {} spans, not {n}: {spans:#?}",
                hex(trace_id),
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The trace whose ingress span served `path`.
    pub async fn trace_of(&self, path: &str) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.spans.lock().unwrap().iter().find_map(|r| {
                (r.service == "istio-ingressgateway"
                    && string_attr(&r.span.attributes, "url.path").as_deref() == Some(path))
                .then(|| r.span.trace_id.clone())
            });
            if let Some(t) = found {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "no ingress span for {path}; got {:#?}",
                self.spans.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub struct GrpcReceiver(pub Collected);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC receiver on 127.0.0.1:0.
pub async fn grpc_receiver() -> (SocketAddr, Collected) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collected = Collected::default();
    let service = TraceServiceServer::new(GrpcReceiver(collected.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, collected)
}

pub fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

pub fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    })
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}
