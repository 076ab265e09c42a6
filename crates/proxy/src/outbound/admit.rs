//! Admission: a request takes one of its backend's in-flight slots (Istio's
//! `connectionPool.http.http2MaxRequests` when the backend has no connection pool of its own;
//! 503 `UO` when none is left) and pays into the backend's retry budget. A backend whose
//! `connectionPool` limits connections applies its limits as each attempt takes a connection
//! (`crate::policy::pool`).

use crate::body::Body;
use crate::flags::{self, Flag};
use crate::policy::Admitted;
use crate::table::Backend;
use http::Response;
use std::sync::Arc;

/// The request's slot, held until its answer; `Err`: the overflow answer.
pub(super) fn admit(backend: &Arc<Backend>) -> Result<Admitted, Box<Response<Body>>> {
    let Some(admitted) = backend.counters.admit(backend.policy.max_in_flight) else {
        return Err(Box::new(flags::respond(
            Flag::Overflow,
            format!(
                "upstream overflow: {} already has {} requests in flight (connectionPool http2MaxRequests)",
                backend.name,
                backend.policy.max_in_flight.unwrap_or_default()
            ),
        )));
    };
    if let Some(b) = &backend.counters.budget {
        b.deposit();
    }
    Ok(admitted)
}
