//! What the live views (`weft stat`, `weft tap`, `weft top`) share: finding the running mesh's
//! proxies through the control plane's `/status`, and reading an admin endpoint with a deadline.

use super::get::get;
use control::status::{Status, WorkloadStatus};
use model::{Authority, ServiceKey};
use std::time::Duration;

/// How long one admin read may take before the proxy counts as unreachable.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// The control plane's `/status` of the mesh `mesh` (the only one running when `None`).
pub async fn status(mesh: Option<&str>) -> anyhow::Result<Status> {
    let m = local::meshes::find(mesh)?;
    status_at(&m.api).await
}

/// `/status` from the control-plane API at `api`.
pub async fn status_at(api: &str) -> anyhow::Result<Status> {
    let (code, body) = get(&format!("http://{api}/status")).await?;
    if code != 200 {
        anyhow::bail!(
            "control plane answered {code}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

/// The admin credential of the mesh `mesh` (`WEFT_API_TOKEN`, or the one `weft up` keeps in
/// `$WEFT_HOME`), which its proxies' `/tap` asks for.
pub fn credential(mesh: Option<&str>) -> Option<String> {
    super::get::env_credential()
        .or_else(|| local::meshes::admin_token(&local::meshes::find(mesh).ok()?))
}

/// The API address of the mesh `mesh`.
pub fn api(mesh: Option<&str>) -> anyhow::Result<String> {
    Ok(local::meshes::find(mesh)?.api)
}

/// `NAME`, `NAME.NAMESPACE` or the FQDN as a service key (namespace `default` when none).
pub fn service_key(s: &str) -> anyhow::Result<ServiceKey> {
    Authority::parse(s)
        .service_key(model::names::DEFAULT_NAMESPACE)
        .ok_or_else(|| anyhow::anyhow!("{s:?} is not a service name"))
}

/// The sidecars (with an admin address) of `key`'s replicas; an error naming the services
/// there are when the mesh has no such service.
pub fn sidecars_of<'a>(
    st: &'a Status,
    key: &ServiceKey,
) -> anyhow::Result<Vec<&'a WorkloadStatus>> {
    let all: Vec<&WorkloadStatus> = st
        .workloads
        .iter()
        .filter(|w| w.service == key.name && w.namespace == key.namespace)
        .collect();
    if all.is_empty() {
        let mut names: Vec<String> = st
            .workloads
            .iter()
            .map(|w| format!("{}.{}", w.service, w.namespace))
            .collect();
        names.dedup();
        anyhow::bail!(
            "no service {key} in mesh {} (services: {})",
            st.mesh,
            names.join(", ")
        );
    }
    let with_admin: Vec<&WorkloadStatus> =
        all.into_iter().filter(|w| !w.admin.is_empty()).collect();
    if with_admin.is_empty() {
        anyhow::bail!("no replica of {key} has a proxy yet");
    }
    Ok(with_admin)
}

/// GET `http://ADMIN/PATH` within [`ADMIN_TIMEOUT`]; the body when the proxy answered 200.
pub async fn admin_get(admin: &str, path: &str) -> anyhow::Result<bytes::Bytes> {
    let url = format!("http://{admin}{path}");
    match tokio::time::timeout(ADMIN_TIMEOUT, get(&url)).await {
        Err(_) => anyhow::bail!("GET {url}: no answer within {ADMIN_TIMEOUT:?}"),
        Ok(Err(e)) => Err(e),
        Ok(Ok((200, body))) => Ok(body),
        Ok(Ok((code, body))) => anyhow::bail!(
            "GET {url}: {code} {}",
            String::from_utf8_lossy(&body).trim()
        ),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in ms.
pub fn clock(ts_ms: u64) -> String {
    let ms = ts_ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_utc_time_of_day() {
        assert_eq!(clock(0), "00:00:00.000");
        // 2026-11-26T00:12:09.017Z
        assert_eq!(clock(1_795_651_929_017), "00:12:09.017");
        assert_eq!(clock(86_399_999), "23:59:59.999");
    }
}
