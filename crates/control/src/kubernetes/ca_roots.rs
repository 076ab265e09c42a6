//! The mesh's roots in every namespace: the ConfigMap `weft-ca-root` (`root-cert.pem`), which
//! injected pods mount to verify the control plane (Istio keeps `istio-ca-root-cert` the same
//! way). Every namespace gets it, since a pod may opt in wherever it runs; it is created where
//! missing and rewritten where it differs, at start and every few seconds (new namespaces, a
//! rotated root).

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The ConfigMap's name, as injection mounts it.
pub const NAME: &str = config::inject::CA_CONFIGMAP;
/// Its key.
pub const KEY: &str = "root-cert.pem";
/// How often namespaces are listed again.
const EVERY: Duration = Duration::from_secs(10);

/// Puts `bundle` in every namespace's ConfigMap; the namespaces written.
pub async fn sync(client: &kube::Client, bundle: &str) -> Result<Vec<String>, String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let list = namespaces
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing namespaces: {e}"))?;
    let mut written = Vec::new();
    for ns in list.items {
        let Some(name) = ns.metadata.name else {
            continue;
        };
        if ns.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
        let want = BTreeMap::from([(KEY.to_string(), bundle.to_string())]);
        let current = maps
            .get_opt(NAME)
            .await
            .map_err(|e| format!("ConfigMap {name}/{NAME}: {e}"))?;
        let result = match current {
            Some(cm) if cm.data.as_ref() == Some(&want) => continue,
            Some(mut cm) => {
                cm.data = Some(want);
                maps.replace(NAME, &PostParams::default(), &cm).await
            }
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(NAME.into()),
                        namespace: Some(name.clone()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_string(),
                            "weft".to_string(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(want),
                    ..ConfigMap::default()
                };
                maps.create(&PostParams::default(), &cm).await
            }
        };
        result.map_err(|e| format!("ConfigMap {name}/{NAME}: {e}"))?;
        written.push(name);
    }
    Ok(written)
}

/// Keeps every namespace's ConfigMap the CA's roots until `stop`, while this replica leads.
pub async fn keep(
    client: kube::Client,
    ca: Arc<crate::ca::Ca>,
    mut leader: super::lease::Leader,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
            _ = leader.changed() => {}
        }
        if !leader.is_leader() {
            continue;
        }
        match sync(&client, &ca.bundle_pem()).await {
            Ok(written) if !written.is_empty() => {
                tracing::info!(namespaces = ?written, "the mesh's roots written to {NAME}")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot keep {NAME}; retrying"),
        }
    }
}
