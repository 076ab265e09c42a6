//! The scrape side: a `prometheus_client` collector that writes every series with Istio's
//! metric names, types, label names and bucket bounds. Counters are declared without their
//! `_total` suffix, which the OpenMetrics encoder appends to each sample
//! (`# TYPE istio_requests counter` / `istio_requests_total{…} 3`).

use super::labels::RenderedLabels;
use super::series::{Series, TcpSeries, BYTES_BOUNDS, DURATION_BOUNDS_US};
use super::Telemetry;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The registered collector: a handle on the recorder.
#[derive(Debug)]
pub(crate) struct TelemetryCollector(pub Telemetry);

impl Collector for TelemetryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let inner = &self.0 .0;
        let http = inner.http.snapshot();
        let tcp = inner.tcp.snapshot();
        let http = || http.iter().flat_map(|t| t.iter());
        let tcp = || tcp.iter().flat_map(|t| t.iter());

        {
            let mut m = encoder.encode_descriptor(
                "istio_requests",
                "Requests handled, counted once by each reporting proxy.",
                None,
                MetricType::Counter,
            )?;
            for s in http() {
                let (_, count, _) = s.duration_us.read();
                if count > 0 {
                    counter(&mut m, &s.labels, count)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "istio_request_duration_milliseconds",
                "Request duration in milliseconds.",
                None,
                MetricType::Histogram,
            )?;
            let bounds = DURATION_BOUNDS_US.map(|us| us as f64 / 1000.0);
            for s in http() {
                let (counts, count, sum_us) = s.duration_us.read();
                if count > 0 {
                    let sum = sum_us as f64 / 1000.0;
                    histogram(&mut m, &s.labels, &bounds, &counts, count, sum)?;
                }
            }
        }
        for (name, help, request) in [
            (
                "istio_request_bytes",
                "HTTP request body sizes in bytes.",
                true,
            ),
            (
                "istio_response_bytes",
                "HTTP response body sizes in bytes.",
                false,
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            let bounds = BYTES_BOUNDS.map(|b| b as f64);
            for s in http() {
                let h = if request {
                    &s.request_bytes
                } else {
                    &s.response_bytes
                };
                let (counts, count, sum) = h.read();
                if count > 0 {
                    histogram(&mut m, &s.labels, &bounds, &counts, count, sum as f64)?;
                }
            }
        }
        for (name, help, request) in [
            (
                "istio_request_messages",
                "gRPC messages sent by clients.",
                true,
            ),
            (
                "istio_response_messages",
                "gRPC messages sent by servers.",
                false,
            ),
        ] {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in http().filter(|s| s.key().closed.is_grpc()) {
                let v = if request {
                    &s.request_messages
                } else {
                    &s.response_messages
                };
                counter(&mut m, &s.labels, v.load(Relaxed))?;
            }
        }
        type Field = fn(&TcpSeries) -> &AtomicU64;
        let tcp_metrics: [(&str, &str, Field); 4] = [
            (
                "istio_tcp_sent_bytes",
                "Bytes sent during response (to the downstream side) on TCP connections.",
                |s| &s.sent,
            ),
            (
                "istio_tcp_received_bytes",
                "Bytes received during request (from the downstream side) on TCP connections.",
                |s| &s.received,
            ),
            (
                "istio_tcp_connections_opened",
                "TCP connections opened.",
                |s| &s.opened,
            ),
            (
                "istio_tcp_connections_closed",
                "TCP connections closed.",
                |s| &s.closed,
            ),
        ];
        for (name, help, field) in tcp_metrics {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in tcp() {
                counter(&mut m, &s.labels, field(s).load(Relaxed))?;
            }
        }
        encoder
            .encode_descriptor(
                "weft_telemetry_dropped_series",
                "Requests and connections counted in an overflow series because the Istio metrics already had the maximum number of label sets.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<(), _, u64>(&self.0.dropped(), None)?;
        encoder
            .encode_descriptor(
                "weft_telemetry_series",
                "Label sets the Istio metrics hold (HTTP and TCP, overflow series included).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&(self.0.series() as i64))?;
        Ok(())
    }
}

fn counter(m: &mut MetricEncoder<'_>, labels: &RenderedLabels, value: u64) -> fmt::Result {
    m.encode_family(labels)?
        .encode_counter::<(), _, u64>(&value, None)
}

fn histogram<const N: usize>(
    m: &mut MetricEncoder<'_>,
    labels: &RenderedLabels,
    bounds: &[f64],
    counts: &[u64; N],
    count: u64,
    sum: f64,
) -> fmt::Result {
    // The encoder accumulates the per-bucket counts and writes `f64::MAX` as `+Inf`.
    let buckets: [(f64, u64); N] =
        std::array::from_fn(|i| (bounds.get(i).copied().unwrap_or(f64::MAX), counts[i]));
    m.encode_family(labels)?
        .encode_histogram::<()>(sum, count, &buckets, None)
}
