//! What `weft check` and `weft apply` accept is what the proxies put in force. Inputs a proxy
//! cannot build (header names and values, redirect and rewrite targets, methods, JWKS keys…),
//! files that are no text, and numbers out of range are refused by `weft check` with the file
//! and the line, and by a running mesh's `weft apply` (422, nothing changes), after which a
//! valid change still takes effect. A proxy that refuses a snapshot anyway (here a stand-in
//! speaking the proxies' protocol and refusing every snapshot) makes `weft apply` fail naming
//! it and its error, shows in `weft status`, and is not waited out.

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// One input a proxy would refuse: the file's name and bytes, the line `weft check` must point
/// at, and what the message must say (the field, or the reason).
struct Bad {
    file: &'static str,
    text: Vec<u8>,
    line: usize,
    says: &'static str,
    /// A routing or security resource (else a `kind: Mesh` document, checked alone, which a
    /// running mesh does not take through `weft apply` at all).
    routing: bool,
}

fn bad(file: &'static str, text: &str, line: usize, says: &'static str) -> Bad {
    Bad {
        file,
        text: text.as_bytes().to_vec(),
        line,
        says,
        routing: true,
    }
}

/// A VirtualService for `hello` with `rule` as its one `http` entry, which starts on line 7.
fn vs(rule: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: hello}}\nspec:\n  hosts: [hello]\n  http:\n{rule}"
    )
}

const ROUTE: &str = "    route: [{destination: {host: hello}}]\n";

fn inputs() -> Vec<Bad> {
    vec![
        bad(
            "empty-header-name.yaml",
            &vs(&format!(
                "  - headers:\n      request:\n        set:\n          \"\": x\n{ROUTE}"
            )),
            10,
            "spec.http[0].headers.request.set[]: VirtualService default/hello: \"\" is not an HTTP header name",
        ),
        bad(
            "header-name-with-a-space.yaml",
            &vs(&format!(
                "  - headers:\n      response:\n        add:\n          \"bad name\": x\n{ROUTE}"
            )),
            10,
            "spec.http[0].headers.response.add[bad name]",
        ),
        bad(
            "header-value-with-crlf.yaml",
            &vs(&format!(
                "  - headers:\n      request:\n        set:\n          x-a: \"one\\r\\nx-b: two\"\n{ROUTE}"
            )),
            10,
            "is not an HTTP header value",
        ),
        bad(
            "redirect-with-crlf.yaml",
            &vs("  - redirect:\n      uri: \"/new\\r\\nSet-Cookie: a=b\"\n"),
            8,
            "spec.http[0].redirect.uri",
        ),
        bad(
            "redirect-to-a-bad-host.yaml",
            &vs("  - redirect:\n      uri: /new\n      authority: \"bad host\"\n"),
            9,
            "spec.http[0].redirect.authority",
        ),
        bad(
            "rewrite-to-a-bad-authority.yaml",
            &vs(&format!("  - rewrite:\n      authority: \"a b\"\n{ROUTE}")),
            8,
            "spec.http[0].rewrite.authority",
        ),
        bad(
            "method-with-a-space.yaml",
            &vs(&format!(
                "  - match:\n    - method: {{exact: \"GET ME\"}}\n{ROUTE}"
            )),
            8,
            "\"GET ME\" is not an HTTP method",
        ),
        bad(
            "header-match-name.yaml",
            &vs(&format!(
                "  - match:\n    - headers:\n        \"x y\": {{exact: a}}\n{ROUTE}"
            )),
            9,
            "spec.http[0].match[0].headers[x y]",
        ),
        // What no single field says: after an exact match an empty rewrite leaves no path.
        bad(
            "rewrite-to-no-path.yaml",
            &vs(&format!(
                "  - match:\n    - uri: {{exact: /a}}\n    rewrite:\n      uri: \"\"\n{ROUTE}"
            )),
            7,
            "spec.http[0]: VirtualService default/hello: a proxy would refuse it: rewrite",
        ),
        bad(
            "httproute-header-value.yaml",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: hello}\nspec:\n  parentRefs: [{group: \"\", kind: Service, name: hello}]\n  rules:\n  - filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier:\n        set:\n        - name: x-a\n          value: \"a\\nb\"\n    backendRefs: [{name: hello, port: 80}]\n",
            12,
            "spec.rules[0].filters[0].requestHeaderModifier.set[0].value",
        ),
        bad(
            "consistent-hash-header.yaml",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: hello}\nspec:\n  host: hello\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpHeaderName: \"x y\"\n",
            9,
            "consistentHash.httpHeaderName",
        ),
        bad(
            "jwks-curve.yaml",
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt}\nspec:\n  jwtRules:\n  - issuer: https://issuer.example\n    jwks: '{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-999\",\"x\":\"AAAA\",\"y\":\"AAAA\"}]}'\n",
            7,
            "spec.jwtRules[0].jwks: RequestAuthentication default/jwt: the JWKS has no usable signing key (RSA, EC P-256/P-384 or Ed25519): keys[0]: EC curve \"P-999\"",
        ),
        bad(
            "jwks-hmac.yaml",
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt}\nspec:\n  jwtRules:\n  - issuer: https://issuer.example\n    jwks: '{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}'\n",
            7,
            "a symmetric (oct) key",
        ),
        Bad {
            file: "nul.yaml",
            text: vec![0; 64],
            line: 1,
            says: "not YAML or JSON text: it holds the control character U+0000",
            routing: true,
        },
        Bad {
            file: "latin1.yaml",
            text: b"apiVersion: v1\nkind: caf\xe9\n".to_vec(),
            line: 2,
            says: "not UTF-8 text: byte 0xE9",
            routing: true,
        },
        Bad {
            file: "replicas.yaml",
            text: "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: many}\nspec:\n  services:\n  - name: hello\n    port: 80\n    workloads:\n    - name: hello-v1\n      replicas: 4294967295\n      command: [weft, demo, echo]\n".into(),
            line: 10,
            says: "spec.services[0].workloads[0].replicas: 4294967295 replicas: at most 64",
            routing: false,
        },
    ]
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes every input into `dir`; returns each with its path.
fn written(dir: &Path) -> Vec<(PathBuf, Bad)> {
    inputs()
        .into_iter()
        .map(|b| {
            let path = dir.join(b.file);
            std::fs::write(&path, &b.text).unwrap();
            (path, b)
        })
        .collect()
}

#[test]
fn check_refuses_what_a_proxy_would_refuse_with_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = dir.path().join("mesh.yaml");
    std::fs::write(&mesh, mesh_yaml("parity", &[("hello", 1, "")])).unwrap();
    let ok = weft_in(dir.path(), &["check", mesh.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    for (path, b) in written(dir.path()) {
        let path_arg = path.to_str().unwrap();
        let args = if b.routing {
            vec!["check", mesh.to_str().unwrap(), path_arg]
        } else {
            vec!["check", path_arg]
        };
        let out = weft_in(dir.path(), &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", b.file);
        let at = format!("{}:{}:", path.display(), b.line);
        let line = err
            .lines()
            .find(|l| l.contains(&at))
            .unwrap_or_else(|| panic!("{}: no error at {at}:\n{err}", b.file));
        assert!(line.contains(b.says), "{}: {line}", b.file);
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("ok"),
            "{}",
            b.file
        );
    }
}

/// `POST /apply` with the mesh's credential: the status and the body.
async fn post_apply(mesh: &Mesh, file: &str, yaml: &str) -> (u16, String) {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let api: SocketAddr = mesh.status["api"].as_str().unwrap().parse().unwrap();
    let name = mesh.status["mesh"].as_str().unwrap();
    let token =
        std::fs::read_to_string(mesh.home.join("meshes").join(format!("{name}.token"))).unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let body = serde_json::json!({"file": file, "yaml": yaml}).to_string();
    let req = http::Request::post(format!("http://{api}/apply"))
        .header("authorization", format!("Bearer {}", token.trim()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let rsp = client.request(req).await.unwrap();
    let status = rsp.status().as_u16();
    let text = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&text).into_owned())
}

/// A VirtualService that sets `x-parity: VALUE` on requests to hello.
fn marking(value: &str) -> String {
    vs(&format!(
        "  - headers:\n      request:\n        set:\n          x-parity: {value}\n{ROUTE}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_mesh_refuses_them_and_a_valid_change_still_takes_effect() {
    let mesh = Mesh::up(&mesh_yaml("parity-apply", &[("hello", 1, "")]));
    let c = client();
    mesh.apply_yaml("mark.yaml", &marking("before"));
    let r = get(&c, mesh.ingress, "hello", "/").await.unwrap();
    assert_eq!(r.body["headers"]["x-parity"], "before", "{}", r.text);
    let resources = mesh.weft_ok(&["get", "-o", "json"]);
    let version = mesh.status_json(None)["version"].clone();

    for (path, b) in written(mesh.files.path())
        .into_iter()
        .filter(|(_, b)| b.routing)
    {
        let out =
            tokio::task::block_in_place(|| mesh.weft(&["apply", "-f", path.to_str().unwrap()]));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{}: {err}", b.file);
        let at = format!("{}:{}:", path.display(), b.line);
        assert!(
            err.lines().any(|l| l.contains(&at) && l.contains(b.says)),
            "{}: want {at} … {}:\n{err}",
            b.file,
            b.says
        );
        // Nothing changed: the same resources, the same snapshot.
        assert_eq!(
            mesh.weft_ok(&["get", "-o", "json"]),
            resources,
            "{}",
            b.file
        );
        assert_eq!(mesh.status_json(None)["version"], version, "{}", b.file);
    }
    // The API's own answer: 422, with the place.
    let (status, body) = post_apply(
        &mesh,
        "api.yaml",
        &vs(&format!(
            "  - headers:\n      request:\n        set:\n          \"bad name\": x\n{ROUTE}"
        )),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("api.yaml:10:"), "{body}");

    // A valid change after the refused ones takes effect, and every proxy runs it.
    mesh.apply_yaml("mark.yaml", &marking("after"));
    let r = get(&c, mesh.ingress, "hello", "/").await.unwrap();
    assert_eq!(r.body["headers"]["x-parity"], "after", "{}", r.text);
}

/// Speaks the proxies' control protocol as `instance` and refuses every snapshot it is sent
/// with `error`, as a proxy that cannot apply it does; runs until dropped.
struct Refuser {
    task: tokio::task::JoinHandle<()>,
}

impl Refuser {
    async fn connect(control: &str, instance: &str, error: &str) -> Refuser {
        use api::pb::{self, proxy_message::Msg};
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{control}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = pb::discovery_client::DiscoveryClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let hello = pb::Hello {
            service: "tester".into(),
            namespace: "default".into(),
            workload: "tester".into(),
            instance: instance.into(),
            mode: "client".into(),
            pid: std::process::id(),
            ..pb::Hello::default()
        };
        let send = |m: Msg| pb::ProxyMessage { msg: Some(m) };
        tx.send(send(Msg::Hello(hello))).await.unwrap();
        tx.send(send(Msg::Health(pb::Health {
            ready: true,
            ..pb::Health::default()
        })))
        .await
        .unwrap();
        let mut inbound = client
            .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let error = error.to_string();
        let task = tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(s) = m.snapshot {
                    let ack = pb::Ack {
                        version: s.version,
                        error: error.clone(),
                    };
                    if tx.send(send(Msg::Ack(ack))).await.is_err() {
                        return;
                    }
                }
            }
        });
        Refuser { task }
    }
}

impl Drop for Refuser {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_refuses_a_snapshot_fails_the_apply_names_itself_and_is_not_waited_out() {
    // Plaintext: the control stream takes every caller, so a stand-in can register.
    let mesh = Mesh::up_with(&mesh_yaml("refused", &[("hello", 1, "")]), &["--no-mtls"]);
    let c = client();
    let control = mesh.status["control"].as_str().unwrap().to_string();
    let why = "route VirtualService default/hello http[0]: this proxy cannot apply it";
    let refuser = Refuser::connect(&control, "refuser-0", why).await;

    // Its refusal shows in the status as soon as it answered the snapshot in force.
    let refused = eventually(true, || async {
        let st = tokio::task::block_in_place(|| mesh.status_json(None));
        st["nacks"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["instance"] == "refuser-0"))
    })
    .await;
    assert!(refused, "{}", mesh.status_json(None));
    let st = mesh.status_json(None);
    let nack = &st["nacks"][0];
    assert_eq!(nack["proxy"], "client refuser-0");
    assert_eq!(nack["error"], why);
    assert_eq!(nack["version"], st["version"]);
    assert_eq!(nack["config_version"], 0);
    assert_eq!(st["ready"], false);
    let table = mesh.weft_ok(&["status"]);
    assert!(
        table.contains(&format!(
            "error: client refuser-0 refused snapshot {}: {why}",
            st["version"]
        )),
        "{table}"
    );

    // `--wait` reports it at once rather than waiting out its timeout.
    let started = Instant::now();
    let out = tokio::task::block_in_place(|| mesh.weft(&["status", "--wait", "--timeout", "60s"]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stderr(&out).contains("client refuser-0: refused snapshot"),
        "{}",
        stderr(&out)
    );

    // An apply the stand-in refuses: in force for the real proxies, but `weft apply` fails,
    // naming the proxy and its error, as soon as every proxy answered.
    let file = mesh.files.path().join("mark.yaml");
    std::fs::write(&file, marking("refused")).unwrap();
    let started = Instant::now();
    let out = tokio::task::block_in_place(|| mesh.weft(&["apply", "-f", file.to_str().unwrap()]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}: {err}",
        started.elapsed()
    );
    assert!(
        err.contains("error: client refuser-0 refused snapshot") && err.contains(why),
        "{err}"
    );
    assert!(err.contains("but only 2 of 3 proxies run it"), "{err}");
    let r = get(&c, mesh.ingress, "hello", "/").await.unwrap();
    assert_eq!(r.body["headers"]["x-parity"], "refused", "{}", r.text);

    // Without it, every proxy runs the next change and `weft apply` succeeds.
    drop(refuser);
    let gone = eventually(true, || async {
        let st = tokio::task::block_in_place(|| mesh.status_json(None));
        st.get("nacks").is_none()
    })
    .await;
    assert!(gone, "{}", mesh.status_json(None));
    mesh.apply_yaml("mark.yaml", &marking("applied"));
    let r = get(&c, mesh.ingress, "hello", "/").await.unwrap();
    assert_eq!(r.body["headers"]["x-parity"], "applied", "{}", r.text);
}

/// `weft get` shows which resources are in force: one that was rejected (a Linkerd
/// AuthorizationPolicy whose `targetRef` is a list) says so, with the reason and its line, and
/// an unimplemented kind says it is ignored; the columns stay aligned with long names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shows_each_resource_state_and_why() {
    let name = "a-service-with-a-rather-long-name-indeed";
    let yaml = format!(
        "{}---\n{}---\n{}",
        mesh_yaml("get-states", &[(name, 1, "")]),
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: web-public\n  namespace: default\nspec:\n  targetRef:\n    - {group: policy.linkerd.io, kind: Server, name: web-http}\n  requiredAuthenticationRefs:\n    - {name: public, kind: NetworkAuthentication, group: policy.linkerd.io}\n",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: external-svc-https, namespace: default}\nspec: {hosts: [api.example.com]}\n",
    );
    let mesh = Mesh::up(&yaml);
    let json: serde_json::Value =
        serde_json::from_str(&mesh.weft_ok(&["get", "-o", "json"])).unwrap();
    let state = |n: &str| {
        let r = json
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing: {json}"));
        (
            r["state"].as_str().unwrap().to_string(),
            r["reasons"].clone(),
        )
    };
    assert_eq!(state("get-states").0, "applied");
    let (s, why) = state("web-public");
    assert_eq!(s, "rejected", "{json}");
    let why = why[0].as_str().unwrap();
    assert!(
        why.contains("mesh.yaml:") && why.contains("spec.targetRef: "),
        "{why}"
    );
    assert_eq!(state("external-svc-https").0, "ignored", "{json}");

    let table = mesh.weft_ok(&["get"]);
    let lines: Vec<&str> = table.lines().collect();
    let header = lines[0];
    let state_col = header.find("STATE").unwrap();
    let source_col = header.find("SOURCE").unwrap();
    let row = |n: &str| {
        *lines
            .iter()
            .find(|l| l.contains(&format!("/{n} ")))
            .unwrap_or_else(|| panic!("{n}: {table}"))
    };
    // Every column starts where its header does, whatever the lengths of the names.
    for (n, want) in [
        ("get-states", "applied"),
        ("web-public", "rejected"),
        ("external-svc-https", "ignored"),
    ] {
        let r = row(n);
        assert_eq!(&r[state_col..state_col + want.len()], want, "{table}");
        let source = &r[source_col..];
        assert!(
            !source.starts_with(' ') && source.contains("mesh.yaml:"),
            "{table}"
        );
    }
    // The reason follows the rejected resource's line, indented.
    let at = lines
        .iter()
        .position(|l| l.contains("/web-public "))
        .unwrap();
    assert!(
        lines[at + 1].starts_with("  ") && lines[at + 1].contains("spec.targetRef"),
        "{table}"
    );
}
