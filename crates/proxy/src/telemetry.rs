//! Istio's standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`, the gRPC message counters and the TCP
//! counters) with Istio's names, types, buckets and full label set, so dashboards and alerts
//! written for Istio read weft unchanged.
//!
//! The proxy calls [`Telemetry::request`] once per request (and the TCP calls per connection),
//! as the client side (`reporter="source"`) and as the server side (`reporter="destination"`).
//! Recording takes no lock and allocates nothing once a label set exists: one `ArcSwap` load,
//! one hash of four words, one table probe, a few relaxed atomic adds. The peers' metadata
//! comes from the `x-weft-peer` header ([`PeerMetadata`]); [`Telemetry::register`] adds the
//! series to the proxy's `Registry` as a collector, read at scrape time.
//!
//! Istio's conventions kept: labels nobody can fill read `unknown`; `response_flags` is `-`
//! when there is none; `grpc_response_status` is empty on plain HTTP and, for a gRPC call, is
//! the status of its trailers-only answer or of its trailers (recorded when they pass, see
//! `observe`), with `response_code="200"`; principals are full
//! SPIFFE URIs; `connection_security_policy` is `mutual_tls` or `none` on the destination side
//! and `unknown` on the source side (Istio: the client cannot know the server's policy).
//!
//! Layout:
//! - [`peer`]: [`PeerMetadata`], the `x-weft-peer` codec, the shared [`Peer`] and
//!   [`DestinationService`] label groups.
//! - `series`: a label set's key and its atomics; Istio's bucket bounds.
//! - `labels`: Istio's label names, and a series' label set rendered once for every scrape.
//! - `table`: the lock-free, copy-on-write series table and the cardinality guard.
//! - `export`: the `prometheus_client` collector that writes the series at scrape time.

mod export;
mod hash;
mod labels;
pub mod peer;
mod series;
mod table;

pub use peer::{
    DestinationService, Peer, PeerMetadata, DEFAULT_CLUSTER, DEFAULT_REVISION, MAX_HEADER_LEN,
    MAX_VALUE_LEN, PEER, PEER_HEADER, UNKNOWN,
};

use crate::flags::Flag;
use prometheus_client::registry::Registry;
use series::{Closed, HttpSeries, KeyRef, TcpSeries};
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use table::{CowTable, Table};

/// Label sets kept per kind (HTTP, TCP) before new ones fold into `overflow` series. An HTTP
/// series holds ~1.2 KiB (atomics and its rendered labels) and writes ~40 KB per scrape (45
/// lines, each with Istio's 25 labels), so the cap bounds memory to ~12 MiB; a proxy anywhere
/// near it is being fed hostile metadata or a mis-set label, which
/// `weft_telemetry_dropped_series_total` shows, and its scrapes are already too large.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// Distinct `x-weft-peer` values (with their verified principal) remembered decoded. A proxy
/// talks to a few dozen peer workloads; the cap only stops a hostile peer from growing it.
pub const PEER_CACHE_MAX: usize = 1024;

/// Which side reports: the client's proxy (`source`) or the server's (`destination`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reporter {
    Source = 0,
    Destination = 1,
}

/// `request_protocol` of a request (TCP connections report `tcp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Grpc,
}

/// The response flags of a request or connection (Envoy's `%RESPONSE_FLAGS%`): a set of
/// [`Flag`]s, rendered `-` when empty, else their short names joined by `,` (`UF,URX`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

// One bit per flag in a `u32`.
const _: () = assert!(Flag::ALL.len() <= 32);

impl ResponseFlags {
    pub const NONE: ResponseFlags = ResponseFlags(0);

    pub fn with(self, flag: Flag) -> Self {
        match Flag::ALL.iter().position(|f| *f == flag) {
            Some(i) => ResponseFlags(self.0 | 1 << i),
            None => self,
        }
    }

    pub fn contains(self, flag: Flag) -> bool {
        self.with(flag) == self
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags set, in `Flag::ALL` order.
    pub fn iter(self) -> impl Iterator<Item = Flag> {
        Flag::ALL
            .into_iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & 1 << i != 0)
            .map(|(_, f)| f)
    }

    pub(crate) fn bits(self) -> u32 {
        self.0
    }

    pub(crate) fn from_bits(bits: u32) -> Self {
        ResponseFlags(bits)
    }
}

impl From<Flag> for ResponseFlags {
    fn from(flag: Flag) -> Self {
        ResponseFlags::NONE.with(flag)
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, flag) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(flag.as_str())?;
        }
        Ok(())
    }
}

/// One finished request, as one side saw it. Borrowed, so building it costs nothing.
#[derive(Clone, Copy, Debug)]
pub struct RequestRecord<'a> {
    pub reporter: Reporter,
    /// The client's workload: the proxy's own peer when reporting as source, the request's
    /// `x-weft-peer` (see [`Telemetry::peer_from_header`]) when reporting as destination.
    pub source: &'a Peer,
    /// The server's workload: the response's `x-weft-peer` as source, the proxy's own as
    /// destination.
    pub destination: &'a Peer,
    pub service: &'a DestinationService,
    pub protocol: Protocol,
    /// The status sent downstream; 0 when none was (Istio's value for a reset stream).
    pub response_code: u16,
    /// The `grpc-status` of a gRPC response; `None` for plain HTTP or when there was none.
    /// Values gRPC does not define read 2 (`UNKNOWN`), as gRPC clients read them.
    pub grpc_status: Option<u32>,
    pub flags: ResponseFlags,
    /// Whether the request came (destination) or went (source) over mutual TLS.
    pub mtls: bool,
    pub duration: Duration,
    /// Body bytes of the request and of the response.
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// gRPC messages each way; read only when `protocol` is [`Protocol::Grpc`].
    pub request_messages: u64,
    pub response_messages: u64,
}

impl<'a> RequestRecord<'a> {
    /// A plain HTTP request with status 0, no flags, no TLS and zero duration and sizes: set
    /// the fields that apply.
    pub fn new(
        reporter: Reporter,
        source: &'a Peer,
        destination: &'a Peer,
        service: &'a DestinationService,
    ) -> Self {
        RequestRecord {
            reporter,
            source,
            destination,
            service,
            protocol: Protocol::Http,
            response_code: 0,
            grpc_status: None,
            flags: ResponseFlags::NONE,
            mtls: false,
            duration: Duration::ZERO,
            request_bytes: 0,
            response_bytes: 0,
            request_messages: 0,
            response_messages: 0,
        }
    }

    fn key(&self) -> KeyRef<'a> {
        KeyRef {
            source: self.source,
            destination: self.destination,
            service: self.service,
            closed: Closed::new(
                self.reporter,
                Some(self.protocol),
                self.response_code,
                self.grpc_status,
                self.flags,
                self.mtls,
            ),
        }
    }
}

/// A TCP connection's labels (Istio's TCP metrics have no response code or gRPC status).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionRecord<'a> {
    pub reporter: Reporter,
    pub source: &'a Peer,
    pub destination: &'a Peer,
    pub service: &'a DestinationService,
    pub flags: ResponseFlags,
    pub mtls: bool,
}

impl<'a> ConnectionRecord<'a> {
    fn key(&self) -> KeyRef<'a> {
        KeyRef {
            source: self.source,
            destination: self.destination,
            service: self.service,
            closed: Closed::new(self.reporter, None, 0, None, self.flags, self.mtls),
        }
    }
}

/// The recorder: cheap to clone (one `Arc`), shared by every listener of a proxy.
#[derive(Clone)]
pub struct Telemetry(Arc<Inner>);

struct Inner {
    http: Table<HttpSeries>,
    tcp: Table<TcpSeries>,
    peers: CowTable<CachedPeer>,
}

/// A decoded `x-weft-peer` value, keyed by its bytes and the principal verified with it.
struct CachedPeer {
    raw: Box<[u8]>,
    verified: Option<Box<str>>,
    peer: Peer,
    hash: u64,
}

impl Telemetry {
    /// A recorder keeping at most [`DEFAULT_MAX_SERIES`] label sets per kind.
    pub fn new() -> Self {
        Self::with_max_series(DEFAULT_MAX_SERIES)
    }

    pub fn with_max_series(max_series: usize) -> Self {
        Telemetry(Arc::new(Inner {
            http: Table::new(max_series),
            tcp: Table::new(max_series),
            peers: CowTable::new(),
        }))
    }

    /// Adds the series to `registry`; they are read at each scrape.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(export::TelemetryCollector(self.clone())));
    }

    /// Records one finished HTTP or gRPC request.
    #[inline]
    pub fn request(&self, r: &RequestRecord<'_>) {
        let duration_us = u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX);
        let messages =
            (r.protocol == Protocol::Grpc).then_some((r.request_messages, r.response_messages));
        self.0.http.with(r.key(), |s| {
            s.record(duration_us, r.request_bytes, r.response_bytes, messages)
        });
    }

    pub fn connection_opened(&self, c: &ConnectionRecord<'_>) {
        self.0.tcp.with(c.key(), |s| s.opened.fetch_add(1, Relaxed));
    }

    pub fn connection_closed(&self, c: &ConnectionRecord<'_>) {
        self.0.tcp.with(c.key(), |s| s.closed.fetch_add(1, Relaxed));
    }

    /// Bytes a connection sent to and received from the downstream side, since the last call
    /// (Istio updates these periodically and at close; either works).
    pub fn tcp_bytes(&self, c: &ConnectionRecord<'_>, sent: u64, received: u64) {
        self.0.tcp.with(c.key(), |s| {
            s.sent.fetch_add(sent, Relaxed);
            s.received.fetch_add(received, Relaxed);
        });
    }

    /// Counts a connection opened now and returns a handle that counts its bytes without a
    /// lookup and counts it closed when dropped.
    pub fn tcp_connection(&self, c: &ConnectionRecord<'_>) -> TcpConnection {
        let series = self.0.tcp.with(c.key(), |s| {
            s.opened.fetch_add(1, Relaxed);
            s.clone()
        });
        TcpConnection { series }
    }

    /// The peer named by a request's or response's `x-weft-peer` value (`None`: absent), with
    /// `verified_principal` from the mTLS handshake (`None` on plaintext): see
    /// [`Peer::from_header`]. Decoded values are cached (up to [`PEER_CACHE_MAX`]), so the
    /// same peer is one shared `Peer` and a lookup costs a hash of the value and no
    /// allocation.
    pub fn peer_from_header(&self, value: Option<&[u8]>, verified_principal: Option<&str>) -> Peer {
        let raw = value.unwrap_or_default();
        if (raw.is_empty() && verified_principal.is_none()) || raw.len() > MAX_HEADER_LEN {
            return Peer::from_header(value, verified_principal);
        }
        let hash = hash::one(&(raw, verified_principal));
        let eq = |c: &CachedPeer| &*c.raw == raw && c.verified.as_deref() == verified_principal;
        if let Ok(peer) = self.0.peers.find(hash, eq, |c| c.peer.clone()) {
            return peer;
        }
        let peer = Peer::from_header(value, verified_principal);
        let make = || CachedPeer {
            raw: raw.into(),
            verified: verified_principal.map(Into::into),
            peer: peer.clone(),
            hash,
        };
        self.0
            .peers
            .insert(hash, eq, PEER_CACHE_MAX, |c| c.hash, make)
            .map_or(peer.clone(), |c| c.peer.clone())
    }

    /// Label sets held now (HTTP and TCP, overflow series included).
    pub fn series(&self) -> usize {
        self.0.http.len() + self.0.tcp.len()
    }

    /// Records that found the table full and were counted in an `overflow` series.
    pub fn dropped(&self) -> u64 {
        self.0.http.dropped() + self.0.tcp.dropped()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("http_series", &self.0.http.len())
            .field("tcp_series", &self.0.tcp.len())
            .field("dropped", &self.dropped())
            .field("cached_peers", &self.0.peers.len())
            .finish()
    }
}

/// An open TCP connection's series: byte counts are two relaxed adds, and dropping it counts
/// the connection closed.
pub struct TcpConnection {
    series: Arc<TcpSeries>,
}

impl TcpConnection {
    /// Bytes sent to the downstream side.
    pub fn sent(&self, bytes: u64) {
        self.series.sent.fetch_add(bytes, Relaxed);
    }

    /// Bytes received from the downstream side.
    pub fn received(&self, bytes: u64) {
        self.series.received.fetch_add(bytes, Relaxed);
    }
}

impl Drop for TcpConnection {
    fn drop(&mut self) {
        self.series.closed.fetch_add(1, Relaxed);
    }
}

impl fmt::Debug for TcpConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpConnection").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
