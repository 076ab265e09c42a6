//! Istio's standard metrics on the request path: each proxy tells its peer who it is in the
//! `x-weft-peer` header (Istio's metadata exchange; the client's on the request, the server's
//! on the response), and records every request once as it ends — the client side as
//! `reporter="source"`, the server side as `reporter="destination"` — with the principal taken
//! from the mTLS handshake, never from the header.
//!
//! The same two calls finish what else a request leaves behind, when it is turned on: its span
//! ([`crate::trace`]) and its access-log line ([`crate::access_log`]). Both are completed when
//! the response body has gone out (an [`Ending`] watching the body), so the span's end and the line's
//! duration and byte count cover the whole response.

use crate::access_log::{AccessLog, Captured, Entry};
use crate::body::{self, Body};
use crate::flags;
use crate::telemetry::{
    DestinationService, Peer, PeerMetadata, Protocol, Reporter, RequestRecord, ResponseFlags,
    Telemetry, PEER_HEADER,
};
use crate::trace::{Active, Outcome, Side, Tracer};
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Frame;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// This proxy's side of the exchange, made once at start.
pub struct Observe {
    pub telemetry: Telemetry,
    pub local: Peer,
    pub local_header: HeaderValue,
    /// Live request events for `weft tap` / `weft top`.
    pub tap: std::sync::Arc<crate::tap::Tap>,
    /// Spans, when an OTLP endpoint is configured.
    pub tracer: Option<Tracer>,
    /// Access-log lines, when the log is on.
    pub access_log: Option<Arc<AccessLog>>,
    /// This replica's name and its app: the upstream of what the inbound side serves.
    pub instance: String,
    pub app: Option<SocketAddr>,
}

/// What an outbound response learnt about its upstream (handed from the attempt loop to the
/// metrics beside the response).
#[derive(Clone)]
pub struct Upstream {
    pub peer: Peer,
    pub mtls: bool,
    /// The endpoint that answered.
    pub endpoint: Arc<crate::balance::EndpointState>,
}

/// What a request is, for the record (captured before the request is consumed).
pub struct Started {
    pub at: Instant,
    pub protocol: Protocol,
    pub request_bytes: u64,
    /// Method, path… — only while someone taps.
    pub tap: Option<Box<crate::tap::TapRequest>>,
    /// The request's span — only when tracing is on and the trace is sampled.
    pub span: Option<Box<Active>>,
    /// The request side of its access-log line — only when the log is on.
    pub log: Option<Box<Captured>>,
}

impl Started {
    pub fn of<B>(req: &http::Request<B>, tap: &crate::tap::Tap) -> Started {
        let headers = req.headers();
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        Started {
            at: Instant::now(),
            protocol: if grpc { Protocol::Grpc } else { Protocol::Http },
            request_bytes: crate::headers::content_length(headers).unwrap_or(0),
            tap: tap.capture(req),
            span: None,
            log: None,
        }
    }
}

impl Observe {
    pub fn new(
        workload: &str,
        namespace: &str,
        labels: &model::Labels,
        id: &model::Identity,
    ) -> Self {
        let meta = PeerMetadata::from_labels(workload, namespace, labels, Some(id));
        let local_header = meta.header_value();
        Observe {
            telemetry: Telemetry::new(),
            local: Peer::new(meta),
            local_header,
            tap: Default::default(),
            tracer: None,
            access_log: None,
            instance: String::new(),
            app: None,
        }
    }

    /// Captures what the end of a request needs, as it arrives from `peer`: its size and
    /// protocol, its tap event, its access-log line, and its span — which continues the trace
    /// the request carries and puts the new context into `req`, to be forwarded with it.
    pub fn start<B>(&self, req: &mut Request<B>, side: Side, peer: SocketAddr) -> Started {
        let mut started = Started::of(req, &self.tap);
        if let Some(t) = &self.tracer {
            started.span = t.begin(req, side, peer).map(Box::new);
        }
        if self.access_log.is_some() {
            started.log = Some(Captured::of(req, peer, started.request_bytes));
        }
        started
    }

    /// Records a request as the client side saw it, and drops the upstream's `x-weft-peer`
    /// so the app never sees it.
    pub fn source(
        &self,
        started: Started,
        service: Option<&DestinationService>,
        upstream: Option<Upstream>,
        rsp: &mut Response<Body>,
    ) {
        rsp.headers_mut().remove(PEER_HEADER);
        let unknown_service;
        let service = match service {
            Some(s) => s,
            None => {
                unknown_service = DestinationService::unknown();
                &unknown_service
            }
        };
        let unknown_peer;
        let (destination, mtls) = match &upstream {
            Some(u) => (&u.peer, u.mtls),
            None => {
                unknown_peer = Peer::unknown();
                (&unknown_peer, false)
            }
        };
        let parties = Parties {
            source: &self.local,
            destination,
            service,
            mtls,
        };
        let flags = self.record(Reporter::Source, &started, parties, rsp);
        if started.span.is_some() || started.log.is_some() {
            let ep = upstream.as_ref().map(|u| &u.endpoint.endpoint);
            self.finish(
                started,
                End {
                    direction: "outbound",
                    source: &self.local,
                    destination,
                    peer: destination,
                    service,
                    upstream_instance: ep.map(|e| e.instance.as_str()),
                    upstream_address: ep.map(|e| e.address),
                    flags,
                },
                rsp,
            );
        }
    }

    /// Records a request as the server side saw it, from `source` (its `x-weft-peer` with the
    /// verified principal), and tells the client who we are.
    pub fn destination(
        &self,
        started: Started,
        source: &Peer,
        service: &DestinationService,
        mtls: bool,
        rsp: &mut Response<Body>,
    ) {
        rsp.headers_mut()
            .insert(crate::telemetry::PEER, self.local_header.clone());
        let parties = Parties {
            source,
            destination: &self.local,
            service,
            mtls,
        };
        let flags = self.record(Reporter::Destination, &started, parties, rsp);
        if started.span.is_some() || started.log.is_some() {
            self.finish(
                started,
                End {
                    direction: "inbound",
                    source,
                    destination: &self.local,
                    peer: source,
                    service,
                    upstream_instance: Some(self.instance.as_str()),
                    upstream_address: self.app,
                    flags,
                },
                rsp,
            );
        }
    }

    /// Completes the span and the access-log line of a request once its response body has
    /// gone out.
    fn finish(&self, started: Started, end: End<'_>, rsp: &mut Response<Body>) {
        let status = rsp.status().as_u16();
        let mut span = started.span;
        let trace_id = span.as_ref().map(|s| s.trace_id());
        if let Some(s) = &mut span {
            let flags = (!end.flags.is_empty()).then(|| end.flags.to_string());
            let principal = &end.peer.metadata().principal;
            s.respond(&Outcome {
                status,
                flags: flags.as_deref(),
                upstream_instance: end.upstream_instance,
                upstream_address: end.upstream_address,
                peer_identity: (principal != crate::telemetry::UNKNOWN)
                    .then_some(principal.as_str()),
            });
        }
        let log = match (started.log, &self.access_log) {
            (Some(request), Some(sink)) => Some((
                sink.clone(),
                Entry {
                    request,
                    direction: end.direction,
                    response_code: status,
                    response_flags: end.flags,
                    bytes_sent: 0,
                    duration: Default::default(),
                    upstream_host: end.upstream_address,
                    service: end.service.clone(),
                    source: end.source.clone(),
                    destination: end.destination.clone(),
                    trace_id,
                },
            )),
            _ => None,
        };
        let inner = std::mem::replace(rsp.body_mut(), body::empty());
        *rsp.body_mut() = body::boxed(body::Watched::new(
            inner,
            Ending {
                at: started.at,
                bytes: 0,
                span,
                log,
            },
        ));
    }

    fn record(
        &self,
        reporter: Reporter,
        started: &Started,
        parties: Parties<'_>,
        rsp: &mut Response<Body>,
    ) -> ResponseFlags {
        let Parties {
            source,
            destination,
            service,
            mtls,
        } = parties;
        let mut r = RequestRecord::new(reporter, source, destination, service);
        r.protocol = started.protocol;
        r.response_code = rsp.status().as_u16();
        r.grpc_status = rsp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        r.flags = flags::of(rsp).map_or(ResponseFlags::NONE, ResponseFlags::from);
        r.mtls = mtls;
        r.duration = started.at.elapsed();
        r.request_bytes = started.request_bytes;
        r.response_bytes = crate::headers::content_length(rsp.headers()).unwrap_or(0);
        let at_trailers =
            r.protocol == Protocol::Grpc && r.grpc_status.is_none() && r.response_code == 200;
        let mut event = None;
        if let Some(t) = &started.tap {
            let principal = |p: &Peer| {
                let m = p.metadata();
                if m.principal == crate::telemetry::UNKNOWN {
                    String::new()
                } else {
                    format!("spiffe://{}", m.principal)
                }
            };
            let flags = r.flags.to_string();
            event = Some(crate::tap::TapEvent {
                ts_ms: t.ts_ms,
                direction: match reporter {
                    Reporter::Source => "outbound".into(),
                    Reporter::Destination => "inbound".into(),
                },
                method: t.method.clone(),
                authority: t.authority.clone(),
                path: t.path.clone(),
                status: r.response_code,
                latency_ms: r.duration.as_secs_f64() * 1000.0,
                flags,
                src_workload: source.metadata().workload.clone(),
                src_identity: principal(source),
                dst_workload: destination.metadata().workload.clone(),
                dst_identity: principal(destination),
                dst_service: service.fqdn().to_string(),
                mtls,
                request_id: t.request_id.clone(),
                grpc_status: r.grpc_status,
            });
        }
        if at_trailers {
            // The call's status comes in its trailers: recorded (and tapped) once they have
            // gone by.
            self.record_at_trailers(&r, started.at, rsp, event);
        } else {
            self.telemetry.request(&r);
            if let Some(e) = event {
                self.tap.send(e);
            }
        }
        r.flags
    }
}

impl Observe {
    /// Records `r` once `rsp`'s body has ended, with the `grpc-status` of its trailers (none if
    /// it ended without: a reset stream) and the call's whole duration, as Envoy reports a
    /// streaming call when it ends.
    fn record_at_trailers(
        &self,
        r: &RequestRecord<'_>,
        at: Instant,
        rsp: &mut Response<Body>,
        event: Option<crate::tap::TapEvent>,
    ) {
        let telemetry = self.telemetry.clone();
        let tap = event.map(|e| (self.tap.clone(), e));
        let (source, destination, service) =
            (r.source.clone(), r.destination.clone(), r.service.clone());
        let (reporter, flags, mtls, request_bytes) = (r.reporter, r.flags, r.mtls, r.request_bytes);
        let body = std::mem::replace(rsp.body_mut(), body::empty());
        let wrapped = crate::grpc::OnStatus::wrap(Response::new(body), move |status| {
            let mut r = RequestRecord::new(reporter, &source, &destination, &service);
            r.protocol = Protocol::Grpc;
            r.response_code = 200;
            r.grpc_status = status;
            r.flags = flags;
            r.mtls = mtls;
            r.duration = at.elapsed();
            r.request_bytes = request_bytes;
            telemetry.request(&r);
            if let Some((tap, mut e)) = tap {
                e.grpc_status = status;
                e.latency_ms = at.elapsed().as_secs_f64() * 1000.0;
                tap.send(e);
            }
        });
        *rsp.body_mut() = wrapped.into_body();
    }
}

/// Who a request was between: its metric labels.
struct Parties<'a> {
    source: &'a Peer,
    destination: &'a Peer,
    service: &'a DestinationService,
    mtls: bool,
}

/// How a request ended, for its span and its access-log line.
struct End<'a> {
    direction: &'static str,
    source: &'a Peer,
    destination: &'a Peer,
    /// The other side: the server on outbound, the client on inbound.
    peer: &'a Peer,
    service: &'a DestinationService,
    upstream_instance: Option<&'a str>,
    upstream_address: Option<SocketAddr>,
    flags: ResponseFlags,
}

/// What ends a request's span and sends its access-log line once the last
/// byte has gone out (or the body is dropped: the client went away).
struct Ending {
    at: Instant,
    bytes: u64,
    span: Option<Box<Active>>,
    log: Option<(Arc<AccessLog>, Entry)>,
}

impl Ending {
    fn done(&mut self) {
        // Dropping the span ends it and hands it to the exporter.
        self.span = None;
        if let Some((sink, mut e)) = self.log.take() {
            e.bytes_sent = self.bytes;
            e.duration = self.at.elapsed();
            sink.send(e);
        }
    }
}

impl body::Watch for Ending {
    fn frame(&mut self, frame: &Frame<Bytes>, last: bool) {
        if let Some(d) = frame.data_ref() {
            self.bytes += d.len() as u64;
        }
        if last {
            self.done();
        }
    }

    fn ended(&mut self, _broke_off: bool) {
        self.done();
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.done();
    }
}
