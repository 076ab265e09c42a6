//! The proxy's side of the mesh CA: with the one-time join token it was started with, it makes
//! its own key, sends a CSR and installs the certificate it gets back; then it renews at ~70%
//! of each certificate's lifetime with the renewal token the last answer carried. Renewal
//! swaps the credentials in place ([`Credentials::rotate`]), so no connection or request is
//! dropped. Without its control plane the proxy keeps its current certificate and retries.
//!
//! With a state directory ([`crate::persist`]) every certificate is kept there with its key and
//! the renewal token; a proxy that starts with valid kept credentials installs them at once
//! ([`Slot::install`]) and goes straight to renewing, never needing its (spent) join token.

use crate::control_link::ControlLink;
use crate::persist::{Persist, SavedCredentials};
use crate::tls::{self, Credentials};
use api::pb::{self, discovery_client::DiscoveryClient};
use model::Identity;
use rand::Rng;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("connecting to the control plane: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the CA refused: {0}")]
    Refused(Box<tonic::Status>),
    #[error("the CA's answer: {0}")]
    Pem(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Where the proxy's credentials live once it has them. Empty until the first certificate.
#[derive(Default)]
pub struct Slot {
    creds: OnceLock<Arc<Credentials>>,
    /// The CA generation that signed the leaf in force (0: none yet).
    generation: std::sync::atomic::AtomicU64,
    /// Wakes the renewal loop before its time (a new root signs now).
    renew_now: tokio::sync::Notify,
    /// Wakes whoever waits for the first certificate.
    installed: tokio::sync::Notify,
}

impl Slot {
    pub fn get(&self) -> Option<&Arc<Credentials>> {
        self.creds.get()
    }

    /// Waits until the first certificate is in.
    pub async fn wait_installed(&self) {
        loop {
            let notified = self.installed.notified();
            if self.get().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Puts the first credentials in (from the CA, or kept from the last run), signed by CA
    /// generation `generation`, and wakes whoever waits for them. `false`: there were some
    /// already, which stay.
    pub fn install(&self, creds: Arc<Credentials>, generation: u64) -> bool {
        if self.creds.set(creds).is_err() {
            return false;
        }
        self.generation
            .store(generation, std::sync::atomic::Ordering::Release);
        self.installed.notify_waiters();
        true
    }

    /// The CA generation of the leaf in force (0: no leaf yet).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The CA signs with generation `signing` now: a leaf of an older one is renewed at once,
    /// so that the old root can be retired without cutting connections.
    pub fn signing_generation(&self, signing: u64) {
        let mine = self.generation();
        if mine != 0 && signing > mine {
            self.renew_now.notify_one();
        }
    }
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let out: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let out = out.map_err(|e| IdentityError::Pem(e.to_string()))?;
    if out.is_empty() {
        return Err(IdentityError::Pem("no certificate in it".into()));
    }
    Ok(out)
}

/// One CSR round trip: a fresh key, its CSR signed by the CA.
async fn certify(
    control: &ControlLink,
    identity: &Identity,
    token: &str,
) -> Result<(rcgen::KeyPair, pb::CertifyResponse), IdentityError> {
    let (key, csr_pem) = tls::csr(identity)?;
    let endpoint = control
        .endpoint()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let mut client = DiscoveryClient::new(control.connect(endpoint).await?);
    let rsp = client
        .certify(pb::CertifyRequest {
            identity: identity.0.clone(),
            token: token.to_string(),
            csr_pem,
        })
        .await
        .map_err(|s| IdentityError::Refused(Box::new(s)))?;
    Ok((key, rsp.into_inner()))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the CA answered, as the state directory keeps it.
fn saved(identity: &Identity, key: &rcgen::KeyPair, rsp: &pb::CertifyResponse) -> SavedCredentials {
    SavedCredentials {
        identity: identity.0.clone(),
        chain_pem: rsp.chain_pem.clone(),
        key_pem: key.serialize_pem(),
        bundle_pem: rsp.bundle_pem.clone(),
        renewal_token: Some(rsp.renewal_token.clone()).filter(|t| !t.is_empty()),
        generation: rsp.generation,
    }
}

/// Gets the first certificate with `token` (retrying until it works), publishes it in `slot`,
/// then renews for as long as the proxy runs: at ~70% of each leaf's life, or at once when the
/// control plane says another root signs now ([`Slot::signing_generation`]). When `slot`
/// already holds credentials (kept from the last run), `token` is their renewal token and the
/// first step is skipped; should the CA refuse that token (it lives in the memory of the
/// control plane that issued it), `fallback` (the join token the proxy was started with) is
/// tried once instead. `on_ready` is called once the first certificate is in and after each
/// renewal (the proxy then reports its health, which carries its leaf's generation). Each
/// certificate is kept in `persist` with its key and the next renewal token.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    control: Arc<ControlLink>,
    identity: Identity,
    token: String,
    fallback: Option<String>,
    slot: Arc<Slot>,
    metrics: Arc<crate::metrics::Metrics>,
    persist: Option<Arc<Persist>>,
    on_ready: impl Fn(),
) {
    let on_renewed = &on_ready;
    let (mut token, mut fallback) = (token, fallback);
    let mut backoff = RETRY_MIN;
    let creds = match slot.get() {
        Some(kept) => kept.clone(),
        None => {
            // The first certificate.
            let (creds, generation) = loop {
                match certify(&control, &identity, &token)
                    .await
                    .and_then(|(key, rsp)| {
                        let creds = Credentials::new(
                            &identity,
                            &key,
                            certs(&rsp.chain_pem)?,
                            certs(&rsp.bundle_pem)?,
                        )?;
                        Ok((creds, saved(&identity, &key, &rsp)))
                    }) {
                    Ok((creds, kept)) => {
                        token = rsp_token(&kept);
                        let generation = kept.generation;
                        if let Some(p) = &persist {
                            p.save_credentials(kept);
                        }
                        break (creds, generation);
                    }
                    Err(e) => {
                        tracing::warn!(%identity, error = %e, "no certificate yet; retrying");
                        // A refused token will not become valid: give up loudly instead of spinning.
                        if let IdentityError::Refused(s) = &e {
                            if s.code() == tonic::Code::PermissionDenied {
                                tracing::error!(%identity, "the CA refused our join token; this proxy cannot take mesh traffic");
                                return;
                            }
                        }
                        tokio::time::sleep(jittered(backoff)).await;
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            };
            slot.install(creds.clone(), generation);
            let (_, not_after) = creds.validity();
            tracing::info!(%identity, expires = ?not_after, "certificate installed");
            creds
        }
    };
    let (_, not_after) = creds.validity();
    metrics.cert_expiry.set(unix(not_after) as i64);
    on_ready();

    // Renewals: at ~70% of the leaf's life, or at once when another root starts signing.
    loop {
        let (nb, na) = creds.validity();
        let wait = tls::renew_in(nb, na, SystemTime::now());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = slot.renew_now.notified() => {
                tracing::info!(%identity, "a new root signs now; renewing the certificate");
            }
        }
        let mut backoff = RETRY_MIN;
        loop {
            let renewed = certify(&control, &identity, &token)
                .await
                .and_then(|(key, rsp)| {
                    creds.rotate(&key, certs(&rsp.chain_pem)?, certs(&rsp.bundle_pem)?)?;
                    Ok(saved(&identity, &key, &rsp))
                });
            match renewed {
                Ok(kept) => {
                    token = rsp_token(&kept);
                    slot.generation
                        .store(kept.generation, std::sync::atomic::Ordering::Release);
                    if let Some(p) = &persist {
                        p.save_credentials(kept);
                    }
                    // The control plane hears of the new leaf with the next health report.
                    on_renewed();
                    let (_, na) = creds.validity();
                    metrics.cert_expiry.set(unix(na) as i64);
                    metrics.cert_renewals.inc();
                    tracing::debug!(%identity, expires = ?na, "certificate renewed");
                    break;
                }
                Err(e) => {
                    let refused = matches!(&e, IdentityError::Refused(s) if s.code() == tonic::Code::PermissionDenied);
                    if let Some(join) = fallback.take().filter(|_| refused) {
                        tracing::warn!(%identity, error = %e, "the CA refused the renewal token; trying the join token");
                        token = join;
                        continue;
                    }
                    // Keep serving with the current certificate; it is still valid for a while.
                    tracing::warn!(%identity, error = %e, "certificate renewal failed; retrying");
                    tokio::time::sleep(jittered(backoff)).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// The token the next renewal spends.
fn rsp_token(kept: &SavedCredentials) -> String {
    kept.renewal_token.clone().unwrap_or_default()
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}

/// What `weft identity` shows: the identity, each certificate of the chain and of the trust
/// bundle (subject, issuer, SANs, validity, PEM).
pub fn describe(creds: &Credentials) -> serde_json::Value {
    let chain: Vec<serde_json::Value> = creds.chain().iter().map(|c| cert_json(c)).collect();
    let bundle: Vec<serde_json::Value> = creds.bundle().iter().map(|c| cert_json(c)).collect();
    let (nb, na) = creds.validity();
    serde_json::json!({
        "identity": creds.identity(),
        "not_before": rfc3339(nb),
        "not_after": rfc3339(na),
        "renew_at": rfc3339(creds.renew_at()),
        "chain": chain,
        "trust_bundle": bundle,
    })
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn cert_json(der: &CertificateDer<'_>) -> serde_json::Value {
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, c)) => {
            let sans: Vec<String> = c
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|ext| {
                    ext.value
                        .general_names
                        .iter()
                        .map(|n| match n {
                            x509_parser::extensions::GeneralName::URI(u) => format!("URI:{u}"),
                            x509_parser::extensions::GeneralName::DNSName(d) => format!("DNS:{d}"),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            serde_json::json!({
                "subject": c.subject().to_string(),
                "issuer": c.issuer().to_string(),
                "serial": c.raw_serial_as_string(),
                "not_before": c.validity().not_before.to_string(),
                "not_after": c.validity().not_after.to_string(),
                "subject_alt_names": sans,
                "is_ca": c.is_ca(),
                "pem": pem,
            })
        }
        Err(e) => serde_json::json!({ "error": e.to_string(), "pem": pem }),
    }
}
