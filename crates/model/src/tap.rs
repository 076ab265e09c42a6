//! One request as a proxy's live tap reports it: what the proxy's admin `/tap` streams (one
//! JSON object per line) and `weft tap` / `weft top` read back.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// One finished request. Every field defaults when read, so events from a newer proxy with
/// fields added still read.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TapEvent {
    /// Unix time in ms when the request started.
    pub ts_ms: u64,
    /// `inbound` (the proxy's workload served it) or `outbound` (its workload sent it).
    pub direction: Cow<'static, str>,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub status: u16,
    pub latency_ms: f64,
    /// Response flags (`-` when none).
    pub flags: String,
    pub src_workload: String,
    pub src_identity: String,
    pub dst_workload: String,
    pub dst_identity: String,
    /// The destination service's FQDN.
    pub dst_service: String,
    pub mtls: bool,
    pub request_id: String,
    /// A gRPC call's `grpc-status` (from the answer's headers, or from its trailers: the event
    /// is then sent when they have gone by); `None` for other requests, or a call that ended
    /// without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
}

impl TapEvent {
    /// Whether the request failed as the live views count it: a 5xx, or a gRPC status but OK.
    pub fn failed(&self) -> bool {
        self.status >= 500 || self.grpc_status.is_some_and(|g| g != 0)
    }
}
