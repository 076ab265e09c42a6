//! Traffic statistics from the proxies' Prometheus metrics, as `weft stat`, `weft routes --stats`
//! and `weft top` show them. No I/O: the callers fetch `/metrics` text (or tapped events) and
//! print; this crate parses and computes.
//!
//! - [`prom`]: a parser for the Prometheus (and OpenMetrics) text format.
//! - [`rows`](mod@rows): a window's per-service or per-workload rows from two readings of the
//!   proxies: the deltas of the `reporter="destination"` series (what the replicas of a service
//!   received) summed over the replicas, as Prometheus's `sum(increase(…[window]))` would give.
//!   A success is a request not answered 5xx (as Istio's dashboards count it); meshed means a
//!   `source_principal` other than `unknown` (the caller proved a mesh identity); mTLS means
//!   `connection_security_policy="mutual_tls"`.
//! - [`edge_rows`]: the same deltas per caller and callee (service or workload): the edges of
//!   the dashboard's graph.
//! - [`quantile`]: Prometheus's `histogram_quantile` interpolation over bucket counts (the
//!   rows' latency percentiles come from the deltas of
//!   `istio_request_duration_milliseconds_bucket`).
//! - [`sketch`]: quantiles of single observations in bounded memory.
//! - [`report`]: the `weft.stat/v1` document and its stable JSON schema.

pub mod prom;
pub mod quantile;
pub mod report;
pub mod rows;
pub mod sketch;

pub use quantile::{bucket_counts_quantile, histogram_quantile};
pub use report::{Percentiles, StatReport, StatRow, SCHEMA};
pub use rows::{edge_rows, rows, EdgeRow, Kind, Reading, Replica};
pub use sketch::Sketch;
