//! etcd as the store of a control plane with several replicas (`weft control --store
//! etcd://HOST:PORT[,HOST:PORT…]`). Everything a replica would otherwise hold alone lives
//! under one key prefix per mesh, `/weft/meshes/MESH/`:
//!
//! | key | what |
//! |---|---|
//! | `resources/GROUP/KIND/NAMESPACE/NAME` | one resource in force (JSON: its YAML text, file, line, order) |
//! | `resources-rev` | touched by every change of the resources: a change is written only if no other replica changed them since it read them (an etcd transaction) |
//! | `proxies/REPLICA/ID` | one proxy connected to replica `REPLICA` (JSON), under that replica's lease: it vanishes when the replica dies |
//! | `replicas/REPLICA` | a replica's addresses (JSON), under its lease |
//! | `tokens/SHA256(TOKEN)` | a one-time join or renewal token: the identity it is for and its expiry; spent (deleted) by whichever replica signs with it |
//! | `admin-token` | the API's admin credential, sealed |
//! | `listed/REPLICA` | since which snapshot version replica `REPLICA` lists each endpoint, under its lease |
//! | `ca/root` | the CA root's certificate and key, sealed (XChaCha20-Poly1305, key from `--store-key-file` or `WEFT_STORE_KEY`): never plaintext in etcd |
//!
//! Replicas need no leader: each keeps a copy of the keys it reads, kept current by a watch, and
//! writes its own proxies' keys; the resources change under an optimistic transaction. Any
//! replica serves any proxy.

pub mod client;
mod registrations;
mod resources;
mod seal;
mod tokens;

pub use client::Client;
pub use registrations::{EtcdRegistrations, Follower};
pub use resources::EtcdResources;
pub use seal::{SealError, SealKey};
pub use tokens::EtcdTokens;

use std::time::Duration;

/// How long a replica's keys outlive it: its lease's time to live. A replica that dies (or is
/// cut off from etcd) loses its proxies' registrations this long after its last keep-alive.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("--store {0:?}: expected etcd://HOST:PORT[,HOST:PORT…]")]
    BadUrl(String),
    #[error("etcd ({endpoints}): {message}")]
    Etcd { endpoints: String, message: String },
    #[error("etcd key {key}: {reason}")]
    BadValue { key: String, reason: String },
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("the CA root in etcd: {0}")]
    Ca(#[from] crate::ca::CaError),
}

/// A connection to the etcd cluster holding one mesh's keys.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    endpoints: String,
    prefix: String,
    /// This replica's name among the control plane's replicas (random per start).
    pub replica: String,
    /// This replica's lease: its proxies' and its own keys live under it.
    pub lease: i64,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

/// The endpoints of an `etcd://HOST:PORT[,HOST:PORT…]` URL, as `http://HOST:PORT`.
pub fn endpoints(url: &str) -> Result<Vec<String>, EtcdError> {
    let bad = || EtcdError::BadUrl(url.to_string());
    let rest = url.strip_prefix("etcd://").ok_or_else(bad)?;
    let eps: Vec<String> = rest
        .split(',')
        .map(|e| e.trim().trim_end_matches('/'))
        .filter(|e| !e.is_empty())
        .map(|e| {
            let ok = e
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            ok.then(|| format!("http://{e}")).ok_or_else(bad)
        })
        .collect::<Result<_, _>>()?;
    if eps.is_empty() {
        return Err(bad());
    }
    Ok(eps)
}

impl Etcd {
    /// Connects to the cluster at `url` for mesh `mesh` and takes a lease for this replica
    /// (kept alive until the process exits).
    pub async fn connect(url: &str, mesh: &str) -> Result<Etcd, EtcdError> {
        let eps = endpoints(url)?;
        let joined = eps.join(",");
        let err = |s: tonic::Status| EtcdError::Etcd {
            endpoints: joined.clone(),
            message: s.message().to_string(),
        };
        let client = Client::connect(&eps).await.map_err(err)?;
        let lease = client.grant(LEASE_TTL).await.map_err(err)?;
        let replica = format!("{:016x}", rand::random::<u64>());
        let etcd = Etcd {
            client,
            endpoints: joined,
            prefix: format!("/weft/meshes/{mesh}/"),
            replica,
            lease,
        };
        etcd.keep_lease_alive();
        Ok(etcd)
    }

    /// The names of the meshes the cluster at `url` holds.
    pub async fn meshes(url: &str) -> Result<Vec<String>, EtcdError> {
        let eps = endpoints(url)?;
        let err = |s: tonic::Status| EtcdError::Etcd {
            endpoints: eps.join(","),
            message: s.message().to_string(),
        };
        let client = Client::connect(&eps).await.map_err(err)?;
        let (kvs, _) = client.get("/weft/meshes/", true).await.map_err(err)?;
        let mut names: Vec<String> = kvs
            .iter()
            .filter_map(|kv| kv.key.strip_prefix("/weft/meshes/")?.split('/').next())
            .map(str::to_string)
            .collect();
        names.dedup();
        Ok(names)
    }

    fn err(&self, s: tonic::Status) -> EtcdError {
        EtcdError::Etcd {
            endpoints: self.endpoints.clone(),
            message: s.message().to_string(),
        }
    }

    /// The full key of `rel` under this mesh's prefix.
    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Keeps this replica's lease alive, a third of its TTL apart, through whichever member
    /// answers. A lease that lapsed anyway (etcd unreachable for longer than the TTL) took this
    /// replica's keys with it: the process says so and exits, and its proxies move to another
    /// replica (a supervisor restarts it with a fresh lease).
    fn keep_lease_alive(&self) {
        let client = self.client.clone();
        let lease = self.lease;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_TTL / 3).await;
                match client.keep_alive(lease).await {
                    Ok(ttl) if ttl > 0 => {}
                    Ok(_) => {
                        tracing::error!(lease, "this replica's etcd lease expired: its registrations are gone; exiting");
                        std::process::exit(1);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.message(), "etcd lease keep-alive failed; retrying")
                    }
                }
            }
        });
    }

    /// The mesh CA's root, sealed in etcd under `ca/root`: the one there, or, if there is
    /// none yet, a new one this replica generates and writes unless another replica wrote
    /// one first (then that one).
    pub async fn ca(
        &self,
        key: &SealKey,
        config: crate::ca::CaConfig,
    ) -> Result<crate::ca::Ca, EtcdError> {
        let k = self.key("ca/root");
        let source = std::path::PathBuf::from(format!("etcd:{k}"));
        let bad = |reason: String| EtcdError::BadValue {
            key: k.clone(),
            reason,
        };
        let (got, _) = self.client.get(&k, false).await.map_err(|e| self.err(e))?;
        let sealed = match got.into_iter().next() {
            Some(kv) => kv.value,
            None => {
                let (cert, pkey) = crate::ca::Ca::new_root_pem(&config.trust_domain)?;
                let value =
                    serde_json::to_vec(&StoredRoot { cert, key: pkey }).expect("strings serialize");
                let sealed = key.seal(&value);
                let (wrote, _, _) = self
                    .client
                    .txn(
                        vec![client::absent(&k)],
                        vec![client::put_op(&k, sealed.clone())],
                        vec![],
                    )
                    .await
                    .map_err(|e| self.err(e))?;
                if wrote {
                    sealed
                } else {
                    // Another replica wrote one first.
                    let (got, _) = self.client.get(&k, false).await.map_err(|e| self.err(e))?;
                    got.into_iter()
                        .next()
                        .map(|kv| kv.value)
                        .ok_or_else(|| bad("vanished while being read".into()))?
                }
            }
        };
        let plain = key.open(&sealed).map_err(|e| bad(e.to_string()))?;
        let root: StoredRoot = serde_json::from_slice(&plain).map_err(|e| bad(e.to_string()))?;
        Ok(crate::ca::Ca::from_pem(
            &root.cert, &root.key, &source, config,
        )?)
    }

    /// The endpoints this replica was given (`http://HOST:PORT,…`).
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// The API's admin credential every replica accepts, sealed under `admin-token`: the one
    /// there, or `fresh` if there is none yet (unless another replica wrote one first).
    pub async fn admin_token(&self, key: &SealKey, fresh: String) -> Result<String, EtcdError> {
        let k = self.key("admin-token");
        let sealed = key.seal(fresh.as_bytes());
        let (wrote, _, answers) = self
            .client
            .txn(
                vec![client::absent(&k)],
                vec![client::put_op(&k, sealed)],
                vec![client::get_op(&k)],
            )
            .await
            .map_err(|e| self.err(e))?;
        if wrote {
            return Ok(fresh);
        }
        let theirs = answers
            .into_iter()
            .find_map(|a| match a.response {
                Some(client::pb::etcdserverpb::response_op::Response::ResponseRange(r)) => {
                    r.kvs.into_iter().next()
                }
                _ => None,
            })
            .ok_or_else(|| EtcdError::BadValue {
                key: k.clone(),
                reason: "vanished while being read".into(),
            })?;
        let plain = key.open(&theirs.value).map_err(|e| EtcdError::BadValue {
            key: k.clone(),
            reason: e.to_string(),
        })?;
        String::from_utf8(plain).map_err(|e| EtcdError::BadValue {
            key: k,
            reason: e.to_string(),
        })
    }

    /// Writes this replica's addresses under `replicas/REPLICA` (under its lease).
    pub async fn announce(&self, replica: &Replica) -> Result<(), EtcdError> {
        let value = serde_json::to_vec(replica).expect("a replica serializes");
        self.client
            .put(
                &self.key(&format!("replicas/{}", self.replica)),
                value,
                self.lease,
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every live replica's addresses.
    pub async fn replicas(&self) -> Result<Vec<Replica>, EtcdError> {
        let (got, _) = self
            .client
            .get(&self.key("replicas/"), true)
            .await
            .map_err(|e| self.err(e))?;
        Ok(got
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect())
    }

    /// The cluster's members and whether each answers (`weft status`'s store health).
    pub async fn health(&self) -> Vec<Member> {
        let Ok(members) = self.client.members().await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, url) in members {
            let healthy = Client::member_answers(&url).await;
            out.push(Member { name, url, healthy });
        }
        out
    }
}

/// The CA root as kept (sealed) in etcd.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRoot {
    cert: String,
    key: String,
}

/// A control-plane replica as `replicas/REPLICA` lists it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Replica {
    pub name: String,
    /// Where proxies connect (gRPC).
    pub grpc: String,
    /// Its HTTP API.
    pub api: String,
    pub pid: u32,
}

/// One etcd member and whether it answered.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub url: String,
    pub healthy: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_every_endpoint() {
        assert_eq!(
            endpoints("etcd://127.0.0.1:2379,127.0.0.1:22379").unwrap(),
            ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
        );
        for bad in ["127.0.0.1:2379", "etcd://", "etcd://host", "etcd://h:99999"] {
            let e = endpoints(bad).unwrap_err().to_string();
            assert!(e.contains("etcd://HOST:PORT"), "{bad}: {e}");
        }
    }
}
