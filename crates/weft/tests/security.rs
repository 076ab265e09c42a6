//! End-to-end mTLS through real proxies and real handshakes: the mesh CA issues every proxy a
//! SPIFFE certificate, proxies talk mTLS, the app sees the identity the handshake proved, a
//! client certificate from another CA is refused (and counted), one from the mesh CA is taken,
//! and certificates rotate under load without a failed request.

mod common;

use common::*;
use control::ca::{Ca, CaConfig};
use http_body_util::{BodyExt, Empty};
use model::Identity;
use proxy::tls::Credentials;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn addr(v: &serde_json::Value) -> SocketAddr {
    v.as_str().unwrap().parse().unwrap()
}

/// An mTLS HTTP/2 GET to a sidecar's inbound port, as a peer proxy would send it.
async fn mtls_get(
    creds: &std::sync::Arc<Credentials>,
    inbound: SocketAddr,
    expected: &Identity,
) -> Result<serde_json::Value, String> {
    let req = http::Request::get("http://hello/anything")
        .header(
            "x-weft-client",
            "spiffe://cluster.local/ns/default/sa/forged",
        )
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let rsp = mtls_send(creds, inbound, expected, req).await?;
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    Ok(serde_json::from_slice(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_speak_mtls_and_refuse_certificates_of_another_ca() {
    let mesh = Mesh::up(&mesh_yaml("mtls", &[("hello", 2, "")]));
    let c = client();
    let hello = workload(&mesh.status, "hello-v1-0");
    let inbound = addr(&hello["inbound"]);
    let admin = addr(&hello["admin"]);
    let hello_id = Identity::spiffe("default", "hello");

    // Through the ingress: the app sees the ingress's identity, proven by the handshake.
    let r = get(&c, mesh.ingress, "hello", "/anything").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["headers"]["x-weft-client"],
        "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway"
    );
    // Both replicas answer through the ingress: two endpoints, one edge.
    let mut replicas = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let r = get(&c, mesh.ingress, "hello", "/").await.unwrap();
        replicas.insert(r.body["instance"].as_str().unwrap_or_default().to_string());
        if replicas.len() == 2 {
            break;
        }
    }
    assert_eq!(replicas.len(), 2, "{replicas:?}");

    // `weft identity` shows the chain, the SPIFFE SAN and the expiry.
    let out = mesh.weft(&["identity", "hello"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("identity:   spiffe://cluster.local/ns/default/sa/hello"),
        "{text}"
    );
    assert!(
        text.contains("SAN:      URI:spiffe://cluster.local/ns/default/sa/hello"),
        "{text}"
    );
    assert!(text.contains("trust bundle[0]:"), "{text}");

    // Plaintext (PERMISSIVE by default) is served, but a claimed identity is not believed.
    let r = get(&c, inbound, "hello", "/anything").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body["headers"]["x-weft-client"], serde_json::Value::Null);

    // A client certificate from the mesh CA: accepted; the app sees that identity, not the
    // header the client sent.
    let ca = Ca::open(&mesh.ca_dir(), CaConfig::default()).unwrap();
    let tester = Identity::spiffe("default", "tester");
    let good = signed_credentials(&ca, &tester, ca.bundle());
    let seen = mtls_get(&good, inbound, &hello_id).await.unwrap();
    assert_eq!(seen["headers"]["x-weft-client"], tester.0.as_str());

    // A certificate from another CA (the client trusts the mesh root, so only the server's
    // check can refuse it): refused at the handshake, counted with its reason.
    let other = Ca::generate(CaConfig::default()).unwrap();
    let mut bundle = ca.bundle();
    bundle.extend(other.bundle());
    let bad = signed_credentials(&other, &tester, bundle);
    assert!(mtls_get(&bad, inbound, &hello_id).await.is_err());
    // In TLS 1.3 the client is done with its side before the server has judged its
    // certificate: the refusal may be counted a moment after the client saw it.
    let refused = eventually(1.0, || {
        metric_sum(
            &c,
            admin,
            "weft_tls_handshake_failures_total{direction=\"inbound\",reason=\"unknown_ca\"",
        )
    })
    .await;
    assert_eq!(refused, 1.0);

    // A client that expects another identity refuses the server: a client proxy never talks
    // to an endpoint that is not who the mesh says it is.
    let err = mtls_get(&good, inbound, &Identity::spiffe("default", "billing"))
        .await
        .unwrap_err();
    assert!(
        err.contains("identity") || err.contains("certificate"),
        "{err}"
    );

    // The guide's test-mtls tool: every edge between meshed workloads was mTLS; the plaintext
    // call from outside the mesh is listed, not failed.
    let out = mesh.weft(&["check", "--mtls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ingress_edge = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway → spiffe://cluster.local/ns/default/sa/hello: mTLS";
    assert_eq!(
        text.matches(ingress_edge).count(),
        1,
        "one line for the edge, however many replicas it reached: {text}"
    );
    assert!(text.contains("plaintext from outside the mesh"), "{text}");
    let out = mesh.weft(&["edges", "-o", "json"]);
    let edges: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        edges
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["src"] == tester.0.as_str() && e["mtls"] == true),
        "{edges}"
    );
}

/// A mesh run with `--no-mtls`: proxies talk plaintext, and `weft check --mtls` says so and
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_mtls_fails_when_meshed_traffic_is_plaintext() {
    let mesh = Mesh::up_with(&mesh_yaml("plain", &[("hello", 1, "")]), &["--no-mtls"]);
    let c = client();
    let r = get(&c, mesh.ingress, "hello", "/").await.unwrap();
    assert_eq!(r.status, 200);
    let out = mesh.weft(&["check", "--mtls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("→ spiffe://cluster.local/ns/default/sa/hello: NOT mTLS"),
        "{text}"
    );
}

/// With certificates living 3 s (renewed at ~70%), a steady load through ingress → sidecar runs
/// across several rotations of both proxies without a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_a_failed_request() {
    let mesh = Mesh::up_with(
        &mesh_yaml("rotate", &[("hello", 2, "")]),
        &["--cert-ttl", "3s"],
    );
    let c = client();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, ingress) = (c.clone(), mesh.ingress);
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            // Bounded: at most 10 s or 20,000 requests per client.
            for _ in 0..20_000 {
                if started.elapsed() > Duration::from_secs(10) {
                    break;
                }
                match get(&c, ingress, "hello", "/").await {
                    Ok(r) if r.status == 200 => ok += 1,
                    Ok(r) => failed.push(format!("{} {}", r.status, r.text)),
                    Err(e) => failed.push(format!("{e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, Vec::new());
    for t in tasks {
        let (o, f) = t.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 1000, "only {ok} requests");
    let status = mesh.status_json(None);
    for instance in ["hello-v1-0", "hello-v1-1"] {
        let admin = addr(&workload(&status, instance)["admin"]);
        let renewals = metric_sum(&c, admin, "weft_cert_renewals_total").await;
        assert!(
            renewals >= 3.0,
            "{instance} renewed {renewals} times in 10 s"
        );
    }
    let ingress_renewals = metric_sum(
        &c,
        addr(&status["ingress_admin"]),
        "weft_cert_renewals_total",
    )
    .await;
    assert!(
        ingress_renewals >= 3.0,
        "ingress renewed {ingress_renewals} times"
    );
}

/// Every proxy's certificate as its admin `/identity` shows it: (who, leaf issuer, roots).
async fn identities(c: &HttpClient, status: &serde_json::Value) -> Vec<(String, String, usize)> {
    from_every_proxy(c, status, "/identity")
        .await
        .into_iter()
        .map(|(who, id)| {
            (
                who,
                id["chain"][0]["issuer"].as_str().unwrap().to_string(),
                id["trust_bundle"].as_array().unwrap().len(),
            )
        })
        .collect()
}

/// Root rotation without downtime: under steady load, `weft ca rotate` puts the next root in
/// every proxy's trust bundle, then makes it sign; proxies move to it as they renew; `weft ca
/// retire` drops the old root. No request fails, and every proxy ends on the new root alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_rotates_under_load_without_a_failed_request() {
    let mesh = Mesh::up(&mesh_yaml("rootrot", &[("hello", 2, "")]));
    let c = client();
    let before = identities(&c, &mesh.status).await;
    let old_root = before[0].1.clone();
    for (who, issuer, roots) in &before {
        assert_eq!((issuer, *roots), (&old_root, 1), "{who}");
    }
    let ok = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, ingress, ok, stop) = (c.clone(), mesh.ingress, ok.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            // Bounded: at most 60 s or 100,000 requests.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                    break;
                }
                match get(&c, ingress, "hello", "/").await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed.push(format!("{} {}", r.status, r.text)),
                    Err(e) => failed.push(format!("{e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failed
        }));
    }
    let at_least = |n: usize, what: &str| {
        let ok = ok.clone();
        let what = what.to_string();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while ok.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "{what}: only {ok:?} requests");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let weft = |args: &'static [&'static str]| {
        let home = mesh.home.clone();
        tokio::task::spawn_blocking(move || weft_in(&home, args))
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    at_least(200, "before the rotation").await;
    // The CLI answers once every proxy trusts both roots.
    let rotate = weft(&["ca", "rotate"]).await.unwrap();
    assert!(rotate.status.success(), "{}", text(&rotate));
    assert!(
        text(&rotate).contains("all 3 proxies trust the 2-root bundle"),
        "{}",
        text(&rotate)
    );
    // Certificates live a day: every proxy renewed from the new root because the control plane
    // said so, and the CLI answered once they had.
    assert!(
        text(&rotate).contains("every proxy holds a certificate of the new root"),
        "{}",
        text(&rotate)
    );
    let now = identities(&c, &mesh.status).await;
    assert!(
        now.iter().all(|(_, issuer, _)| *issuer != old_root),
        "still on the old root: {now:?}"
    );
    let served = ok.load(Ordering::Relaxed);
    let retire = weft(&["ca", "retire"]).await.unwrap();
    assert!(retire.status.success(), "{}", text(&retire));
    at_least(served + 200, "after the retirement").await;
    stop.store(true, Ordering::Relaxed);
    let mut failed = Vec::new();
    for t in tasks {
        failed.extend(t.await.unwrap());
    }
    let ok = ok.load(Ordering::Relaxed);
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    // Every proxy: a leaf from the new root, and the new root alone in its bundle.
    let after = identities(&c, &mesh.status).await;
    let new_root = &after[0].1;
    assert_ne!(new_root, &old_root);
    for (who, issuer, roots) in &after {
        assert_eq!((issuer, *roots), (new_root, 1), "{who}: {after:?}");
    }
    eprintln!("{ok} requests through the rotation, none failed");
}

/// `--ca-cert/--ca-key` with `--intermediate` and `--trust-domain`: the mesh signs with an
/// intermediate under the operator's own root, every proxy's chain is leaf → intermediate
/// (→ that root, the one root in its bundle), the SPIFFE IDs carry the trust domain, and the
/// identity an app sees is the one the handshake proved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_root_signs_through_an_intermediate_in_its_trust_domain() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Operator Root CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let root = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.path().join("root.pem"), dir.path().join("root.key"));
    std::fs::write(&cert_file, root.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let mesh = Mesh::up_with(
        &mesh_yaml("opca", &[("hello", 1, "")]),
        &[
            "--ca-cert",
            cert_file.to_str().unwrap(),
            "--ca-key",
            key_file.to_str().unwrap(),
            "--intermediate",
            "--trust-domain",
            "example.org",
        ],
    );
    let c = client();
    let mut admins = vec![("ingress", mesh.status["ingress_admin"].clone())];
    admins.push((
        "hello-v1-0",
        workload(&mesh.status, "hello-v1-0")["admin"].clone(),
    ));
    for (who, admin) in admins {
        let r = get(&c, addr(&admin), "admin", "/identity").await.unwrap();
        assert_eq!(r.status, 200, "{who}: {}", r.text);
        let chain = r.body["chain"].as_array().unwrap();
        assert_eq!(chain.len(), 2, "{who}: leaf and intermediate: {}", r.body);
        let (leaf, issuer) = (&chain[0], &chain[1]);
        assert_eq!(leaf["issuer"], issuer["subject"], "{who}");
        assert_eq!(issuer["issuer"], "CN=Operator Root CA", "{who}");
        assert_eq!(issuer["is_ca"], true, "{who}");
        let bundle = r.body["trust_bundle"].as_array().unwrap();
        assert_eq!(bundle.len(), 1, "{who}");
        assert_eq!(bundle[0]["subject"], "CN=Operator Root CA", "{who}");
        let sans = leaf["subject_alt_names"].as_array().unwrap();
        assert!(
            sans.iter()
                .all(|s| s.as_str().unwrap().starts_with("URI:spiffe://example.org/")),
            "{who}: {sans:?}"
        );
    }
    let r = get(&c, mesh.ingress, "hello", "/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["headers"]["x-weft-client"],
        "spiffe://example.org/ns/istio-system/sa/istio-ingressgateway"
    );
    assert_eq!(mesh.status["trust_domain"], "example.org");
    // A `weft exec` client joins in the same trust domain.
    let script = "import json,urllib.request; b=json.load(urllib.request.urlopen('http://hello/')); print(b['headers']['x-weft-client'])";
    let out = mesh.weft_ok(&["exec", "--service", "probe", "--", "python3", "-c", script]);
    assert_eq!(out.trim(), "spiffe://example.org/ns/default/sa/probe");
}

/// `weft ca retire` refuses while a proxy still holds a certificate of the old root (here one
/// that is stopped and cannot renew), naming it; once it renewed, retire goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retire_waits_for_every_leaf_to_move_to_the_new_root() {
    use nix::sys::signal::{kill, Signal};
    let mesh = Mesh::up(&mesh_yaml("retire-early", &[("hello", 1, "")]));
    let sidecar = workload(&mesh.status, "hello-v1-0");
    let pid = nix::unistd::Pid::from_raw(sidecar["pid"].as_u64().unwrap() as i32);
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    kill(pid, Signal::SIGSTOP).unwrap();
    let rotate = mesh.weft(&["ca", "rotate"]);
    let early = mesh.weft(&["ca", "retire"]);
    kill(pid, Signal::SIGCONT).unwrap();
    assert!(
        text(&rotate).contains("still on a certificate of the old root"),
        "{}",
        text(&rotate)
    );
    assert!(!early.status.success(), "retired early: {}", text(&early));
    assert!(text(&early).contains("hello-v1-0"), "{}", text(&early));
    // Resumed, it renews from the new root and reports it; then retire goes through.
    let retired = eventually(true, || async {
        mesh.weft(&["ca", "retire"]).status.success()
    })
    .await;
    assert!(retired, "retire still refused after the proxy resumed");
    let r = get(&client(), mesh.ingress, "hello", "/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
}
