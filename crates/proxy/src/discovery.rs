//! The control-plane stream. Says hello (who this proxy is, where it listens), applies each
//! snapshot pushed to it (validated on arrival; a bad one is nacked and the last good one keeps
//! serving), acks it, and reports readiness and drain. When the control plane goes away the
//! proxy keeps serving its last snapshot and reconnects with jittered exponential backoff.
//!
//! With a snapshot that carries some services only (`on_demand`), the stream also carries the
//! hosts requests named and the snapshot lacks ([`crate::on_demand`]) to the control plane, and
//! its refusals back.
//!
//! With a state directory ([`crate::persist`]), every snapshot applied is kept there, and a
//! proxy that starts finds the last one and serves from it (checked as a pushed one is) until
//! its control plane answers and pushes the current one.

use crate::metrics::Metrics;
use crate::persist::Persist;
use crate::readiness::Readiness;
use crate::security;
use crate::server::Drain;
use crate::settings::Mode;
use crate::state::{ProxyState, SnapshotSource, StateHandle};
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

/// What the control stream needs: who this proxy is, and the handles it updates.
pub struct Discovery {
    /// The control plane: where, and over TLS or not.
    pub control: Arc<crate::control_link::ControlLink>,
    /// The hello this proxy introduces itself with (who it is, where it listens).
    pub hello: pb::Hello,
    pub mode: Mode,
    /// The workload's namespace and labels (Istio `sourceLabels` matches, security rules).
    pub namespace: String,
    pub labels: model::Labels,
    /// The port its own rules are about: the ingress's listener port; `None` for a sidecar,
    /// whose port is its service's in each snapshot.
    pub ingress_port: Option<u16>,
    pub state: StateHandle,
    pub security: security::Compiler,
    /// The proxy's credentials, whose trust bundle snapshots update.
    pub tls: Arc<crate::identity::Slot>,
    /// Told when the inbound port's mTLS mode changes (plaintext connections close on STRICT).
    pub inbound_tls: Arc<crate::tls::InboundTls>,
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
    pub drain: Drain,
    /// The state directory: snapshots applied are kept there, and the last one is where a
    /// starting proxy begins.
    pub persist: Option<Arc<Persist>>,
    /// Hosts asked for on demand, and who waits for them.
    pub on_demand: Arc<crate::on_demand::OnDemand>,
}

/// Runs until the process exits. A proxy that joins the mesh CA first waits for its
/// certificate: its control stream proves who it is with it.
pub async fn run(shared: Arc<Discovery>) {
    restore(&shared);
    if shared.control.is_tls() {
        shared.tls.wait_installed().await;
    }
    let mut backoff = BACKOFF_MIN;
    let mut refused_said = false;
    loop {
        let got_snapshot = match session(&shared).await {
            Ok(got) => got,
            Err((got, StreamError::Status(s)))
                if s.code() == tonic::Code::Unauthenticated && !shared.control.is_tls() =>
            {
                if !std::mem::replace(&mut refused_said, true) {
                    tracing::error!(
                        control = %shared.control.addr(),
                        "{}; the control plane refused the stream: {}",
                        no_token_message(),
                        s.message()
                    );
                }
                got
            }
            Err((got, e)) => {
                tracing::warn!(control = %shared.control.addr(), error = %e, "control plane stream lost; serving the last snapshot");
                got
            }
        };
        shared.metrics.control_connected.set(0);
        if shared.control.replicas() > 1 {
            // Another replica serves the same mesh: try it next, at once the first time.
            let next = shared.control.fail_over();
            tracing::info!(control = %next, "trying another control-plane replica");
            if got_snapshot {
                backoff = BACKOFF_MIN;
                continue;
            }
        }
        if got_snapshot {
            backoff = BACKOFF_MIN;
        }
        let jitter = rand::thread_rng().gen_range(0.5..1.5);
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// The hello, listing what this proxy was given on demand so far.
fn hello(shared: &Discovery) -> pb::ProxyMessage {
    pb::ProxyMessage {
        msg: Some(Msg::Hello(pb::Hello {
            asked: shared.on_demand.asked(),
            ..shared.hello.clone()
        })),
    }
}

fn health(shared: &Discovery) -> pb::ProxyMessage {
    let (ready, reason) = match shared.readiness.not_ready_reason() {
        None => (true, String::new()),
        Some(r) => (false, r.to_string()),
    };
    pb::ProxyMessage {
        msg: Some(Msg::Health(pb::Health {
            ready,
            reason,
            leaf_generation: shared.tls.generation(),
        })),
    }
}

/// One connection's life. Returns whether it delivered at least one snapshot.
async fn session(shared: &Arc<Discovery>) -> Result<bool, (bool, StreamError)> {
    let mut got = false;
    let endpoint = shared
        .control
        .endpoint()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let channel = shared
        .control
        .connect(endpoint)
        .await
        .map_err(|e| (got, e.into()))?;
    let mut client = DiscoveryClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    let _ = tx.send(hello(shared)).await;
    let _ = tx.send(health(shared)).await;
    // Asks a lost stream did not carry (those it did are in the hello).
    let unsent = shared.on_demand.take_unsent();
    if !unsent.is_empty() {
        let _ = tx
            .send(pb::ProxyMessage {
                msg: Some(Msg::Ask(pb::Ask { hosts: unsent })),
            })
            .await;
    }
    let mut drained_sent = false;
    if shared.drain.is_draining() {
        let _ = tx.send(drain_msg()).await;
        drained_sent = true;
    }
    let request = tonic::Request::new(ReceiverStream::new(rx));
    let mut inbound = client
        .stream(request)
        .await
        .map_err(|e| (got, e.into()))?
        .into_inner();
    shared.metrics.control_connected.set(1);
    tracing::info!(control = %shared.control.addr(), "connected to the control plane");
    // The ack of a snapshot whose JWT rules wait for keys: sent once they are fetched (or given
    // up on), so that "applied" means the rules are in force with their keys.
    let mut held: Option<pb::Ack> = None;
    let send = |m: Msg| tx.send(pb::ProxyMessage { msg: Some(m) });
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let msg = msg.map_err(|e| (got, e.into()))?.ok_or((got, StreamError::Closed))?;
                if !msg.refused.is_empty() {
                    tracing::debug!(hosts = ?msg.refused, "the control plane has no service for these hosts");
                    shared.on_demand.refused(msg.refused, shared.state.load().version());
                }
                if let Some(snapshot) = msg.snapshot {
                    let ack = apply(shared, snapshot);
                    got |= ack.error.is_empty();
                    // A newer snapshot in force supersedes a held ack; a rejected one leaves
                    // what is in force, so a held ack goes first.
                    let mut out = Vec::with_capacity(2);
                    if !ack.error.is_empty() {
                        out.extend(held.take());
                        out.push(ack);
                    } else if shared.mode != Mode::Client
                        && shared.state.load().security.pending_jwks().is_some()
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
            _ = shared.readiness.health().changed.notified() => {
                if held.is_some() && shared.state.load().security.pending_jwks().is_none() {
                    if let Some(ack) = held.take() {
                        if send(Msg::Ack(ack)).await.is_err() {
                            return Err((got, StreamError::Closed));
                        }
                    }
                }
                let _ = tx.send(health(shared)).await;
            }
            _ = shared.on_demand.to_send() => {
                let hosts = shared.on_demand.take_unsent();
                if !hosts.is_empty() && send(Msg::Ask(pb::Ask { hosts })).await.is_err() {
                    return Err((got, StreamError::Closed));
                }
            }
            _ = shared.drain.started(), if !drained_sent => {
                drained_sent = true;
                let _ = tx.send(drain_msg()).await;
            }
        }
    }
}

/// What a proxy without a join token says in a mesh that runs mTLS.
fn no_token_message() -> String {
    format!(
        "the mesh runs mTLS and this proxy has no join token (--join-token-file, or {}); not serving rather than talking plaintext",
        model::names::JOIN_TOKEN_ENV
    )
}

fn drain_msg() -> pb::ProxyMessage {
    pb::ProxyMessage {
        msg: Some(Msg::Drain(pb::Drain {})),
    }
}

/// Puts the snapshot kept in the state directory in force, if there is one and it is valid;
/// one that is not is reported, naming its file, and left for the control plane's to replace.
fn restore(shared: &Discovery) {
    let Some(persist) = &shared.persist else {
        return;
    };
    let path = persist.snapshot_path();
    match persist.load_snapshot() {
        Ok(None) => {}
        Ok(Some(wire)) => {
            let ack = apply_from(shared, wire, SnapshotSource::Persisted);
            if ack.error.is_empty() {
                tracing::info!(
                    version = ack.version,
                    path = %path.display(),
                    "serving the snapshot kept from the last run until the control plane answers"
                );
            } else {
                tracing::warn!(
                    version = ack.version,
                    path = %path.display(),
                    error = %ack.error,
                    "the kept snapshot is not valid; ignoring it"
                );
            }
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the kept snapshot cannot be read; ignoring it")
        }
    }
}

/// Validates and compiles a snapshot pushed by the control plane and puts it in force with
/// one swap; the ack says what happened.
fn apply(shared: &Discovery, wire: pb::Snapshot) -> pb::Ack {
    apply_from(shared, wire, SnapshotSource::Control)
}

/// [`apply`] for a snapshot from `source`. One from the control plane that is put in force is
/// kept in the state directory, if the proxy has one.
fn apply_from(shared: &Discovery, mut wire: pb::Snapshot, source: SnapshotSource) -> pb::Ack {
    let version = wire.version;
    // Encoded before it is taken apart; kept only once it is in force.
    let keep = match (&shared.persist, source) {
        (Some(_), SnapshotSource::Control) => Some(prost::Message::encode_to_vec(&wire)),
        _ => None,
    };
    let bundle = std::mem::take(&mut wire.trust_bundle_pem);
    if !bundle.is_empty() && !shared.control.is_tls() {
        // The mesh runs mTLS: without a certificate this proxy would reach its peers in
        // plaintext. It takes no snapshot (and so routes nothing and is never ready) instead.
        let error = no_token_message();
        tracing::error!(version, "{error}");
        return pb::Ack { version, error };
    }
    // The trust bundle and the CA's generation are the mesh's, not the configuration's: they
    // are taken even from a snapshot whose routes or policies are refused below, so that a
    // proxy refusing its configuration still trusts its peers' renewed certificates.
    if wire.ca_generation != 0 {
        shared.tls.signing_generation(wire.ca_generation);
    }
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
    match compile(shared, wire, source) {
        Ok((next, endpoints)) => {
            let mode = next.security.mode;
            shared.state.store(next);
            shared.on_demand.applied(version);
            shared.inbound_tls.mode_changed(mode);
            shared.metrics.config_version.set(version as i64);
            shared.metrics.endpoints_ready.set(endpoints as i64);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            shared.metrics.config_updated.set(now);
            tracing::debug!(
                version,
                endpoints,
                source = source.as_str(),
                "snapshot applied"
            );
            if let (Some(persist), Some(encoded)) = (&shared.persist, keep) {
                persist.save_snapshot(encoded);
            }
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

/// The next state: the snapshot's routes (carrying over the live state of the endpoints and
/// backends in force) and its security compiled for this workload; and how many endpoints it
/// lists.
fn compile(
    shared: &Discovery,
    wire: pb::Snapshot,
    source: SnapshotSource,
) -> Result<(ProxyState, usize), String> {
    let snapshot = Snapshot::try_from(wire).map_err(|e| e.to_string())?;
    let endpoints: usize = snapshot.services.iter().map(|s| s.endpoints.len()).sum();
    let me = crate::route::Me {
        namespace: &shared.namespace,
        labels: &shared.labels,
    };
    let routes = RouteTable::compile_for(snapshot, &shared.state.load().routes, me)
        .map_err(|e| e.to_string())?;
    // The port our own rules are about: our listener's (the ingress), our service's (sidecars).
    let own = model::ServiceKey::new(&shared.hello.service, &shared.hello.namespace);
    let own = routes.snapshot.service(&own);
    let port = shared
        .ingress_port
        .unwrap_or_else(|| own.map_or(0, |svc| svc.port));
    let app_limits = crate::app_pool::AppLimits::from_pool(
        own.and_then(|svc| svc.policy.connection_pool.as_ref()),
    );
    let security = shared.security.compile(&routes.snapshot.security, port);
    let next = ProxyState {
        applied: true,
        source: Some(source),
        routes,
        security,
        app_limits,
    };
    Ok((next, endpoints))
}

#[cfg(test)]
mod tests;
