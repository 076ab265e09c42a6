//! One time series per label set: its key (three shared, pre-hashed label groups and one word
//! of closed-set labels) and its values (plain atomics, so recording is a few relaxed adds).

use super::hash;
use super::labels::RenderedLabels;
use super::peer::{DestinationService, Peer};
use super::{Protocol, Reporter, ResponseFlags};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Istio's `istio_request_duration_milliseconds` bucket bounds, in microseconds (the finest
/// is 0.5 ms, so integer microseconds keep every bound and the sum exact).
pub(crate) const DURATION_BOUNDS_US: [u64; 19] = [
    500,
    1_000,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    600_000_000,
    1_800_000_000,
    3_600_000_000,
];

/// Istio's `istio_request_bytes` / `istio_response_bytes` bucket bounds.
pub(crate) const BYTES_BOUNDS: [u64; 8] =
    [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

/// The labels that come from small closed sets, packed in one word: response flags (bits
/// 0..32, one per `Flag`), response code (32..42), gRPC status (42..47), reporter (47),
/// protocol (48..50), connection security policy (50..52).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Closed(u64);

const CODE_SHIFT: u32 = 32;
const GRPC_SHIFT: u32 = 42;
const REPORTER_SHIFT: u32 = 47;
const PROTOCOL_SHIFT: u32 = 48;
const SECURITY_SHIFT: u32 = 50;
/// The packed gRPC status of a request that has none (plain HTTP, or no trailers).
const GRPC_NONE: u64 = 31;
/// The highest status gRPC defines (`UNAUTHENTICATED`); clients treat any other as
/// `UNKNOWN` (2), and so do we, which also bounds the label's values.
const GRPC_MAX: u32 = 16;
const GRPC_UNKNOWN: u32 = 2;
/// HTTP status codes have three digits; anything else (and "no response") reads 0 as in Istio.
const CODE_MAX: u16 = 999;

const PROTOCOL_HTTP: u64 = 0;
const PROTOCOL_GRPC: u64 = 1;
const PROTOCOL_TCP: u64 = 2;

const SECURITY_UNKNOWN: u64 = 0;
const SECURITY_MTLS: u64 = 1;
const SECURITY_NONE: u64 = 2;

impl Closed {
    pub(crate) fn new(
        reporter: Reporter,
        protocol: Option<Protocol>,
        code: u16,
        grpc: Option<u32>,
        flags: ResponseFlags,
        mtls: bool,
    ) -> Closed {
        let code = if code > CODE_MAX { 0 } else { code as u64 };
        let grpc = match grpc {
            None => GRPC_NONE,
            Some(s) if s <= GRPC_MAX => s as u64,
            Some(_) => GRPC_UNKNOWN as u64,
        };
        let protocol = match protocol {
            Some(Protocol::Http) => PROTOCOL_HTTP,
            Some(Protocol::Grpc) => PROTOCOL_GRPC,
            None => PROTOCOL_TCP,
        };
        // Istio: "unknown when the report is from the source, since the security policy cannot be
        // properly populated" there; mutual_tls or none from the destination.
        let security = match (reporter, mtls) {
            (Reporter::Source, _) => SECURITY_UNKNOWN,
            (Reporter::Destination, true) => SECURITY_MTLS,
            (Reporter::Destination, false) => SECURITY_NONE,
        };
        Closed(
            flags.bits() as u64
                | code << CODE_SHIFT
                | grpc << GRPC_SHIFT
                | (reporter as u64) << REPORTER_SHIFT
                | protocol << PROTOCOL_SHIFT
                | security << SECURITY_SHIFT,
        )
    }

    /// The last-resort series of the cardinality guard: only reporter and protocol kept.
    fn catch_all(self) -> Closed {
        let keep = (1 << REPORTER_SHIFT) | (3 << PROTOCOL_SHIFT);
        Closed(self.0 & keep | GRPC_NONE << GRPC_SHIFT)
    }

    pub(crate) fn reporter(self) -> &'static str {
        if self.0 >> REPORTER_SHIFT & 1 == Reporter::Destination as u64 {
            "destination"
        } else {
            "source"
        }
    }

    pub(crate) fn protocol(self) -> &'static str {
        match self.0 >> PROTOCOL_SHIFT & 3 {
            PROTOCOL_HTTP => "http",
            PROTOCOL_GRPC => "grpc",
            _ => "tcp",
        }
    }

    pub(crate) fn is_grpc(self) -> bool {
        self.0 >> PROTOCOL_SHIFT & 3 == PROTOCOL_GRPC
    }

    pub(crate) fn response_code(self) -> u16 {
        (self.0 >> CODE_SHIFT & 0x3ff) as u16
    }

    /// The `grpc_response_status` value: `""` when there is none, as Istio reports it.
    pub(crate) fn grpc_status(self) -> Option<u8> {
        match self.0 >> GRPC_SHIFT & 0x1f {
            GRPC_NONE => None,
            s => Some(s as u8),
        }
    }

    pub(crate) fn flags(self) -> ResponseFlags {
        ResponseFlags::from_bits(self.0 as u32)
    }

    pub(crate) fn security_policy(self) -> &'static str {
        match self.0 >> SECURITY_SHIFT & 3 {
            SECURITY_MTLS => "mutual_tls",
            SECURITY_NONE => "none",
            _ => "unknown",
        }
    }
}

/// A series' identity. Peers and service are compared by pointer first (the usual case: the
/// proxy's own `Peer` and the cached peers are shared), then by hash and content.
pub(crate) struct Key {
    pub source: Peer,
    pub destination: Peer,
    pub service: DestinationService,
    pub closed: Closed,
}

/// A [`Key`] borrowed from a record: what the hot path hashes and compares, allocation-free.
#[derive(Clone, Copy)]
pub(crate) struct KeyRef<'a> {
    pub source: &'a Peer,
    pub destination: &'a Peer,
    pub service: &'a DestinationService,
    pub closed: Closed,
}

impl<'a> KeyRef<'a> {
    pub(crate) fn hash(&self) -> u64 {
        hash::words(&[
            self.source.hash64(),
            self.destination.hash64(),
            self.service.hash64(),
            self.closed.0,
        ])
    }

    pub(crate) fn matches(&self, key: &Key) -> bool {
        self.closed == key.closed
            && *self.source == key.source
            && *self.destination == key.destination
            && *self.service == key.service
    }

    pub(crate) fn to_key(self) -> Key {
        Key {
            source: self.source.clone(),
            destination: self.destination.clone(),
            service: self.service.clone(),
            closed: self.closed,
        }
    }

    /// Where a record goes when the table is full: the open-ended labels (workloads,
    /// principals, services…) read `overflow`, the closed-set ones are kept.
    pub(crate) fn overflow(self) -> KeyRef<'a> {
        KeyRef {
            source: Peer::overflow(),
            destination: Peer::overflow(),
            service: DestinationService::overflow(),
            closed: self.closed,
        }
    }

    /// Whether this is an overflow key (or a peer's metadata spells one, `overflow` in every
    /// field): such keys live only among the overflow series, so no label set is written twice.
    pub(crate) fn is_overflow(&self) -> bool {
        self.source == Peer::overflow()
            && self.destination == Peer::overflow()
            && self.service == DestinationService::overflow()
    }

    /// Where a record goes when the overflow series are full too: one series per reporter
    /// and protocol.
    pub(crate) fn catch_all(self) -> KeyRef<'a> {
        KeyRef {
            closed: self.closed.catch_all(),
            ..self.overflow()
        }
    }
}

/// What the series table stores.
pub(crate) trait Series: Send + Sync + 'static {
    fn new(key: Key, hash: u64) -> Self;
    fn key(&self) -> &Key;
    fn hash(&self) -> u64;
}

/// Bucket counts (not cumulative: one add per observation) and the sum.
pub(crate) struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }

    /// `bounds` has `N - 1` entries; the last bucket is `+Inf`.
    #[inline]
    fn observe(&self, bounds: &[u64], value: u64) {
        debug_assert_eq!(bounds.len() + 1, N);
        // Prometheus buckets are `le`: a value equal to a bound belongs to it.
        let i = bounds.partition_point(|b| *b < value);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    /// Per-bucket counts, their total and the sum, read now.
    pub(crate) fn read(&self) -> ([u64; N], u64, u64) {
        let counts: [u64; N] = std::array::from_fn(|i| self.buckets[i].load(Relaxed));
        (counts, counts.iter().sum(), self.sum.load(Relaxed))
    }
}

/// An HTTP or gRPC label set. The request count is the duration histogram's count, so a
/// request costs three bucket adds and three sum adds (plus two for gRPC messages).
pub(crate) struct HttpSeries {
    key: Key,
    hash: u64,
    pub labels: RenderedLabels,
    pub duration_us: Histogram<20>,
    pub request_bytes: Histogram<9>,
    pub response_bytes: Histogram<9>,
    pub request_messages: AtomicU64,
    pub response_messages: AtomicU64,
}

impl HttpSeries {
    #[inline]
    pub(crate) fn record(
        &self,
        duration_us: u64,
        request_bytes: u64,
        response_bytes: u64,
        messages: Option<(u64, u64)>,
    ) {
        self.duration_us.observe(&DURATION_BOUNDS_US, duration_us);
        self.request_bytes.observe(&BYTES_BOUNDS, request_bytes);
        self.response_bytes.observe(&BYTES_BOUNDS, response_bytes);
        if let Some((sent, received)) = messages {
            self.request_messages.fetch_add(sent, Relaxed);
            self.response_messages.fetch_add(received, Relaxed);
        }
    }
}

impl Series for HttpSeries {
    fn new(key: Key, hash: u64) -> Self {
        HttpSeries {
            labels: RenderedLabels::new(&key, true),
            key,
            hash,
            duration_us: Histogram::new(),
            request_bytes: Histogram::new(),
            response_bytes: Histogram::new(),
            request_messages: AtomicU64::new(0),
            response_messages: AtomicU64::new(0),
        }
    }
    fn key(&self) -> &Key {
        &self.key
    }
    fn hash(&self) -> u64 {
        self.hash
    }
}

/// A TCP label set (Istio's TCP metrics have no response code or gRPC status).
pub(crate) struct TcpSeries {
    key: Key,
    hash: u64,
    pub labels: RenderedLabels,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub opened: AtomicU64,
    pub closed: AtomicU64,
}

impl Series for TcpSeries {
    fn new(key: Key, hash: u64) -> Self {
        TcpSeries {
            labels: RenderedLabels::new(&key, false),
            key,
            hash,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }
    fn key(&self) -> &Key {
        &self.key
    }
    fn hash(&self) -> u64 {
        self.hash
    }
}
