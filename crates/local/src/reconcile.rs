//! Live changes to the Mesh document (`weft up --watch`): when the services the registry holds
//! change, the running replicas are brought in line, one action at a time, each reported on one
//! line (`mesh: web replicas 2 → 3: started web-2`).
//!
//! - A replica that is no longer declared (fewer replicas, a workload or service removed) is
//!   drained: its sidecar gets SIGTERM, stops accepting, is no longer listed as an endpoint and
//!   finishes its in-flight requests, then its app is stopped.
//! - A replica newly declared (more replicas, a workload or service added) is started.
//! - A replica whose launch changed (command, env, labels, sidecar, restartPolicy, access-log
//!   annotation, port names and protocols) is replaced one at a time: the new one (same instance name) starts, and only once it is
//!   routable — an endpoint in a snapshot every proxy runs — is the old one drained. A new one
//!   that does not become routable within the ready timeout is stopped, the old one keeps
//!   serving, and the rollout stops there.
//!
//! A job's replica that has finished is left alone by edits elsewhere (nothing about it
//! changed); a change of its own workload replaces it like any other, which runs the job again.
//!
//! Changes the registry applies by itself (ports, load balancer, routes, policies) need no
//! process here.

use crate::up::{Replica, Stages, Starter, ACCESS_LOG_ANNOTATIONS};
use control::Registry;
use model::{MeshSpec, ServiceSpec, WorkloadSpec};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Keeps the replicas in line with the registry's services.
pub(crate) struct Reconciler<'a, 's> {
    pub starter: &'a Starter<'s>,
    pub registry: &'a Arc<Registry>,
    pub stages: &'a mut Stages,
    /// The mesh last acted on.
    pub applied: MeshSpec,
    pub replicas: Vec<Replica>,
}

impl Reconciler<'_, '_> {
    /// Acts on every change of the declared services until `shutdown`.
    pub async fn run(mut self, shutdown: &CancellationToken) {
        let mut generation = self.registry.watch_generation();
        loop {
            let next = self.registry.spec();
            if next.services != self.applied.services {
                // Pods name services by their virtual IPs: new names resolve before new
                // replicas start.
                if let Some(net) = &self.starter.network {
                    net.write_hosts(&next.services);
                }
                tokio::select! {
                    _ = self.apply(&next) => {}
                    _ = shutdown.cancelled() => return,
                }
                self.applied = next;
                continue;
            }
            tokio::select! {
                _ = generation.changed() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Brings the replicas from `self.applied` to `next`.
    async fn apply(&mut self, next: &MeshSpec) {
        let old = self.applied.clone();
        for svc in &old.services {
            if !next.services.iter().any(|s| s.key() == svc.key()) {
                for w in &svc.workloads {
                    let what = format!("service {} removed", svc.name);
                    self.stop_from(svc, w, 0, &what).await;
                }
            }
        }
        for svc in &next.services {
            let before = old.services.iter().find(|s| s.key() == svc.key());
            if let Some(before) = before {
                for w in &before.workloads {
                    if !svc.workloads.iter().any(|n| n.name == w.name) {
                        let what = format!("{} workload {} removed", svc.name, w.name);
                        self.stop_from(before, w, 0, &what).await;
                    }
                }
            }
            for w in &svc.workloads {
                let was =
                    before.and_then(|b| Some((b, b.workloads.iter().find(|o| o.name == w.name)?)));
                match was {
                    None => {
                        let what = match before {
                            None => format!("service {} added", svc.name),
                            Some(_) => format!("{} workload {} added", svc.name, w.name),
                        };
                        self.start_range(svc, w, 0, &what).await;
                    }
                    Some((old_svc, old_w)) => self.change(old_svc, old_w, svc, w).await,
                }
            }
        }
    }

    /// A workload that stays: fewer replicas drain first, then changed ones are replaced one at
    /// a time, then more start.
    async fn change(
        &mut self,
        old_svc: &ServiceSpec,
        old: &WorkloadSpec,
        svc: &ServiceSpec,
        w: &WorkloadSpec,
    ) {
        let scale = format!("{} replicas {} → {}", w.name, old.replicas, w.replicas);
        if w.replicas < old.replicas {
            self.stop_from(old_svc, old, w.replicas, &scale).await;
        }
        let changed = changes(old_svc, old, svc, w, self.starter.network.is_some());
        if !changed.is_empty() {
            let what = format!("{} {} changed", w.name, changed.join(", "));
            for i in 0..w.replicas.min(old.replicas) {
                if !self.replace(svc, w, i, &what).await {
                    break;
                }
            }
        }
        if w.replicas > old.replicas {
            self.start_range(svc, w, old.replicas, &scale).await;
        }
    }

    /// Drains the replicas of `w` with index `from` and up, highest first.
    async fn stop_from(&mut self, svc: &ServiceSpec, w: &WorkloadSpec, from: u32, what: &str) {
        let key = svc.key();
        let mut gone: Vec<Replica> = Vec::new();
        let mut kept = Vec::new();
        for r in self.replicas.drain(..) {
            if r.service == key && r.workload == w.name && r.index >= from {
                gone.push(r);
            } else {
                kept.push(r);
            }
        }
        self.replicas = kept;
        gone.sort_by_key(|r| std::cmp::Reverse(r.index));
        for r in gone {
            r.stop().await;
            line(format!("{what}: stopped {}", r.instance));
        }
    }

    /// Starts the replicas of `w` from index `from` up to its count, each waited on until it
    /// is routable.
    async fn start_range(&mut self, svc: &ServiceSpec, w: &WorkloadSpec, from: u32, what: &str) {
        for i in from..w.replicas {
            let instance = w.instance_name(i);
            match self.starter.start_replica(svc, w, i, self.stages).await {
                Ok(r) => {
                    let ready = self.routable(&r).await;
                    self.replicas.push(r);
                    if ready {
                        line(format!("{what}: started {instance}"));
                    } else {
                        line(format!(
                            "{what}: started {instance}, which is not routable after {:?}",
                            self.timeout()
                        ));
                    }
                }
                Err(e) => line(format!("{what}: cannot start {instance}: {e}")),
            }
        }
    }

    /// Replaces replica `i` of `w`: the new one starts, and once it is routable the old one
    /// drains. Whether the rollout may go on.
    async fn replace(&mut self, svc: &ServiceSpec, w: &WorkloadSpec, i: u32, what: &str) -> bool {
        let key = svc.key();
        let instance = w.instance_name(i);
        let new = match self.starter.start_replica(svc, w, i, self.stages).await {
            Ok(r) => r,
            Err(e) => {
                line(format!("{what}: cannot start a new {instance}: {e}; the rollout stops, the old one keeps serving"));
                return false;
            }
        };
        if !self.routable(&new).await {
            new.stop().await;
            line(format!(
                "{what}: the new {instance} did not become routable within {:?}; it was stopped, the old one keeps serving and the rollout stops",
                self.timeout()
            ));
            return false;
        }
        let old = self
            .replicas
            .iter()
            .position(|r| r.service == key && r.workload == w.name && r.index == i)
            .map(|at| self.replicas.remove(at));
        if let Some(old) = old {
            old.stop().await;
        }
        self.replicas.push(new);
        line(format!("{what}: replaced {instance}"));
        true
    }

    fn timeout(&self) -> Duration {
        self.starter.opts.ready_timeout
    }

    /// Waits until `r` is routable: its sidecar's registration is an endpoint in a snapshot
    /// every live proxy has applied. A replica without a sidecar is never an endpoint: it is
    /// taken as started; so is a job's that has finished.
    async fn routable(&self, r: &Replica) -> bool {
        let Some(pid) = r.sidecar.as_ref().and_then(|s| s.pid) else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut generation = self.registry.watch_generation();
        loop {
            // A job that ran to its end (its outcome reaches the registry, which wakes this).
            if r.finished() {
                return true;
            }
            let listed = self
                .registry
                .proxies()
                .iter()
                .find(|p| p.node.pid == pid)
                .and_then(|p| p.listed_since);
            if let Some(version) = listed {
                let answers = self.registry.answers(version);
                if answers.silent.is_empty() && answers.refused.is_empty() {
                    return true;
                }
            }
            tokio::select! {
                _ = generation.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }
}

/// What changed in how a workload's replicas are launched (each such change needs new
/// processes; in `pods`, a transparent mesh, a change of the capture annotations needs new
/// pods, whose rules are written when they are made); empty: nothing.
fn changes(
    old_svc: &ServiceSpec,
    old: &WorkloadSpec,
    svc: &ServiceSpec,
    w: &WorkloadSpec,
    pods: bool,
) -> Vec<&'static str> {
    let mut out = Vec::new();
    if pods && old_svc.capture != svc.capture {
        out.push("capture annotations");
    }
    if old.command != w.command {
        out.push("command");
    }
    if old.env != w.env {
        out.push("env");
    }
    if old.labels != w.labels {
        out.push("labels");
    }
    if old.sidecar != w.sidecar {
        out.push("sidecar");
    }
    if old.restart_policy != w.restart_policy {
        out.push("restartPolicy");
    }
    let access_log = |s: &ServiceSpec| {
        ACCESS_LOG_ANNOTATIONS
            .iter()
            .map(|k| s.annotations.get(*k).cloned())
            .collect::<Vec<_>>()
    };
    if access_log(old_svc) != access_log(svc) {
        out.push("access-log annotation");
    }
    // The app's PORT_<NAME> variables and what its sidecar speaks to it.
    let launched = |s: &ServiceSpec| {
        s.ports
            .iter()
            .map(|p| (p.name.clone(), p.protocol))
            .collect::<Vec<_>>()
    };
    if launched(old_svc) != launched(svc) {
        out.push("ports");
    }
    out
}

fn line(text: String) {
    crate::output::line(format!("mesh: {text}"));
}
