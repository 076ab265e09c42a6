//! Services asked for on demand. A snapshot that carries some services only (`on_demand`: the
//! Mesh file's `spec.scope: observed`) leaves out those this proxy has not called yet: a
//! request (HTTP, an upgrade, a `CONNECT` tunnel, a captured connection) for a host it lacks
//! asks the control plane for it on the discovery stream and is held, up to [`ASK_WAIT`], until
//! a snapshot carrying it is in force (then it is routed as any) or the control plane refuses
//! the host (no service of the mesh has it, or the proxy's Sidecar does not admit it: then it
//! gets the usual unknown-host answer at once). Only requests that would otherwise be answered
//! "no service" come here; the others never touch it.
//!
//! The hosts given are kept for the proxy's life and listed in the Hello of every new stream,
//! so that a control plane it reconnects to (another replica) sends it the same services.

use crate::state::{ProxyState, StateHandle};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// The longest a request for a host the snapshot lacks is held while the control plane is
/// asked for it: a control plane answers within milliseconds (one view built and sent), so two
/// seconds covers a busy one or a proxy moving to another replica, and is still short next to
/// the timeouts clients use. Past it the request gets the unknown-host answer.
pub const ASK_WAIT: Duration = Duration::from_secs(2);

/// Refused hosts remembered before those refused under older snapshots are dropped: an app
/// names few hosts, but nothing bounds what it may name.
const REFUSALS_KEPT: usize = 1024;

/// What this proxy asked for, and who waits for answers.
pub struct OnDemand {
    inner: Mutex<Inner>,
    /// Bumped at every snapshot put in force and every refusal: waiters look again.
    changed: watch::Sender<u64>,
    /// Wakes the discovery stream to send what is to ask.
    to_send: Notify,
}

#[derive(Default)]
struct Inner {
    /// Hosts asked for and not refused since.
    asked: BTreeSet<String>,
    /// Asked for and not sent on the stream yet.
    unsent: Vec<String>,
    /// Refused hosts: when (a count of refusals) and the snapshot in force then. A request for
    /// one while that snapshot is still in force is answered at once, without asking again.
    refused: HashMap<String, (u64, u64)>,
    refusals: u64,
}

impl Default for OnDemand {
    fn default() -> Self {
        OnDemand {
            inner: Mutex::new(Inner::default()),
            changed: watch::Sender::new(0),
            to_send: Notify::new(),
        }
    }
}

/// How a host is asked for: lowercase, without a trailing dot.
fn normal(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

impl OnDemand {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain sets: a panic while one was held leaves nothing half-written that matters.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for `host` (as a request names it, without port) and waits until `has` says the
    /// state in force has it (`true`), or the control plane refused it or [`ASK_WAIT`] passed
    /// (`false`).
    pub async fn wait(
        &self,
        host: &str,
        state: &StateHandle,
        has: impl Fn(&ProxyState) -> bool,
    ) -> bool {
        let host = normal(host);
        if host.is_empty() {
            return false;
        }
        // Subscribed before anything is checked: no change between the check and the wait is
        // missed.
        let mut changes = self.changed.subscribe();
        let since = {
            let mut inner = self.lock();
            let version = state.load().version();
            if inner.refused.get(&host).is_some_and(|&(_, v)| v == version) {
                return false;
            }
            inner.asked.insert(host.clone());
            if !inner.unsent.contains(&host) {
                inner.unsent.push(host.clone());
            }
            inner.refusals
        };
        self.to_send.notify_one();
        let deadline = tokio::time::Instant::now() + ASK_WAIT;
        loop {
            if has(&state.load()) {
                return true;
            }
            if self
                .lock()
                .refused
                .get(&host)
                .is_some_and(|&(at, _)| at > since)
            {
                return false;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    tracing::debug!(%host, "no answer from the control plane within {ASK_WAIT:?}");
                    return false;
                }
            }
        }
    }

    /// Every host asked for and not refused: what a new stream's Hello lists.
    pub fn asked(&self) -> Vec<String> {
        self.lock().asked.iter().cloned().collect()
    }

    /// The hosts to send in an `Ask` now (each once).
    pub fn take_unsent(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().unsent)
    }

    /// Resolves once there is something to send ([`OnDemand::take_unsent`]).
    pub async fn to_send(&self) {
        self.to_send.notified().await
    }

    /// The control plane refused `hosts`, with snapshot `version` in force.
    pub fn refused(&self, hosts: Vec<String>, version: u64) {
        {
            let mut inner = self.lock();
            inner.refusals += 1;
            let at = inner.refusals;
            for host in hosts {
                let host = normal(&host);
                inner.asked.remove(&host);
                inner.refused.insert(host, (at, version));
            }
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// A snapshot (`version`) was put in force: waiters look at it. Refusals of older ones no
    /// longer answer requests at once (the mesh may have the host now); past
    /// [`REFUSALS_KEPT`] they are forgotten.
    pub fn applied(&self, version: u64) {
        {
            let mut inner = self.lock();
            if inner.refused.len() > REFUSALS_KEPT {
                inner.refused.retain(|_, &mut (_, v)| v == version);
            }
        }
        self.changed.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests;
