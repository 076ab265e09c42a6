//! One-time tokens in etcd, so a token one control-plane replica minted is spent at another,
//! exactly once: each under `tokens/SHA256(TOKEN)` (the token itself is never stored, so reading
//! etcd does not yield a usable token), its value the identity it is for and when it expires.
//! Spending reads it, checks it, and deletes it in a transaction that fails if anyone spent it
//! meanwhile. Expired tokens are deleted when met and by a sweep.

use super::{client, Etcd};
use crate::ca::{CaError, SharedTokens};
use model::Identity;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct EtcdTokens {
    etcd: Etcd,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    identity: String,
    /// Expiry, ms since the epoch.
    expires_ms: u64,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn store_err(e: tonic::Status) -> CaError {
    CaError::TokenStore(e.message().to_string())
}

impl EtcdTokens {
    pub fn new(etcd: Etcd) -> EtcdTokens {
        let me = EtcdTokens { etcd };
        me.sweep();
        me
    }

    fn key(&self, token: &str) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.etcd.key(&format!("tokens/{hex}"))
    }

    /// Deletes expired tokens every minute.
    fn sweep(&self) {
        let etcd = self.etcd.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let Ok((kvs, _)) = etcd.client().get(&etcd.key("tokens/"), true).await else {
                    continue;
                };
                let now = ms(SystemTime::now());
                for kv in kvs {
                    let expired = serde_json::from_slice::<Stored>(&kv.value)
                        .map_or(true, |s| s.expires_ms <= now);
                    if expired {
                        let _ = etcd
                            .client()
                            .txn(
                                vec![client::mod_revision_is(&kv.key, kv.mod_revision)],
                                vec![client::delete_op(&kv.key)],
                                vec![],
                            )
                            .await;
                    }
                }
            }
        });
    }
}

#[tonic::async_trait]
impl SharedTokens for EtcdTokens {
    async fn mint(&self, identity: &Identity, expires: SystemTime) -> Result<String, CaError> {
        let mut bytes = [0u8; crate::ca::JOIN_TOKEN_BYTES];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let value = serde_json::to_vec(&Stored {
            identity: identity.0.clone(),
            expires_ms: ms(expires),
        })
        .expect("a token serializes");
        self.etcd
            .client()
            .put(&self.key(&token), value, 0)
            .await
            .map_err(store_err)?;
        Ok(token)
    }

    async fn spend(&self, token: &str, identity: &Identity) -> Result<(), CaError> {
        let key = self.key(token);
        let (kvs, _) = self
            .etcd
            .client()
            .get(&key, false)
            .await
            .map_err(store_err)?;
        let Some(kv) = kvs.into_iter().next() else {
            return Err(CaError::UnknownToken);
        };
        let stored: Stored =
            serde_json::from_slice(&kv.value).map_err(|_| CaError::UnknownToken)?;
        if stored.expires_ms <= ms(SystemTime::now()) {
            let _ = self.etcd.client().delete(&key).await;
            return Err(CaError::UnknownToken);
        }
        if stored.identity != identity.0 {
            return Err(CaError::TokenIdentityMismatch {
                token_for: Identity(stored.identity),
                requested: identity.clone(),
            });
        }
        let (spent, _, _) = self
            .etcd
            .client()
            .txn(
                vec![client::mod_revision_is(&key, kv.mod_revision)],
                vec![client::delete_op(&key)],
                vec![],
            )
            .await
            .map_err(store_err)?;
        if spent {
            Ok(())
        } else {
            // Someone spent it first.
            Err(CaError::UnknownToken)
        }
    }
}
