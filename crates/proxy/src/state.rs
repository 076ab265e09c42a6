//! The state a proxy serves from: one snapshot compiled for this proxy (its routes and
//! backends, the security it enforces on what it receives, the inbound port's mTLS mode), put
//! in force with one swap. A request loads it once and reads that one version to its end; the
//! control stream compiles the next one off the data path.

use crate::security;
use crate::table::RouteTable;
use arc_swap::{ArcSwap, Guard};
use std::sync::Arc;

/// One snapshot, compiled for this proxy.
pub struct ProxyState {
    /// False for the empty state a proxy starts with, before its first snapshot.
    pub applied: bool,
    /// Where the snapshot came from; `None` before the first.
    pub source: Option<SnapshotSource>,
    /// Services, their balancers and routes, the gateway's virtual hosts.
    pub routes: RouteTable,
    /// JWT and authorization rules and the inbound port's mTLS mode.
    pub security: security::Compiled,
    /// A sidecar's connections to its app: its own service's `connectionPool`.
    pub app_limits: crate::app_pool::AppLimits,
}

impl ProxyState {
    /// The state before any snapshot: no routes, and `security` (nothing enforced, PERMISSIVE).
    pub fn empty(security: security::Compiled) -> ProxyState {
        ProxyState {
            applied: false,
            source: None,
            routes: RouteTable::default(),
            security,
            app_limits: Default::default(),
        }
    }

    /// The snapshot's version (0 before the first).
    pub fn version(&self) -> u64 {
        self.routes.version()
    }
}

/// Where a snapshot in force came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotSource {
    /// Pushed by the control plane on this proxy's stream.
    Control,
    /// Read from the state directory at start, kept from a previous run.
    Persisted,
}

impl SnapshotSource {
    pub const ALL: [SnapshotSource; 2] = [SnapshotSource::Control, SnapshotSource::Persisted];

    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotSource::Control => "control",
            SnapshotSource::Persisted => "persisted",
        }
    }
}

/// Where the state in force is kept; every reader holds a clone.
#[derive(Clone)]
pub struct StateHandle(Arc<ArcSwap<ProxyState>>);

impl StateHandle {
    pub fn new(initial: ProxyState) -> StateHandle {
        StateHandle(Arc::new(ArcSwap::from_pointee(initial)))
    }

    /// The state in force, for a read that does not await.
    pub fn load(&self) -> Guard<Arc<ProxyState>> {
        self.0.load()
    }

    /// The state in force, held for as long as a request runs.
    pub fn load_full(&self) -> Arc<ProxyState> {
        self.0.load_full()
    }

    /// Puts `next` in force: requests that start from now on read it.
    pub fn store(&self, next: ProxyState) {
        self.0.store(Arc::new(next));
    }
}
