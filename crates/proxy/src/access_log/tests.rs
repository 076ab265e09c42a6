//! Unit tests: the JSON and Apache lines, and dropping when the writer falls behind.

use super::*;
use crate::telemetry::PeerMetadata;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

fn peer(workload: &str, identity: Option<&str>) -> Peer {
    let id = identity.map(|i| model::Identity(i.to_string()));
    Peer::new(PeerMetadata::from_labels(
        workload,
        "default",
        &Default::default(),
        id.as_ref(),
    ))
}

fn entry() -> Entry {
    let req = Request::get("/items/7?color=red")
        .version(Version::HTTP_11)
        .header("host", "shop:8080")
        .header("user-agent", "curl/8")
        .header("x-request-id", "rid-1")
        .header("x-forwarded-for", "203.0.113.9")
        .body(())
        .unwrap();
    let mut request = Captured::of(&req, "127.0.0.1:50000".parse().unwrap(), 12);
    // 2024-05-01T12:00:00.123Z
    request.start = UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
    Entry {
        request,
        direction: "inbound",
        response_code: 503,
        response_flags: ResponseFlags::NONE.with(crate::flags::Flag::UpstreamConnectFailure),
        bytes_sent: 345,
        duration: Duration::from_millis(17),
        upstream_host: Some("127.0.0.1:9000".parse().unwrap()),
        service: DestinationService::new(&model::ServiceKey::new("shop", "default")),
        source: peer("web-v1", Some("spiffe://cluster.local/ns/default/sa/web")),
        destination: peer("shop-v1", None),
        trace_id: None,
    }
}

#[test]
fn a_json_line_has_envoys_fields() {
    let mut buf = Vec::new();
    format_line(AccessLogFormat::Json, &entry(), &mut buf);
    assert_eq!(buf.last(), Some(&b'\n'));
    assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1);
    let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    let expect = serde_json::json!({
        "start_time": "2024-05-01T12:00:00.123Z",
        "method": "GET",
        "path": "/items/7?color=red",
        "protocol": "HTTP/1.1",
        "response_code": 503,
        "response_flags": "UF",
        "bytes_received": 12,
        "bytes_sent": 345,
        "duration": 17,
        "upstream_host": "127.0.0.1:9000",
        "upstream_cluster": "shop.default.svc.cluster.local",
        "x_forwarded_for": "203.0.113.9",
        "user_agent": "curl/8",
        "x_request_id": "rid-1",
        "authority": "shop:8080",
        "downstream_remote_address": "127.0.0.1:50000",
        "downstream_identity": "spiffe://cluster.local/ns/default/sa/web",
        "upstream_identity": null,
        "direction": "inbound",
        "trace_id": null,
    });
    assert_eq!(v, expect);
}

#[test]
fn an_apache_line_is_common_log_format() {
    let mut buf = Vec::new();
    format_line(AccessLogFormat::Apache, &entry(), &mut buf);
    assert_eq!(
        String::from_utf8(buf).unwrap(),
        "127.0.0.1 - spiffe://cluster.local/ns/default/sa/web [01/May/2024:12:00:00 +0000] \
         \"GET /items/7?color=red HTTP/1.1\" 503 345\n"
    );
    let mut e = entry();
    e.bytes_sent = 0;
    e.source = peer("web-v1", None);
    let mut buf = Vec::new();
    format_line(AccessLogFormat::Apache, &e, &mut buf);
    let line = String::from_utf8(buf).unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.ends_with("\" 503 -\n"), "{line}");
}

/// A stdout nobody reads: every write waits for good.
struct Stuck(std::sync::mpsc::Receiver<()>);

impl Write for Stuck {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.recv();
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_writer_that_falls_behind_loses_lines_and_never_blocks_the_sender() {
    let (_hold, rx) = std::sync::mpsc::channel();
    let dropped = Counter::default();
    let log = AccessLog::to(AccessLogFormat::Json, dropped.clone(), Stuck(rx)).unwrap();
    let sent = 2 * QUEUE as u64;
    for _ in 0..sent {
        log.send(entry());
    }
    // Kept: the full queue, plus the one batch the writer took before its write blocked (at
    // most 60 KiB of lines, possibly none yet). Everything else was dropped, not waited for.
    let mut line = Vec::new();
    format_line(AccessLogFormat::Json, &entry(), &mut line);
    let batch = (60 * 1024 / line.len() + 1) as u64;
    let lost = dropped.get();
    let queue = QUEUE as u64;
    assert!(
        (queue - batch..=queue).contains(&lost),
        "dropped {lost} of {sent} (queue {queue}, a batch at most {batch})"
    );
}

#[test]
fn lines_reach_the_writer_one_per_request() {
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let out = Shared::default();
    let log = AccessLog::to(AccessLogFormat::Apache, Counter::default(), out.clone()).unwrap();
    for _ in 0..3 {
        log.send(entry());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        if text.lines().count() == 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
