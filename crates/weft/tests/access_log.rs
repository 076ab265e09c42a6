//! Access logs end to end: off by default; `weft up --access-log json` turns them on for every
//! proxy (a JSON line per request and side, with Envoy's fields); a service annotated
//! `config.linkerd.io/access-log: apache` (or `weft.dev/access-log`) gets Common Log Format lines
//! from its own sidecars only. Proxies write them on stdout, which `weft up` forwards to its
//! stderr prefixed with the process's name.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The lines of `weft up`'s stderr from `process` (`ingress`, `a-v1-0 proxy`…).
fn lines_of(mesh: &Mesh, process: &str) -> Vec<String> {
    let prefix = format!("[{process}] ");
    mesh.stderr()
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// The access-log lines (Apache or JSON) among what `process` printed.
fn log_lines(mesh: &Mesh, process: &str) -> Vec<String> {
    lines_of(mesh, process)
        .into_iter()
        .filter(|l| l.starts_with("127.0.0.1 - ") || l.starts_with('{'))
        .collect()
}

/// Services a and b (one replica each), each with the annotation given, if any.
fn annotated(
    name: &str,
    a: impl Into<Option<(&'static str, &'static str)>>,
    b: impl Into<Option<(&'static str, &'static str)>>,
) -> String {
    let mut yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\nspec:\n  ingress: 127.0.0.1:0\n  services:\n"
    );
    for (svc, annotation) in [("a", a.into()), ("b", b.into())] {
        yaml.push_str(&format!("  - name: {svc}\n    port: 80\n"));
        if let Some((k, v)) = annotation {
            yaml.push_str(&format!("    annotations: {{{k}: {v}}}\n"));
        }
        yaml.push_str(&format!(
            "    workloads:\n    - name: {svc}-v1\n      labels: {{app: {svc}, version: v1}}\n      replicas: 1\n      command: [weft, demo, echo, --service, {svc}, --version, v1]\n"
        ));
    }
    yaml
}

/// The JSON access-log lines of `process` that name `request_id`, once there are `n`.
fn json_lines(mesh: &Mesh, process: &str, request_id: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<serde_json::Value> = lines_of(mesh, process)
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["x_request_id"] == request_id)
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{process}: {} access-log lines for {request_id}, not {n}:\n{}",
            found.len(),
            mesh.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn get_id(mesh: &Mesh, host: &str, path: &str, request_id: &str) -> u16 {
    let req = http::Request::get(format!("http://{}{path}", mesh.ingress))
        .header("host", host)
        .header("user-agent", "weft-log-test/1")
        .header("x-request-id", request_id)
        .header("x-forwarded-for", "203.0.113.9")
        .body(http_body_util::Empty::new())
        .unwrap();
    let rsp = client().request(req).await.unwrap();
    let status = rsp.status().as_u16();
    http_body_util::BodyExt::collect(rsp.into_body())
        .await
        .unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_wide_json_lines_have_envoys_fields_one_per_request_and_side() {
    let mesh = Mesh::up_with(
        &mesh_yaml("alog-json", &[("a", 1, "")]),
        &["--access-log", "json"],
    );
    for i in 0..3 {
        assert_eq!(
            get_id(&mesh, "a", &format!("/items/{i}?q=1"), &format!("rid-{i}")).await,
            200
        );
    }
    assert_eq!(get_id(&mesh, "nosuch", "/x", "rid-nr").await, 404);

    for i in 0..3 {
        let rid = format!("rid-{i}");
        let path = format!("/items/{i}?q=1");
        let ingress = json_lines(&mesh, "ingress", &rid, 1);
        let inbound = json_lines(&mesh, "a-v1-0 proxy", &rid, 1);
        assert_eq!(
            (ingress.len(), inbound.len()),
            (1, 1),
            "one line per request and side"
        );
        let (out, inb) = (&ingress[0], &inbound[0]);
        for l in [out, inb] {
            assert_eq!(l["method"], "GET");
            assert_eq!(l["path"], path);
            assert_eq!(l["response_code"], 200);
            assert_eq!(l["response_flags"], "-");
            assert_eq!(l["authority"], "a");
            assert_eq!(l["user_agent"], "weft-log-test/1");
            assert_eq!(l["x_forwarded_for"], "203.0.113.9");
            assert_eq!(l["upstream_cluster"], "a.default.svc.cluster.local");
            assert_eq!(l["bytes_received"], 0);
            assert!(l["bytes_sent"].as_u64().unwrap() > 0, "{l}");
            assert!(l["duration"].as_u64().is_some(), "{l}");
            let start = l["start_time"].as_str().unwrap();
            assert!(start.len() == 24 && start.ends_with('Z'), "{start}");
            assert!(l["downstream_remote_address"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:"));
        }
        assert_eq!(out["direction"], "outbound");
        assert_eq!(out["protocol"], "HTTP/1.1");
        assert_eq!(inb["direction"], "inbound");
        assert_eq!(inb["protocol"], "HTTP/2");
        // The ingress went to A's sidecar; A's sidecar to its app.
        let a = mesh.status["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["instance"] == "a-v1-0")
            .unwrap()
            .clone();
        assert_eq!(out["upstream_host"], a["inbound"], "{a}");
        assert_eq!(inb["upstream_host"], a["app"], "{a}");
        // Identities the mTLS handshake proved.
        let ingress_id = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway";
        let a_id = "spiffe://cluster.local/ns/default/sa/a";
        assert_eq!(out["upstream_identity"], a_id);
        assert_eq!(out["downstream_identity"], ingress_id);
        assert_eq!(inb["downstream_identity"], ingress_id);
        assert_eq!(inb["upstream_identity"], a_id);
    }
    let nr = json_lines(&mesh, "ingress", "rid-nr", 1);
    assert_eq!(nr[0]["response_code"], 404);
    assert_eq!(nr[0]["response_flags"], "NR");
    assert_eq!(nr[0]["upstream_host"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annotated_service_logs_in_apache_format_and_the_others_do_not() {
    let yaml = annotated(
        "alog-apache",
        ("config.linkerd.io/access-log", "apache"),
        None,
    );
    let mesh = Mesh::up(&yaml);
    assert_eq!(
        get_id(&mesh, "a", "/fetch?url=http://b/x", "rid-apache").await,
        200
    );

    // A's sidecar logs both sides of the request: the ingress's call in, and A's call to B out.
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines = log_lines(&mesh, "a-v1-0 proxy");
        if lines.len() >= 2 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), 2, "{}", mesh.stderr());
    // host ident authuser [date] "request line" status bytes
    let clf = |l: &str| {
        let (head, rest) = l.split_once(" [").unwrap();
        let (date, rest) = rest.split_once("] \"").unwrap();
        let (request, rest) = rest.split_once("\" ").unwrap();
        let (status, bytes) = rest.split_once(' ').unwrap();
        assert_eq!(date.len(), "01/May/2024:12:00:00 +0000".len(), "{l}");
        assert!(bytes.parse::<u64>().unwrap() > 0, "{l}");
        (head.to_string(), request.to_string(), status.to_string())
    };
    let mut seen: Vec<_> = lines.iter().map(|l| clf(l)).collect();
    seen.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        seen,
        vec![
            (
                "127.0.0.1 - spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"
                    .to_string(),
                "GET /fetch?url=http://b/x HTTP/2".to_string(),
                "200".to_string()
            ),
            (
                "127.0.0.1 - spiffe://cluster.local/ns/default/sa/a".to_string(),
                "GET /x HTTP/1.1".to_string(),
                "200".to_string()
            ),
        ]
    );
    // B's sidecar and the ingress keep theirs off: their /config says so (each proxy reports
    // the format it logs in), and they printed no line for the request.
    assert_eq!(
        access_log_formats(&mesh).await,
        [
            ("a-v1-0", Some("apache")),
            ("b-v1-0", None),
            ("ingress", None)
        ]
        .map(|(p, f)| (p.to_string(), f.map(str::to_string)))
    );
    assert!(
        log_lines(&mesh, "b-v1-0 proxy").is_empty(),
        "{}",
        mesh.stderr()
    );
    assert!(log_lines(&mesh, "ingress").is_empty(), "{}", mesh.stderr());
}

/// Each proxy's access-log format as its admin `/config` reports it, by instance (sorted).
async fn access_log_formats(mesh: &Mesh) -> Vec<(String, Option<String>)> {
    let mut out: Vec<_> = from_every_proxy(&client(), &mesh.status, "/config")
        .await
        .into_iter()
        .map(|(who, config)| (who, config["access_log"].as_str().map(str::to_string)))
        .collect();
    out.sort();
    out
}

/// `weft up --access-log apache` turns Apache lines on for every proxy; a service annotated
/// `weft.dev/access-log: json` gets JSON instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_wide_format_and_weft_s_own_annotation() {
    let yaml = annotated("alog-mixed", None, ("weft.dev/access-log", "json"));
    let mesh = Mesh::up_with(&yaml, &["--access-log", "apache"]);
    assert_eq!(
        access_log_formats(&mesh).await,
        [
            ("a-v1-0", Some("apache")),
            ("b-v1-0", Some("json")),
            ("ingress", Some("apache"))
        ]
        .map(|(p, f)| (p.to_string(), f.map(str::to_string)))
    );
    assert_eq!(
        get_id(&mesh, "a", "/fetch?url=http://b/x", "rid-mixed").await,
        200
    );
    // B's sidecar: one JSON line (its inbound side) for the request.
    let b = json_lines(&mesh, "b-v1-0 proxy", "rid-mixed", 1);
    assert_eq!(b[0]["path"], "/x", "{b:?}");
    // The ingress: an Apache line for the request it took in.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ingress = loop {
        let lines: Vec<String> = log_lines(&mesh, "ingress")
            .into_iter()
            .filter(|l| l.contains("/fetch?url=http://b/x"))
            .collect();
        if !lines.is_empty() {
            break lines;
        }
        assert!(Instant::now() < deadline, "{}", mesh.stderr());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        ingress[0].starts_with("127.0.0.1 - ")
            && ingress[0].contains("\"GET /fetch?url=http://b/x HTTP/1.1\" 200 "),
        "{ingress:?}"
    );
}
