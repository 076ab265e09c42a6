//! Keeps the injection webhook's `caBundle` the mesh's roots: the Kubernetes API server trusts
//! the webhook's certificate (signed by the mesh CA) only through the bundle its
//! MutatingWebhookConfiguration carries, and the roots change when the CA rotates. Checked
//! every few seconds; written (read, changed, replaced with its resourceVersion, so a
//! concurrent writer's change is not lost) only when it differs.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the bundle is compared with the configuration's.
const EVERY: Duration = Duration::from_secs(5);

/// Writes `bundle` into every hook of the configuration `name`; whether anything changed.
pub async fn write(client: &kube::Client, name: &str, bundle: &str) -> Result<bool, String> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut config = api
        .get(name)
        .await
        .map_err(|e| format!("MutatingWebhookConfiguration {name}: {e}"))?;
    let want = ByteString(bundle.as_bytes().to_vec());
    let mut changed = false;
    for hook in config.webhooks.iter_mut().flatten() {
        if hook.client_config.ca_bundle.as_ref() != Some(&want) {
            hook.client_config.ca_bundle = Some(want.clone());
            changed = true;
        }
    }
    if changed {
        api.replace(name, &PostParams::default(), &config)
            .await
            .map_err(|e| format!("MutatingWebhookConfiguration {name}: {e}"))?;
    }
    Ok(changed)
}

/// Keeps the configuration `name`'s bundle the CA's until `stop`, while this replica leads.
pub async fn keep(
    client: kube::Client,
    ca: Arc<crate::ca::Ca>,
    name: String,
    mut leader: super::lease::Leader,
    stop: CancellationToken,
) {
    let mut written = String::new();
    loop {
        let bundle = ca.bundle_pem();
        if !leader.is_leader() {
            // Written again on taking over: the one who led may have left it stale.
            written.clear();
        } else if bundle != written {
            match write(&client, &name, &bundle).await {
                Ok(changed) => {
                    if changed {
                        tracing::info!(configuration = %name, "the webhook's caBundle is the mesh's roots");
                    }
                    written = bundle;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the webhook's caBundle; retrying")
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
            _ = leader.changed() => {}
        }
    }
}
