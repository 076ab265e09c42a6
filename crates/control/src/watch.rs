//! A watched configuration directory (`weft up --watch`, `weft control --watch`): the files
//! the mesh was started from are polled, and when one changes, appears or disappears its
//! resources replace the ones it contributed before, through the same validation as
//! `weft apply`. A change that does not validate is reported and changes nothing; the last
//! good configuration keeps serving.
//!
//! The `kind: Mesh` document is watched too: its services go to the registry (and `weft up`
//! starts, stops or replaces replicas to match), its routing and security settings to the
//! snapshot. What cannot change while the mesh runs — its name and its ingress address — is
//! reported as needing a restart, and the rest of the change applies.

use crate::http_api::Api;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often the files are looked at.
pub const POLL: Duration = Duration::from_millis(500);

type Fingerprint = BTreeMap<PathBuf, (SystemTime, u64)>;

/// The YAML/JSON files `paths` name: files as given, directories' `*.yaml`, `*.yml`, `*.json`.
fn files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(config::config_files(p).unwrap_or_default());
        } else if p.is_file() {
            out.push(p.clone());
        }
    }
    out
}

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .filter_map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((f.clone(), (m.modified().ok()?, m.len())))
        })
        .collect()
}

/// The resources of `files`.
fn routing_resources(files: &[PathBuf]) -> Vec<config::Resource> {
    files
        .iter()
        .filter_map(|f| Some(config::resources(f, &std::fs::read_to_string(f).ok()?)))
        .flatten()
        .collect()
}

/// Polls `paths` until `stop`, applying what changes.
pub async fn run(api: Arc<Api>, paths: Vec<PathBuf>, stop: CancellationToken) {
    let mut seen = fingerprint(&files(&paths));
    let mut current = routing_resources(&files(&paths));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let now_files = files(&paths);
        let now = fingerprint(&now_files);
        if now == seen {
            continue;
        }
        seen = now;
        let next = routing_resources(&now_files);
        match api.replace(&current, next.clone()).await {
            Ok(summary) => {
                eprintln!("weft: {}: {summary}", describe(&paths));
                current = next;
            }
            Err(errors) => eprintln!(
                "weft: {}: change rejected, the last good configuration keeps serving:\n{errors}",
                describe(&paths)
            ),
        }
    }
}

fn describe(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether any of `paths` exists (a watch on nothing is a mistake worth reporting).
pub fn any_exists(paths: &[PathBuf]) -> bool {
    paths.iter().any(|p| Path::new(p).exists())
}

impl Api {
    /// Replaces the resources `old` with `new` (validated together with everything else in
    /// force) and waits for the proxies to run the result. `Err`: the located errors; nothing
    /// changed.
    pub async fn replace(
        &self,
        old: &[config::Resource],
        new: Vec<config::Resource>,
    ) -> Result<String, String> {
        let changed = self
            .resources
            .change(old, new)
            .await
            .map_err(|refused| refused.to_string())?;
        let warnings: Vec<String> = changed
            .loaded
            .unsupported
            .iter()
            .map(|w| format!("\nwarning: {w}"))
            .collect();
        let version = changed.version;
        let restart = changed
            .loaded
            .mesh
            .as_ref()
            .map(|next| needs_restart(&self.registry.spec(), next))
            .unwrap_or_default();
        let answers = self
            .registry
            .wait_applied(version, Duration::from_secs(5))
            .await;
        let n = answers.proxies;
        let applied = if answers.all_applied() {
            format!("applied by all {n} proxies")
        } else {
            let mut missing: Vec<String> = answers.refused.iter().map(|r| r.to_string()).collect();
            missing.extend(
                answers
                    .silent
                    .iter()
                    .map(|(p, runs)| format!("{p} has not answered (it runs snapshot {runs})")),
            );
            format!(
                "not applied by every one of {n} proxies: {}",
                missing.join("; ")
            )
        };
        Ok(format!(
            "snapshot {version} {applied}{}{}",
            restart.concat(),
            warnings.concat()
        ))
    }
}

/// The Mesh document's fields that changed and cannot change while the mesh runs, one notice
/// each (with a leading newline).
fn needs_restart(running: &model::MeshSpec, next: &model::MeshSpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut notice = |field: &str, was: String, now: String| {
        out.push(format!(
            "\nnotice: Mesh {field} changed ({was} → {now}): it needs a restart of the mesh to \
             apply; the mesh keeps {was}, the rest of the change applies"
        ))
    };
    if next.name != running.name {
        notice("metadata.name", running.name.clone(), next.name.clone());
    }
    if next.ingress != running.ingress {
        notice(
            "spec.ingress",
            running.ingress.to_string(),
            next.ingress.to_string(),
        );
    }
    out
}
