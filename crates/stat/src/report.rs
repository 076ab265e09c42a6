//! The `weft.stat/v1` document: a window's rows of success rate, RPS, latency percentiles and
//! meshed and mTLS share, per service or workload.
//!
//! Its JSON schema is stable (fields may be added, never renamed or removed):
//!
//! ```text
//! {
//!   "schema": "weft.stat/v1",
//!   "mesh": "hello",
//!   "kind": "service",              // what the rows are: "service" or "workload"
//!   "window_s": 10.002,             // measured between the midpoints of the two readings
//!   "requested_window_s": 10.0,
//!   "start_ms": 1795651929017,      // Unix ms of the first and second reading (midpoints)
//!   "end_ms": 1795651939019,
//!   "rows": [{
//!     "name": "hello",              // the service, or the workload
//!     "namespace": "default",
//!     "service": "hello",           // the service (the workload's, for workload rows)
//!     "replicas": 2,                // ready replicas at the end of the window
//!     "sampled": 2,                 // proxies whose counters were read at both ends
//!     "requests": 2000,             // requests received in the window
//!     "succeeded": 1800,            // not answered 5xx
//!     "failed": 200,                // answered 5xx
//!     "success_rate": 0.9,          // null without requests
//!     "rps": 199.96,                // requests / window_s
//!     "latency_ms": {"p50": 2.1, "p95": 4.7, "p99": 9.1},   // null without requests
//!     "meshed_share": 1.0,          // null without requests
//!     "mtls_share": 1.0             // null without requests
//!   }],
//!   "warnings": []                  // proxies that could not be read, and why
//! }
//! ```

use serde::{Deserialize, Serialize};

/// The `schema` of the document.
pub const SCHEMA: &str = "weft.stat/v1";

/// The JSON document (`weft.stat/v1`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatReport {
    pub schema: String,
    pub mesh: String,
    pub kind: String,
    pub window_s: f64,
    pub requested_window_s: f64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub rows: Vec<StatRow>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StatRow {
    pub name: String,
    pub namespace: String,
    pub service: String,
    pub replicas: usize,
    pub sampled: usize,
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub success_rate: Option<f64>,
    pub rps: f64,
    pub latency_ms: Option<Percentiles>,
    pub meshed_share: Option<f64>,
    pub mtls_share: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}
