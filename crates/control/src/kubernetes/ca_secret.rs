//! The mesh CA's root shared by every control-plane replica on a cluster: kept in the Secret
//! `weft-ca` of the control plane's namespace. The first replica to start generates the root
//! and creates the Secret; one that loses that race (409 AlreadyExists) reads the winner's, so
//! every replica signs with the same root and every proxy trusts every other.

use crate::ca::{Ca, CaConfig};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The Secret that holds the root.
pub const NAME: &str = "weft-ca";
/// Its keys: the root's certificate and key, PEM.
pub const CERT_KEY: &str = "root-cert.pem";
pub const KEY_KEY: &str = "root-key.pem";

/// The CA whose root the Secret [`NAME`] in `namespace` holds, created with a new root when
/// there is none.
pub async fn open(client: &kube::Client, namespace: &str, config: CaConfig) -> Result<Ca, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let source = PathBuf::from(format!("Secret {namespace}/{NAME}"));
    for _ in 0..3 {
        let found = secrets
            .get_opt(NAME)
            .await
            .map_err(|e| format!("Secret {namespace}/{NAME}: {e}"))?;
        if let Some(secret) = found {
            let field = |key: &str| {
                secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .ok_or_else(|| format!("Secret {namespace}/{NAME} has no {key}"))
            };
            return Ca::from_pem(&field(CERT_KEY)?, &field(KEY_KEY)?, &source, config)
                .map_err(|e| e.to_string());
        }
        let (cert, key) = Ca::new_root_pem(&config.trust_domain).map_err(|e| e.to_string())?;
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(NAME.to_string()),
                namespace: Some(namespace.to_string()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_string(),
                    "weft".to_string(),
                )])),
                ..Default::default()
            },
            type_: Some("Opaque".to_string()),
            data: Some(BTreeMap::from([
                (CERT_KEY.to_string(), ByteString(cert.clone().into_bytes())),
                (KEY_KEY.to_string(), ByteString(key.clone().into_bytes())),
            ])),
            ..Default::default()
        };
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(
                    "the mesh CA's root generated and kept in Secret {namespace}/{NAME}"
                );
                return Ca::from_pem(&cert, &key, &source, config).map_err(|e| e.to_string());
            }
            // Another replica created it first: read theirs.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(format!("Secret {namespace}/{NAME}: {e}")),
        }
    }
    Err(format!(
        "Secret {namespace}/{NAME}: created and deleted under us"
    ))
}
