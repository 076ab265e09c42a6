//! The scrape targets of `weft up --prometheus` (which proxies Prometheus scrapes, see the
//! parent module; [`control::scrape_targets`] computes them, and the control plane's API serves
//! them to Prometheus) and `targets.json`, the same list as a `file_sd_configs` file, kept up to
//! date from the registry.

use control::registry::Registry;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use control::scrape_targets::{targets, TargetGroup};

/// Replaces `path` with `bytes` at once: readers see the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Keeps `path` listing the registry's proxies until `stop`: rewrites it whenever the targets
/// change (registrations come and go; health and acks, which also wake the registry's
/// watchers, leave the file alone).
pub async fn keep_targets(
    registry: Arc<Registry>,
    path: PathBuf,
    mesh: String,
    stop: CancellationToken,
) {
    let mut generation = registry.watch_generation();
    let mut written: Option<Vec<TargetGroup>> = None;
    loop {
        let now = targets(&mesh, &registry.proxies());
        if written.as_ref() != Some(&now) {
            let mut json = serde_json::to_vec_pretty(&now).unwrap_or_default();
            json.push(b'\n');
            match write_atomic(&path, &json) {
                Ok(()) => written = Some(now),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write Prometheus targets");
                }
            }
        }
        tokio::select! {
            r = generation.changed() => if r.is_err() { return },
            // Retries a failed write even when nothing changes.
            _ = tokio::time::sleep(Duration::from_secs(5)), if written.is_none() => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::registry::Node;
    use model::security::SecuritySpec;
    use model::{Identity, MeshSpec};
    use std::net::SocketAddr;

    fn node(mode: &str, service: &str, instance: &str, admin: Option<u16>) -> Node {
        Node {
            mode: mode.into(),
            service: service.into(),
            namespace: "default".into(),
            workload: format!("{service}-v1"),
            instance: instance.into(),
            labels: Default::default(),
            inbound: None,
            outbound: None,
            admin: admin.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            app: None,
            identity: Identity::spiffe("default", service),
            pid: 1,
            asks: true,
        }
    }

    fn spec() -> MeshSpec {
        MeshSpec {
            name: "m".into(),
            ingress: "127.0.0.1:0".parse().unwrap(),
            services: Vec::new(),
            routes: Vec::new(),
            tcp_routes: Vec::new(),
            policies: Vec::new(),
            gateway: Vec::new(),
            security: SecuritySpec::new(),
            default_retries: None,
            interception: Default::default(),
            outbound_policy: Default::default(),
            outbound_policies: Default::default(),
            egress: Default::default(),
            scope: Default::default(),
        }
    }

    #[test]
    fn targets_list_every_proxy_with_labels_newest_registration_first() {
        let registry = Registry::new(spec());
        let _ingress = registry.register(node(
            "ingress",
            "istio-ingressgateway",
            "ingress-0",
            Some(1000),
        ));
        let old = registry.register(node("sidecar", "backend", "backend-v1-0", Some(1001)));
        let _new = registry.register(node("sidecar", "backend", "backend-v1-0", Some(1002)));
        let _b1 = registry.register(node("sidecar", "backend", "backend-v1-1", Some(1003)));
        // Not ready, and without an admin address: only the first is a target.
        let _starting = registry.register(node("sidecar", "frontend", "frontend-v1-0", Some(1004)));
        let _no_admin = registry.register(node("sidecar", "frontend", "frontend-v1-1", None));

        let t = targets("m", &registry.proxies());
        let addrs: Vec<&str> = t.iter().map(|g| g.targets[0].as_str()).collect();
        assert_eq!(
            addrs,
            [
                "127.0.0.1:1000",
                "127.0.0.1:1002",
                "127.0.0.1:1003",
                "127.0.0.1:1004"
            ]
        );
        let labels: Vec<(&str, &str)> = t[1]
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("instance", "backend-v1-0"),
                ("mesh", "m"),
                ("mode", "sidecar"),
                ("namespace", "default"),
                ("service", "backend"),
                ("workload", "backend-v1"),
            ]
        );
        assert_eq!(t[0].labels["mode"], "ingress");

        // The file_sd format: a list of {targets, labels}.
        let json = serde_json::to_value(&t[0]).unwrap();
        assert_eq!(json["targets"][0], "127.0.0.1:1000");
        assert_eq!(json["labels"]["service"], "istio-ingressgateway");

        drop(old);
        assert_eq!(targets("m", &registry.proxies()).len(), 4);
    }

    #[tokio::test]
    async fn the_targets_file_follows_registrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.json");
        let registry = Registry::new(spec());
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_targets(
            registry.clone(),
            path.clone(),
            "m".into(),
            stop.clone(),
        ));
        let read = || -> Vec<String> {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap_or_default())
                    .unwrap_or(serde_json::Value::Null);
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|g| g["labels"]["instance"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_else(|| vec!["<unreadable>".into()])
        };
        let wait_for = |want: Vec<&str>| {
            let want: Vec<String> = want.into_iter().map(str::to_owned).collect();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                loop {
                    let got = read();
                    if got == want {
                        return;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "targets {got:?}, want {want:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        wait_for(vec![]).await;
        let a = registry.register(node("sidecar", "backend", "backend-v1-0", Some(1001)));
        let b = registry.register(node("sidecar", "backend", "backend-v1-1", Some(1002)));
        wait_for(vec!["backend-v1-0", "backend-v1-1"]).await;
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        // Health changes wake the writer but leave the file alone. On this single-threaded
        // runtime, yielding lets the woken writer run its whole turn (it has no await point
        // between waking and parking again) before this task goes on.
        registry.set_health(a.id, true, String::new());
        tokio::task::yield_now().await;
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before
        );
        drop(a);
        wait_for(vec!["backend-v1-1"]).await;
        drop(b);
        wait_for(vec![]).await;
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["targets.json"]);
        stop.cancel();
        task.await.unwrap();
    }
}
