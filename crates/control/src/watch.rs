//! A watched configuration directory (`weft up --watch`, `weft control --watch`): the files
//! the mesh was started from are polled, and when one changes, appears or disappears its
//! routing resources replace the ones it contributed before, through the same validation as
//! `weft apply`. A change that does not validate is reported and changes nothing; the last
//! good configuration keeps serving.

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

/// The routing resources of `files` (a `kind: Mesh` cannot change while the mesh runs).
fn routing_resources(files: &[PathBuf]) -> Vec<config::Resource> {
    files
        .iter()
        .filter_map(|f| Some(config::resources(f, &std::fs::read_to_string(f).ok()?)))
        .flatten()
        .filter(|r| r.kind != "Mesh")
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
        Ok(format!("snapshot {version} {applied}{}", warnings.concat()))
    }
}
