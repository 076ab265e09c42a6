//! Hosts joining a mesh (`weft host join`). The operator mints a bootstrap token for a host
//! (`POST /hosts/tokens`, admin credential): one-time, expiring, for that host name only. The
//! host spends it once (`POST /hosts/join`) and gets a host credential, the mesh's trust bundle
//! and the control plane's replicas; with that credential it reads which replicas the mesh
//! places on it (`GET /hosts/NAME/placement`) and gets a one-time join token for each sidecar
//! it starts (`POST /hosts/NAME/join-token`), for an identity of a service placed on it and no
//! other: a host cannot obtain a certificate for an identity it does not run.
//!
//! Hosts and bootstrap tokens live where the control plane keeps its state: in memory, or in
//! etcd (`hosts/NAME`, tokens beside the CA's) for replicas sharing a store.

use crate::ca::{CaError, SharedTokens};
use crate::etcd::Etcd;
use crate::registry::Registry;
use model::{Identity, Labels};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The ingress gateway's identity (as Istio's), which a host may run when its token allows.
pub const INGRESS_NAMESPACE: &str = "istio-system";
pub const INGRESS_NAME: &str = "istio-ingressgateway";

/// A bootstrap token's lifetime unless the operator says otherwise.
pub const DEFAULT_BOOTSTRAP_TTL: Duration = Duration::from_secs(3600);

/// A joined host, as kept.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostRecord {
    pub name: String,
    /// Where the host's sidecars take traffic from other hosts.
    pub address: IpAddr,
    #[serde(default)]
    pub labels: Labels,
    /// SHA-256 (hex) of the host's credential; the credential itself is never kept.
    pub credential_sha256: String,
    /// When it joined (ms since the epoch).
    pub joined_ms: u64,
    /// Its bootstrap token allowed it to run an ingress gateway (the ingress's identity).
    #[serde(default)]
    pub ingress: bool,
}

/// One replica placed on a host: what the host needs to start it and its sidecar.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Placed {
    pub service: String,
    pub namespace: String,
    pub workload: String,
    pub instance: String,
    pub labels: Labels,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub sidecar: bool,
    pub identity: String,
    /// The service's (first) port, and what the app speaks there.
    pub port: u16,
    pub protocol: String,
}

/// What `POST /hosts/join` answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Joined {
    pub mesh: String,
    /// The host's credential for its later calls (`Authorization: Bearer`).
    pub credential: String,
    /// The mesh's trust anchors (empty without a CA).
    pub trust_bundle: String,
    pub trust_domain: String,
    /// Every control-plane replica's gRPC address.
    pub controls: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("unknown, already used or expired bootstrap token for host {0}")]
    BadToken(String),
    #[error("host {0} has not joined")]
    Unknown(String),
    #[error("wrong credential for host {0}")]
    WrongCredential(String),
    #[error("host {host} runs no replica of the service whose identity is {identity}: it may not get a certificate for it")]
    OutOfScope { host: String, identity: String },
    #[error("{0:?} is not a host name (letters, digits, '-', '.'; at most 63)")]
    BadName(String),
    #[error("the store: {0}")]
    Store(String),
    #[error("{0}")]
    Ca(#[from] CaError),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn sha256_hex(s: &str) -> String {
    hex_sha256(s.as_bytes())
}

fn hex_sha256(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A bootstrap token as `weft host token` prints it, `SECRET.PIN`, split: the secret the
/// control plane spends, and the pin (the SHA-256, hex, of a root of the mesh's trust bundle)
/// the joining host checks the API's trust bundle against before it sends the secret. A token
/// without a pin is the secret alone.
pub fn split_bootstrap(token: &str) -> (&str, Option<&str>) {
    match token.split_once('.') {
        Some((secret, pin)) => (secret, Some(pin)),
        None => (token, None),
    }
}

/// The pins ([`split_bootstrap`]) of the certificates of a PEM trust bundle.
pub fn bundle_pins(bundle_pem: &str) -> Vec<String> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(bundle_pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| hex_sha256(&c))
        .collect()
}

/// The pin of `root` (DER).
pub fn root_pin(root: &[u8]) -> String {
    hex_sha256(root)
}

/// The pseudo-identity a bootstrap token is bound to: never a SPIFFE ID, so the CA never signs
/// with one, and a proxy's join token never joins a host. A token for a host that may also run
/// an ingress gateway is bound to `host-ingress:NAME`.
fn host_identity(host: &str, ingress: bool) -> Identity {
    match ingress {
        false => Identity(format!("host:{host}")),
        true => Identity(format!("host-ingress:{host}")),
    }
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Where hosts and bootstrap tokens are kept.
enum Backend {
    Memory(Mutex<BTreeMap<String, HostRecord>>),
    Etcd(Etcd),
}

pub struct Hosts {
    backend: Backend,
    tokens: Arc<dyn SharedTokens>,
}

impl Hosts {
    /// Hosts kept in this process's memory.
    pub fn in_memory() -> Hosts {
        Hosts {
            backend: Backend::Memory(Mutex::new(BTreeMap::new())),
            tokens: Arc::new(MemoryTokens::default()),
        }
    }

    /// Hosts kept in etcd, tokens with `tokens` (the CA's shared ones).
    pub fn in_etcd(etcd: Etcd, tokens: Arc<dyn SharedTokens>) -> Hosts {
        Hosts {
            backend: Backend::Etcd(etcd),
            tokens,
        }
    }

    /// A bootstrap token for `host`, valid once within `ttl`; with `ingress`, the host may
    /// also run an ingress gateway.
    pub async fn mint(
        &self,
        host: &str,
        ttl: Duration,
        ingress: bool,
    ) -> Result<String, HostError> {
        if !valid_name(host) {
            return Err(HostError::BadName(host.into()));
        }
        Ok(self
            .tokens
            .mint(&host_identity(host, ingress), SystemTime::now() + ttl)
            .await?)
    }

    /// Spends `token` for `host` and records the host (replacing an earlier join of the same
    /// name): returns its new credential.
    pub async fn join(
        &self,
        host: &str,
        token: &str,
        address: IpAddr,
        labels: Labels,
    ) -> Result<String, HostError> {
        if !valid_name(host) {
            return Err(HostError::BadName(host.into()));
        }
        let (token, _) = split_bootstrap(token);
        let bad = |e: CaError| match e {
            CaError::TokenStore(s) => HostError::Store(s),
            _ => HostError::BadToken(host.into()),
        };
        let ingress = match self.tokens.spend(token, &host_identity(host, false)).await {
            Ok(()) => false,
            Err(CaError::TokenIdentityMismatch { token_for, .. })
                if token_for == host_identity(host, true) =>
            {
                self.tokens
                    .spend(token, &host_identity(host, true))
                    .await
                    .map_err(bad)?;
                true
            }
            Err(e) => return Err(bad(e)),
        };
        let credential = crate::ca::random_token();
        let record = HostRecord {
            name: host.into(),
            address,
            labels,
            credential_sha256: sha256_hex(&credential),
            joined_ms: now_ms(),
            ingress,
        };
        match &self.backend {
            Backend::Memory(m) => {
                lock(m).insert(host.into(), record);
            }
            Backend::Etcd(etcd) => {
                let value = serde_json::to_vec(&record).expect("a host serializes");
                etcd.client()
                    .put(&etcd.key(&format!("hosts/{host}")), value, 0)
                    .await
                    .map_err(|e| HostError::Store(e.message().into()))?;
            }
        }
        Ok(credential)
    }

    /// Every joined host.
    pub async fn all(&self) -> Result<Vec<HostRecord>, HostError> {
        match &self.backend {
            Backend::Memory(m) => Ok(lock(m).values().cloned().collect()),
            Backend::Etcd(etcd) => {
                let (kvs, _) = etcd
                    .client()
                    .get(&etcd.key("hosts/"), true)
                    .await
                    .map_err(|e| HostError::Store(e.message().into()))?;
                Ok(kvs
                    .iter()
                    .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                    .collect())
            }
        }
    }

    /// The host `host` if `authorization` carries its credential.
    pub async fn authenticate(
        &self,
        host: &str,
        authorization: Option<&str>,
    ) -> Result<HostRecord, HostError> {
        let record = self
            .all()
            .await?
            .into_iter()
            .find(|h| h.name == host)
            .ok_or_else(|| HostError::Unknown(host.into()))?;
        let given = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|g| sha256_hex(g.trim()))
            .unwrap_or_default();
        match model::credential::check(Some(&format!("Bearer {given}")), &record.credential_sha256)
        {
            model::credential::Presented::Right => Ok(record),
            _ => Err(HostError::WrongCredential(host.into())),
        }
    }
}

/// The replicas the mesh places on `host`, given every joined host.
pub fn placement(registry: &Registry, host: &str, joined: &[HostRecord]) -> Vec<Placed> {
    let spec = registry.spec();
    let trust_domain = registry.trust_domain();
    let joined: Vec<(String, Labels)> = joined
        .iter()
        .map(|h| (h.name.clone(), h.labels.clone()))
        .collect();
    let mut out = Vec::new();
    for svc in &spec.services {
        for w in &svc.workloads {
            for i in 0..w.replicas {
                if w.placement.host_of(i, &joined) != Some(host) {
                    continue;
                }
                out.push(Placed {
                    service: svc.name.clone(),
                    namespace: svc.namespace.clone(),
                    workload: w.name.clone(),
                    instance: w.instance_name(i),
                    labels: w.labels.clone(),
                    command: w.command.clone(),
                    env: w.env.clone(),
                    sidecar: w.sidecar,
                    identity: svc.identity_in(&trust_domain).0,
                    port: svc.ports.first().map_or(80, |p| p.port),
                    protocol: svc.protocol().to_string(),
                });
            }
        }
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bootstrap tokens of a control plane alone, in its memory.
#[derive(Default)]
struct MemoryTokens(Mutex<HashMap<String, (Identity, SystemTime)>>);

#[tonic::async_trait]
impl SharedTokens for MemoryTokens {
    async fn mint(&self, identity: &Identity, expires: SystemTime) -> Result<String, CaError> {
        let token = crate::ca::random_token();
        let mut m = lock(&self.0);
        let now = SystemTime::now();
        m.retain(|_, (_, e)| *e > now);
        m.insert(sha256_hex(&token), (identity.clone(), expires));
        Ok(token)
    }

    async fn spend(&self, token: &str, identity: &Identity) -> Result<(), CaError> {
        let mut m = lock(&self.0);
        let key = sha256_hex(token);
        match m.get(&key) {
            Some((_, expires)) if *expires <= SystemTime::now() => Err(CaError::UnknownToken),
            Some((id, _)) if id != identity => Err(CaError::TokenIdentityMismatch {
                token_for: id.clone(),
                requested: identity.clone(),
            }),
            Some(_) => {
                m.remove(&key);
                Ok(())
            }
            None => Err(CaError::UnknownToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bootstrap_token_carries_the_pin_of_a_root_of_the_bundle() {
        let ca = crate::ca::Ca::generate(crate::ca::CaConfig::default()).unwrap();
        let pin = root_pin(&ca.root());
        assert_eq!(pin.len(), 64);
        assert_eq!(bundle_pins(&ca.bundle_pem()), vec![pin.clone()]);
        let token = format!("abc123.{pin}");
        assert_eq!(split_bootstrap(&token), ("abc123", Some(pin.as_str())));
        assert_eq!(split_bootstrap("abc123"), ("abc123", None));
        // A second root (prepared for rotation) is in the bundle too: either pin matches.
        ca.prepare_root().unwrap();
        let pins = bundle_pins(&ca.bundle_pem());
        assert_eq!(pins.len(), 2);
        assert!(pins.contains(&pin));
    }

    #[tokio::test]
    async fn a_pinned_token_joins_as_its_secret() {
        let hosts = Hosts::in_memory();
        let addr: IpAddr = "10.0.0.2".parse().unwrap();
        let t = hosts
            .mint("h1", Duration::from_secs(60), false)
            .await
            .unwrap();
        let pinned = format!("{t}.{}", "ab".repeat(32));
        hosts
            .join("h1", &pinned, addr, Labels::new())
            .await
            .unwrap();
        assert!(matches!(
            hosts.join("h1", &t, addr, Labels::new()).await,
            Err(HostError::BadToken(_))
        ));
    }

    #[tokio::test]
    async fn bootstrap_tokens_join_once_their_own_host_before_they_expire() {
        let hosts = Hosts::in_memory();
        let addr: IpAddr = "10.0.0.2".parse().unwrap();
        let t = hosts
            .mint("h1", Duration::from_secs(60), false)
            .await
            .unwrap();
        // Another host's name: refused, and the token stays good for its own.
        assert!(matches!(
            hosts.join("h2", &t, addr, Labels::new()).await,
            Err(HostError::BadToken(_))
        ));
        let cred = hosts.join("h1", &t, addr, Labels::new()).await.unwrap();
        // Once only.
        assert!(matches!(
            hosts.join("h1", &t, addr, Labels::new()).await,
            Err(HostError::BadToken(_))
        ));
        // Expired.
        let old = hosts.mint("h1", Duration::ZERO, false).await.unwrap();
        assert!(hosts.join("h1", &old, addr, Labels::new()).await.is_err());
        // The credential authenticates h1 and nothing else.
        let bearer = format!("Bearer {cred}");
        assert!(hosts.authenticate("h1", Some(&bearer)).await.is_ok());
        assert!(matches!(
            hosts.authenticate("h1", Some("Bearer nope")).await,
            Err(HostError::WrongCredential(_))
        ));
        assert!(matches!(
            hosts.authenticate("h9", Some(&bearer)).await,
            Err(HostError::Unknown(_))
        ));
        assert!(hosts
            .mint("bad name", Duration::from_secs(1), false)
            .await
            .is_err());
        // A token that allows an ingress says so in the host's record.
        let t = hosts
            .mint("h3", Duration::from_secs(60), true)
            .await
            .unwrap();
        hosts.join("h3", &t, addr, Labels::new()).await.unwrap();
        let h3 = hosts
            .all()
            .await
            .unwrap()
            .into_iter()
            .find(|h| h.name == "h3");
        assert!(h3.unwrap().ingress);
    }
}
