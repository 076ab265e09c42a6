//! Traffic mirroring (Istio `mirror`, Gateway API `RequestMirror`): copies of a request go to
//! another backend, fire-and-forget, with `-shadow` appended to the host as Envoy does; their
//! answers are dropped and their failures fail nothing. A copy goes once the request's body has
//! all arrived (it is kept as it streams, [`super::replay`]); a body that outgrows the buffer
//! limit is not mirrored, and is counted as such.

use super::fault::chance;
use super::replay::{clone_request, Replay, Unreplayable};
use super::send::{ready_sender, send, Peers};
use crate::metrics::{Metrics, Skipped};
use crate::table::Backend;
use http::Uri;
use std::sync::Arc;
use std::time::Duration;

/// How long a mirrored request may take before it is abandoned (waiting for the original's
/// body included).
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// Draws which mirrors get a copy of this request (allocates only when one does).
pub(super) fn draw(mirrors: &[(Arc<Backend>, u32)]) -> Vec<Arc<Backend>> {
    mirrors
        .iter()
        .filter(|(_, per_million)| chance(*per_million))
        .map(|(m, _)| m.clone())
        .collect()
}

/// Sends each drawn mirror a copy of the request (`parts` as it goes upstream) once its body
/// has arrived, if it can be copied.
pub(super) fn send_copies(
    drawn: Vec<Arc<Backend>>,
    parts: &http::request::Parts,
    replay: &Replay,
    metrics: &Arc<Metrics>,
    peers: &Arc<Peers>,
) {
    for mirror in drawn {
        spawn(mirror, parts, replay.share(), metrics, peers);
    }
}

fn spawn(
    backend: Arc<Backend>,
    parts: &http::request::Parts,
    replay: Replay,
    metrics: &Arc<Metrics>,
    peers: &Arc<Peers>,
) {
    let Some(u) = shadow_uri(&parts.uri) else {
        return;
    };
    let mut head = clone_request(parts, crate::body::empty()).into_parts().0;
    head.uri = u;
    let peers = peers.clone();
    let metrics = metrics.clone();
    tokio::spawn(async move {
        let body = match tokio::time::timeout(MIRROR_TIMEOUT, replay.copy_when_whole()).await {
            Ok(Ok(b)) => b,
            Ok(Err(Unreplayable::TooLarge)) => {
                tracing::debug!(mirror = %backend.name, "request body over the buffer limit: not mirrored");
                metrics.replay_skipped(Skipped::mirror);
                return;
            }
            // The request broke off (or was never kept): there is nothing whole to copy.
            Ok(Err(_)) | Err(_) => return,
        };
        metrics.mirrors.inc();
        let req = http::Request::from_parts(head, body);
        let Some((_, ep)) = backend.pick(&[], None) else {
            return;
        };
        let ep = ep.clone();
        let in_flight = ep.start();
        let Ok(sender) = ready_sender(&ep, backend.policy.connect_timeout, &peers).await else {
            return;
        };
        let sent = send(&ep, sender, req, in_flight, false, true);
        if let Ok(Ok(rsp)) = tokio::time::timeout(MIRROR_TIMEOUT, sent).await {
            // Read the answer to the end so the stream closes cleanly, then drop it.
            let _ = tokio::time::timeout(
                MIRROR_TIMEOUT,
                http_body_util::BodyExt::collect(rsp.into_body()),
            )
            .await;
        }
    });
}

/// The URI a mirrored copy goes to: the same, with `-shadow` appended to the host, as Envoy
/// does (`reviews:9080` → `reviews-shadow:9080`).
pub fn shadow_uri(uri: &Uri) -> Option<Uri> {
    let a = uri.authority()?;
    let shadow = match a.port_u16() {
        Some(p) => format!("{}-shadow:{p}", a.host()),
        None => format!("{}-shadow", a.host()),
    };
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Uri::builder()
        .scheme("http")
        .authority(shadow.as_str())
        .path_and_query(pq)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    //! Unit tests: where mirrored copies go.
    use super::*;

    #[test]
    fn mirrors_go_to_the_shadow_host() {
        let u: Uri = "http://reviews:9080/a?b=1".parse().unwrap();
        assert_eq!(
            shadow_uri(&u).unwrap().to_string(),
            "http://reviews-shadow:9080/a?b=1"
        );
        let u: Uri = "http://reviews.default.svc.cluster.local/".parse().unwrap();
        assert_eq!(
            shadow_uri(&u).unwrap().to_string(),
            "http://reviews.default.svc.cluster.local-shadow/"
        );
    }
}
