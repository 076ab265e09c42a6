//! Unit tests: status mappings, `grpc-timeout`, gRPC answers and the trailers' status.

use super::*;
use crate::flags::{self, Flag};
use http_body_util::BodyExt;

fn grpc_head(status: Option<&str>) -> Response<()> {
    let mut r = Response::builder().header(CONTENT_TYPE, "application/grpc+proto");
    if let Some(s) = status {
        r = r.header(STATUS, s);
    }
    r.body(()).unwrap()
}

#[test]
fn head_status_reads_trailers_only_responses() {
    assert_eq!(head_status(&grpc_head(Some("14"))), Some(503));
    assert_eq!(head_status(&grpc_head(Some("0"))), Some(200));
    assert_eq!(head_status(&grpc_head(Some("4"))), Some(504));
    assert_eq!(head_status(&grpc_head(Some("x"))), Some(500), "UNKNOWN");
    assert_eq!(
        head_status(&grpc_head(None)),
        None,
        "the status is in the trailers"
    );
    let plain = Response::builder().status(503).body(()).unwrap();
    assert_eq!(head_status(&plain), Some(503));
}

#[test]
fn grpc_timeouts() {
    let t = |v: &str| {
        let mut h = HeaderMap::new();
        h.insert(TIMEOUT, HeaderValue::from_str(v).unwrap());
        timeout(&h)
    };
    assert_eq!(t("1S"), Some(Duration::from_secs(1)));
    assert_eq!(t("250m"), Some(Duration::from_millis(250)));
    assert_eq!(t("2M"), Some(Duration::from_secs(120)));
    assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
    assert_eq!(t("100000u"), Some(Duration::from_millis(100)));
    assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
    for bad in ["", "S", "1", "1s", "123456789S", "-1S", "1.5S"] {
        assert_eq!(t(bad), None, "{bad}");
    }
}

#[tokio::test]
async fn proxy_answers_become_grpc_statuses_as_envoy_maps_them() {
    for (flag, want) in [
        (Flag::NoHealthyUpstream, 14),
        (Flag::UpstreamConnectFailure, 14),
        (Flag::Overflow, 14),
        (Flag::UpstreamTimeout, 4),
        (Flag::Rbac, 7),
        (Flag::Unauthorized, 16),
        (Flag::NoRoute, 12),
        (Flag::BadRequest, 13),
    ] {
        let mut rsp = flags::respond(flag, "no 100% ready endpoint");
        answer(&mut rsp);
        assert_eq!(rsp.status(), 200, "{flag:?}");
        let h = rsp.headers();
        assert_eq!(status(h), Some(want), "{flag:?}");
        assert_eq!(h[CONTENT_TYPE], "application/grpc");
        assert_eq!(h[MESSAGE], "no 100%25 ready endpoint");
        assert_eq!(flags::of(&rsp), Some(flag));
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty(), "a trailers-only answer");
    }
    // The upstream's own gRPC answer, even flagged (a delay was injected), is left alone.
    let mut up = Response::builder()
        .header(CONTENT_TYPE, "application/grpc")
        .header(flags::FLAG_HEADER, "DI")
        .body(body::full("x"))
        .unwrap();
    answer(&mut up);
    assert_eq!(status(up.headers()), None);
    // So is an answer no proxy made.
    let mut plain = Response::builder().status(503).body(body::empty()).unwrap();
    answer(&mut plain);
    assert_eq!(plain.status(), 503);
}

#[tokio::test]
async fn the_trailers_status_is_reported_once() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut trailers = HeaderMap::new();
    trailers.insert(STATUS, HeaderValue::from_static("14"));
    let b = http_body_util::StreamBody::new(futures::stream::iter([
        Ok::<_, body::BoxError>(Frame::data(Bytes::from_static(b"m"))),
        Ok(Frame::trailers(trailers)),
    ]));
    let rsp = Response::new(body::boxed(b));
    let s = seen.clone();
    let rsp = OnStatus::wrap(rsp, move |st| s.lock().unwrap().push(st));
    let collected = rsp.into_body().collect().await.unwrap();
    assert_eq!(status(collected.trailers().unwrap()), Some(14));
    assert_eq!(*seen.lock().unwrap(), [Some(14)]);
    // A body dropped before its end reports no status.
    let s = seen.clone();
    drop(OnStatus::wrap(Response::new(body::full("m")), move |st| {
        s.lock().unwrap().push(st)
    }));
    assert_eq!(*seen.lock().unwrap(), [Some(14), None]);
}

#[test]
fn te_trailers_survives_the_hop_by_hop_strip() {
    let mut h = HeaderMap::new();
    h.insert("te", HeaderValue::from_static("trailers"));
    crate::headers::strip_hop_by_hop(&mut h);
    assert_eq!(h["te"], "trailers", "gRPC servers refuse calls without it");
    h.insert("te", HeaderValue::from_static("gzip, trailers"));
    crate::headers::strip_hop_by_hop(&mut h);
    assert!(!h.contains_key("te"), "any other TE is hop-by-hop");
}
