//! Istio's standard metrics on the request path: each proxy tells its peer who it is in the
//! `x-weft-peer` header (Istio's metadata exchange; the client's on the request, the server's
//! on the response), and records every request once as it ends — the client side as
//! `reporter="source"`, the server side as `reporter="destination"` — with the principal taken
//! from the mTLS handshake, never from the header.

use crate::body::Body;
use crate::flags;
use crate::telemetry::{
    DestinationService, Peer, PeerMetadata, Protocol, Reporter, RequestRecord, ResponseFlags,
    Telemetry, PEER_HEADER,
};
use http::{HeaderMap, HeaderValue, Response};
use std::time::Instant;

/// This proxy's side of the exchange, made once at start.
pub struct Observe {
    pub telemetry: Telemetry,
    pub local: Peer,
    pub local_header: HeaderValue,
    /// Live request events for `weft tap` / `weft top`.
    pub tap: std::sync::Arc<crate::tap::Tap>,
}

/// What an outbound response learnt about its upstream (a response extension).
#[derive(Clone)]
pub struct Upstream {
    pub peer: Peer,
    pub mtls: bool,
}

/// What a request is, for the record (captured before the request is consumed).
pub struct Started {
    pub at: Instant,
    pub protocol: Protocol,
    pub request_bytes: u64,
    /// Method, path… — only while someone taps.
    pub tap: Option<Box<crate::tap::TapRequest>>,
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
            request_bytes: content_length(headers),
            tap: tap.capture(req),
        }
    }
}

fn content_length(h: &HeaderMap) -> u64 {
    h.get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
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
        }
    }

    /// Records a request as the client side saw it, and drops the upstream's `x-weft-peer`
    /// so the app never sees it.
    pub fn source(
        &self,
        started: &Started,
        service: Option<&DestinationService>,
        rsp: &mut Response<Body>,
    ) {
        let upstream = rsp.extensions_mut().remove::<Upstream>();
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
        self.record(
            Reporter::Source,
            started,
            &self.local,
            destination,
            service,
            mtls,
            rsp,
        );
    }

    /// Records a request as the server side saw it, from `source` (its `x-weft-peer` with the
    /// verified principal), and tells the client who we are.
    pub fn destination(
        &self,
        started: &Started,
        source: &Peer,
        service: &DestinationService,
        mtls: bool,
        rsp: &mut Response<Body>,
    ) {
        rsp.headers_mut()
            .insert(PEER_HEADER, self.local_header.clone());
        self.record(
            Reporter::Destination,
            started,
            source,
            &self.local,
            service,
            mtls,
            rsp,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        reporter: Reporter,
        started: &Started,
        source: &Peer,
        destination: &Peer,
        service: &DestinationService,
        mtls: bool,
        rsp: &Response<Body>,
    ) {
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
        r.response_bytes = content_length(rsp.headers());
        self.telemetry.request(&r);
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
            self.tap.send(crate::tap::TapEvent {
                ts_ms: t.ts_ms,
                direction: match reporter {
                    Reporter::Source => "outbound",
                    Reporter::Destination => "inbound",
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
            });
        }
    }
}
