//! Traffic mirroring (Istio `mirror`, Gateway API `RequestMirror`): copies of a request go to
//! another backend, fire-and-forget, with `-shadow` appended to the host as Envoy does; their
//! answers are dropped and their failures fail nothing.

use super::fault::chance;
use super::replay::{clone_request, ReqBody};
use super::send::{ready_sender, send, Peers};
use crate::body::Body;
use crate::metrics::Metrics;
use crate::table::Backend;
use http::{Request, Uri};
use std::sync::Arc;
use std::time::Duration;

/// How long a mirrored request may take before it is abandoned.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends each mirror its share of copies of the request (`parts` as it goes upstream), when
/// the body can be copied.
pub(super) fn send_copies(
    mirrors: &[(Arc<Backend>, u32)],
    parts: &http::request::Parts,
    body: &ReqBody,
    metrics: &Metrics,
    peers: &Arc<Peers>,
) {
    for (mirror, per_million) in mirrors {
        if chance(*per_million) {
            if let Some(b) = body.copy() {
                spawn(mirror.clone(), clone_request(parts, b), metrics, peers);
            }
        }
    }
}

fn spawn(backend: Arc<Backend>, mut req: Request<Body>, metrics: &Metrics, peers: &Arc<Peers>) {
    let Some(u) = shadow_uri(req.uri()) else {
        return;
    };
    *req.uri_mut() = u;
    metrics.mirrors.inc();
    let peers = peers.clone();
    tokio::spawn(async move {
        let Some((_, ep)) = backend.pick(&[], None) else {
            return;
        };
        let ep = ep.clone();
        let in_flight = ep.start();
        let Ok(sender) = ready_sender(&ep, backend.policy.connect_timeout, &peers).await else {
            return;
        };
        let sent = send(&ep, sender, req, in_flight, false);
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
