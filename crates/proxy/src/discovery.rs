//! The control-plane stream. Says hello (who this proxy is, where it listens), applies each
//! snapshot pushed to it (validated on arrival; a bad one is nacked and the last good one keeps
//! serving), acks it, and reports readiness and drain. When the control plane goes away the
//! proxy keeps serving its last snapshot and reconnects with jittered exponential backoff.

use crate::run::Shared;
use crate::table::RouteTable;
use api::pb::{self, discovery_client::DiscoveryClient, proxy_message::Msg};
use model::Snapshot;
use rand::Rng;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("stream closed")]
    Closed,
}

/// Runs until the process exits.
pub async fn run(shared: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let got_snapshot = match session(&shared).await {
            Ok(got) => got,
            Err((got, e)) => {
                tracing::warn!(control = %shared.settings.control, error = %e, "control plane stream lost; serving the last snapshot");
                got
            }
        };
        shared.metrics.control_connected.set(0);
        if got_snapshot {
            backoff = BACKOFF_MIN;
        }
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn hello(shared: &Shared) -> pb::ProxyMessage {
    let s = &shared.settings;
    let b = &shared.bound;
    let addr = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    pb::ProxyMessage {
        msg: Some(Msg::Hello(pb::Hello {
            service: s.service.clone(),
            namespace: s.namespace.clone(),
            workload: s.workload.clone(),
            instance: s.instance.clone(),
            labels: s.labels.clone().into_iter().collect(),
            inbound: addr(b.inbound),
            outbound: addr(b.outbound),
            admin: b.admin.to_string(),
            app: addr(s.app),
            mode: s.mode.as_str().to_string(),
            identity: s.identity.0.clone(),
            pid: std::process::id(),
        })),
    }
}

fn health(shared: &Shared) -> pb::ProxyMessage {
    let (ready, reason) = match shared.not_ready_reason() {
        None => (true, String::new()),
        Some(r) => (false, r.to_string()),
    };
    pb::ProxyMessage {
        msg: Some(Msg::Health(pb::Health { ready, reason })),
    }
}

/// One connection's life. Returns whether it delivered at least one snapshot.
async fn session(shared: &Arc<Shared>) -> Result<bool, (bool, StreamError)> {
    let mut got = false;
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", shared.settings.control))
            .map_err(|e| (got, e.into()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| (got, e.into()))?;
    let mut client = DiscoveryClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    let _ = tx.send(hello(shared)).await;
    let _ = tx.send(health(shared)).await;
    let mut drained_sent = false;
    if shared.drain.is_draining() {
        let _ = tx.send(drain_msg()).await;
        drained_sent = true;
    }
    let mut inbound = client
        .stream(ReceiverStream::new(rx))
        .await
        .map_err(|e| (got, e.into()))?
        .into_inner();
    shared.metrics.control_connected.set(1);
    tracing::info!(control = %shared.settings.control, "connected to the control plane");
    // The ack of a snapshot whose JWT rules wait for keys: sent once they are fetched (or given
    // up on), so that "applied" means the rules are in force with their keys.
    let mut held: Option<pb::Ack> = None;
    let send = |m: Msg| tx.send(pb::ProxyMessage { msg: Some(m) });
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let msg = msg.map_err(|e| (got, e.into()))?.ok_or((got, StreamError::Closed))?;
                if let Some(snapshot) = msg.snapshot {
                    let ack = apply(shared, snapshot);
                    got |= ack.error.is_empty();
                    // A newer snapshot in force supersedes a held ack; a rejected one leaves
                    // what is in force, so a held ack goes first.
                    let mut out = Vec::with_capacity(2);
                    if !ack.error.is_empty() {
                        out.extend(held.take());
                        out.push(ack);
                    } else if shared.settings.mode != crate::settings::Mode::Client
                        && shared.security.pending_jwks().is_some()
                    {
                        held = Some(ack);
                    } else {
                        held = None;
                        out.push(ack);
                    }
                    for ack in out {
                        if send(Msg::Ack(ack)).await.is_err() {
                            return Err((got, StreamError::Closed));
                        }
                    }
                    // Readiness may have flipped with the first snapshot.
                    let _ = tx.send(health(shared)).await;
                }
            }
            // Health changes, and JWKS that settle (the store wakes the same notifier).
            _ = shared.health.changed.notified() => {
                if held.is_some() && shared.security.pending_jwks().is_none() {
                    if let Some(ack) = held.take() {
                        if send(Msg::Ack(ack)).await.is_err() {
                            return Err((got, StreamError::Closed));
                        }
                    }
                }
                let _ = tx.send(health(shared)).await;
            }
            _ = shared.drain.started(), if !drained_sent => {
                drained_sent = true;
                let _ = tx.send(drain_msg()).await;
            }
        }
    }
}

fn drain_msg() -> pb::ProxyMessage {
    pb::ProxyMessage {
        msg: Some(Msg::Drain(pb::Drain {})),
    }
}

/// Validates and swaps in a snapshot; the ack says what happened.
fn apply(shared: &Shared, mut wire: pb::Snapshot) -> pb::Ack {
    let version = wire.version;
    let bundle = std::mem::take(&mut wire.trust_bundle_pem);
    if !bundle.is_empty() {
        if let Some(creds) = shared.tls.get() {
            let roots: Result<Vec<_>, _> =
                rustls::pki_types::CertificateDer::pem_slice_iter(bundle.as_bytes()).collect();
            match roots
                .map_err(|e| e.to_string())
                .and_then(|r| creds.set_bundle(r).map_err(|e| e.to_string()))
            {
                Ok(true) => tracing::info!(version, "trust bundle updated"),
                Ok(false) => {}
                Err(e) => tracing::warn!(version, error = %e, "trust bundle not applied"),
            }
        }
    }
    let compiled = Snapshot::try_from(wire)
        .map_err(|e| e.to_string())
        .and_then(|snapshot| {
            let endpoints: usize = snapshot.services.iter().map(|s| s.endpoints.len()).sum();
            let me = crate::route::Me {
                namespace: &shared.settings.namespace,
                labels: &shared.settings.labels,
            };
            RouteTable::compile_for(snapshot, &shared.table.load_full(), me)
                .map(|t| (t, endpoints))
                .map_err(|e| e.to_string())
        });
    match compiled {
        Ok((table, endpoints)) => {
            // The port our own rules are about: our service's (sidecars), our listener's
            // (the ingress).
            let s = &shared.settings;
            let own = model::ServiceKey::new(&s.service, &s.namespace);
            let port = match s.mode {
                crate::settings::Mode::Ingress => shared.bound.outbound.map_or(0, |a| a.port()),
                _ => table.snapshot.service(&own).map_or(0, |svc| svc.port),
            };
            let mode = shared.security.update(&table.snapshot.security, port);
            shared.inbound_tls.set_mode(mode);
            shared.table.store(Arc::new(table));
            shared
                .has_snapshot
                .store(true, std::sync::atomic::Ordering::Release);
            shared.metrics.config_version.set(version as i64);
            shared.metrics.endpoints_ready.set(endpoints as i64);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            shared.metrics.config_updated.set(now);
            tracing::debug!(version, endpoints, "snapshot applied");
            pb::Ack {
                version,
                error: String::new(),
            }
        }
        Err(e) => {
            tracing::warn!(version, error = %e, "snapshot rejected; keeping the last good one");
            pb::Ack { version, error: e }
        }
    }
}

#[cfg(test)]
mod tests;
