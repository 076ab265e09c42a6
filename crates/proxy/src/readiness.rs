//! Whether a proxy should receive traffic as an endpoint (and route any), and why not: one
//! answer for the admin `/ready` and for the health the proxy reports to its control plane.

use crate::identity::Slot;
use crate::inbound::AppHealth;
use crate::server::Drain;
use crate::settings::Mode;
use crate::state::StateHandle;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Readiness {
    mode: Mode,
    /// The mesh runs mTLS: no certificate, not ready.
    needs_certificate: bool,
    state: StateHandle,
    tls: Arc<Slot>,
    health: Arc<AppHealth>,
    drain: Drain,
    /// Set the first time the proxy is ready; from then on only what can change while it
    /// serves (drain, app, certificate, snapshot) makes it not ready.
    started: AtomicBool,
}

impl Readiness {
    pub fn new(
        mode: Mode,
        needs_certificate: bool,
        state: StateHandle,
        tls: Arc<Slot>,
        health: Arc<AppHealth>,
        drain: Drain,
    ) -> Readiness {
        Readiness {
            mode,
            needs_certificate,
            state,
            tls,
            health,
            drain,
            started: AtomicBool::new(false),
        }
    }

    /// The app's health, whose `changed` notifier wakes whoever reports readiness.
    pub fn health(&self) -> &Arc<AppHealth> {
        &self.health
    }

    /// Why this proxy should not receive traffic as an endpoint (nor route any), if it should
    /// not. Until its first snapshot it knows neither routes nor the policies it must enforce on
    /// what it receives, so it is not ready without one.
    pub fn not_ready_reason(&self) -> Option<Cow<'static, str>> {
        let why = if self.drain.is_draining() {
            "draining"
        } else if !self.state.load().applied {
            "no snapshot from the control plane yet"
        } else if self.needs_certificate && self.tls.get().is_none() {
            "no certificate from the mesh CA yet"
        } else if self.mode == Mode::Sidecar && !self.health.is_ready() {
            if let Some(why) = self.health.why() {
                return Some(why.into());
            }
            "app is not accepting connections"
        } else if let Some(uri) = self.starting_without_jwks() {
            return Some(format!("JWKS {uri} not fetched yet").into());
        } else {
            self.started.store(true, Ordering::Release);
            return None;
        };
        Some(why.into())
    }

    /// While the proxy starts (it has never been ready), a JWKS its JWT rules need and has not
    /// fetched yet holds it back, so that valid tokens are not refused right after it says
    /// ready (Istio's control plane inlines the keys in the config for the same reason). A
    /// JWKS that a later snapshot brings does not take a serving proxy out of rotation.
    fn starting_without_jwks(&self) -> Option<String> {
        if self.mode == Mode::Client || self.started.load(Ordering::Acquire) {
            return None;
        }
        self.state.load().security.pending_jwks()
    }
}
