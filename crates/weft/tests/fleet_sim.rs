//! `weft fleet-sim` end to end, small: 50 simulated proxies against two control-plane replicas
//! over a real etcd member it starts, three changes. It must finish and report numbers that
//! make sense (every proxy got every change, the replicas and etcd did work, scoping shrank
//! the snapshots); no timing is asserted.

mod common;

use serde_json::Value;
use std::process::Command;

fn fleet_sim(args: &[&str]) -> Value {
    // The etcd member the simulation starts: Debian's, which CI installs.
    let etcd = common::etcd::etcd_binary();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(common::WEFT)
        .args(["fleet-sim", "--etcd", etcd.to_str().unwrap(), "-o", "json"])
        .args(args)
        .env("WEFT_HOME", home.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "weft fleet-sim {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_small_fleet_over_two_replicas_gets_every_change() {
    let r = fleet_sim(&[
        "--proxies",
        "50",
        "--services",
        "10",
        "--namespaces",
        "3",
        "--replicas",
        "2",
        "--changes",
        "3",
        "--timeout",
        "60s",
    ]);
    assert_eq!(r["proxies"], 50);
    assert_eq!(r["replicas"], 2);
    assert_eq!(r["failed"], 0, "{r:#}");
    // Every proxy received every change: one sample per (change, proxy).
    assert_eq!(r["propagation_ms"]["count"], 150, "{r:#}");
    assert_eq!(r["all_reached_ms"]["count"], 3);
    assert_eq!(r["apply_ms"]["count"], 3);
    let p = &r["propagation_ms"];
    let (p50, p99, max) = (
        p["p50"].as_f64().unwrap(),
        p["p99"].as_f64().unwrap(),
        p["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{p}");
    // The proxies are spread across both replicas, which both worked and hold memory.
    let control = r["control"].as_array().unwrap();
    assert_eq!(control.len(), 2);
    for c in control {
        assert_eq!(c["proxies"], 25, "{c}");
        assert!(c["peak_rss_mb"].as_f64().unwrap() > 1.0, "{c}");
        let cpu = c["cpu_startup_s"].as_f64().unwrap() + c["cpu_changes_s"].as_f64().unwrap();
        assert!(cpu > 0.0, "{c}");
    }
    // etcd took the registrations and the changes.
    assert!(
        r["etcd_startup"]["etcd_mvcc_put_total"].as_f64().unwrap() >= 50.0,
        "{r:#}"
    );
    assert!(
        r["etcd_changes"]["etcd_mvcc_txn_total"].as_f64().unwrap() >= 3.0,
        "{r:#}"
    );
    // The mesh default Sidecar (`./*`, `shared/*`): each proxy holds its namespace's
    // services and `common`, not the mesh.
    let services = r["snapshot_services"]["max"].as_f64().unwrap();
    assert!((2.0..10.0).contains(&services), "{r:#}");
    let bytes = r["snapshot_bytes"]["mean"].as_f64().unwrap();
    let whole = r["whole_snapshot_bytes"].as_f64().unwrap();
    assert!(0.0 < bytes && bytes < whole, "{bytes} of {whole}");
}
