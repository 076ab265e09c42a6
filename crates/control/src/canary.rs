//! The canary controller: progressive rollouts run by the control plane. For each `kind:
//! Canary` in force it owns a route (a VirtualService, HTTPRoute or TrafficSplit, taken over
//! when there is one; other writers are refused while the Canary exists), moves the new
//! version's weight step by step, judges the new version's destination-side success rate and
//! p99 from its proxies' metrics after each interval, and promotes it or rolls it back.
//!
//! The rollout's state lives in the store with the route it owns (an annotation), so it goes
//! on when the CLI that started it exits and resumes at the same step after the control plane
//! restarts (over etcd, or a `weft control` whose store outlives it). Replicas sharing a store
//! may all run the controller: every move is a conditional update of the state in force. On a
//! Kubernetes cluster the leader alone runs it, and its moves are written to the cluster's
//! objects.
//!
//! Layout: [`routes`] (the owned route and how weights are written into it), [`analysis`]
//! (reading and judging the proxies' metrics), and here the state machine, the webhooks and
//! what the API shows and does.

pub mod analysis;
pub mod routes;

pub use routes::owner_of;

use crate::http_api::Api;
use config::Resource;
use model::canary::{Canary, Judged, Phase, RolloutState};
use stat::Reading;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// How often the controller looks at every rollout.
pub const TICK: Duration = Duration::from_millis(500);
/// How long a webhook may take to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// The `schema` of `GET /canaries` entries.
pub const SCHEMA: &str = "weft.canary/v1";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A reading of a rollout's replicas, the start of the interval being judged.
struct Mark {
    at: Instant,
    /// The state's `since_ms` it was taken for: a new step starts a new interval.
    since_ms: u64,
    readings: HashMap<String, Reading>,
}

#[derive(Default)]
struct Controller {
    marks: HashMap<String, Mark>,
    /// When each rollout's webhook was last called, so a failing one is retried each interval.
    hooked: HashMap<String, Instant>,
}

/// Runs the controller until `shutdown`.
pub async fn run(api: Arc<Api>, shutdown: CancellationToken) {
    let mut ctl = Controller::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        ctl.tick(&api).await;
    }
}

/// A rollout's spec in a form that changes when the Canary does (a changed Canary starts
/// over).
fn fingerprint(c: &Canary) -> String {
    let json = serde_json::to_string(c).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, json.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The state in force for `c`, if its rollout has started (and is still the same rollout).
fn state_of(store: &config::Store, c: &Canary) -> Option<(Resource, RolloutState)> {
    routes::state_in(store, &routes::key(c)).filter(|(_, s)| s.spec == fingerprint(c))
}

impl Controller {
    async fn tick(&mut self, api: &Arc<Api>) {
        let store = api.resources.current();
        // Most meshes run no rollout: then there is nothing to validate the whole set for.
        let concerns_us = store
            .resources
            .iter()
            .any(|r| r.kind == "Canary" || routes::owner_of(r).is_some());
        // On a cluster only the elected replica moves rollouts.
        if !concerns_us || !api.resources.runs_controllers() {
            self.marks.clear();
            self.hooked.clear();
            return;
        }
        let Ok(loaded) = store.load() else {
            return;
        };
        let live: Vec<String> = loaded.canaries.iter().map(routes::key).collect();
        // Routes of deleted Canaries are released as they stand.
        let orphans = routes::orphans(&store, &live);
        if !orphans.is_empty() {
            let released = api
                .resources
                .update(|cur| {
                    let again = routes::orphans(cur, &live);
                    (!again.is_empty()).then_some((Vec::new(), again))
                })
                .await;
            match released {
                Ok(_) => tracing::info!(
                    routes = orphans.len(),
                    "canary: released the routes of a deleted Canary"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "canary: releasing the routes of a deleted Canary")
                }
            }
        }
        self.marks.retain(|k, _| live.contains(k));
        self.hooked.retain(|k, _| live.contains(k));
        for c in &loaded.canaries {
            if let Err(e) = self.step(api, &store, c).await {
                tracing::warn!(canary = %routes::key(c), error = %e, "canary: cannot move the rollout");
            }
        }
    }

    /// Moves one rollout as far as it goes now.
    async fn step(
        &mut self,
        api: &Arc<Api>,
        store: &config::Store,
        c: &Canary,
    ) -> Result<(), String> {
        let key = routes::key(c);
        let now = now_ms();
        let Some((_, state)) = state_of(store, c) else {
            // Not started (or the Canary changed): start it, all traffic on the old version.
            let mut fresh = RolloutState::new(now);
            fresh.spec = fingerprint(c);
            self.marks.remove(&key);
            self.hooked.remove(&key);
            tracing::info!(canary = %key, from = %c.from, to = %c.to, target = %c.target.describe(), "canary: rollout started");
            return put(api, c, None, fresh).await;
        };
        let mut next = state.clone();
        match state.phase {
            Phase::Initializing => {
                if let Some(url) = &c.pre_rollout {
                    if !self.hook_due(&key, c.interval) {
                        return Ok(());
                    }
                    if let Err(why) = webhook(url, c, "pre-rollout").await {
                        next.note(
                            now,
                            format!("pre-rollout webhook: {why}; retried every {:?}", c.interval),
                        );
                        return put(api, c, Some(&state), next).await;
                    }
                }
                match &c.ab {
                    Some(ab) => {
                        next.ab = true;
                        next.enter(
                            Phase::Testing,
                            0,
                            now,
                            format!(
                                "A/B: requests with {}: {} go to {}",
                                ab.header, ab.value, c.to
                            ),
                        );
                    }
                    None => {
                        next.step = Some(0);
                        next.enter(
                            Phase::Progressing,
                            c.steps[0],
                            now,
                            format!("step 1: {}% to {}", c.steps[0], c.to),
                        );
                    }
                }
                self.log(c, &next);
                put(api, c, Some(&state), next).await
            }
            Phase::Testing | Phase::Progressing => {
                let Some(judged) = self.analyse(api, c, &state).await else {
                    return Ok(());
                };
                next.last = Some(judged.clone());
                match judged.verdict.as_str() {
                    "failed" => {
                        next.failed_checks += 1;
                        if next.failed_checks >= c.analysis.failed_checks {
                            next.ab = false;
                            next.step = None;
                            next.enter(
                                Phase::RolledBack,
                                0,
                                now,
                                format!("rolled back to {}: {}", c.from, judged.reasons.join("; ")),
                            );
                            self.log(c, &next);
                        } else {
                            let message = format!(
                                "analysis failed ({} of {} allowed): {}",
                                next.failed_checks,
                                c.analysis.failed_checks,
                                judged.reasons.join("; ")
                            );
                            next.note(now, message);
                        }
                    }
                    "waiting" => next.message = judged.reasons.join("; "),
                    _ => self.advance(c, &mut next, now).await,
                }
                put(api, c, Some(&state), next).await
            }
            Phase::Paused | Phase::Succeeded | Phase::RolledBack | Phase::Aborted => Ok(()),
        }
    }

    /// After a passed analysis: the next step, the end of the A/B phase, or the promotion.
    async fn advance(&mut self, c: &Canary, next: &mut RolloutState, now: u64) {
        let key = routes::key(c);
        if next.phase == Phase::Testing {
            let ab = c.ab.as_ref().map_or(Duration::ZERO, |ab| ab.duration);
            let tested = Duration::from_millis(now.saturating_sub(next.since_ms));
            if tested < ab {
                next.message = format!("A/B analysis passed; testing for {:?} more", ab - tested);
                return;
            }
            next.ab = false;
            next.step = Some(0);
            next.enter(
                Phase::Progressing,
                c.steps[0],
                now,
                format!("A/B passed; step 1: {}% to {}", c.steps[0], c.to),
            );
            self.log(c, next);
            return;
        }
        let i = next.step.map_or(0, |i| i + 1);
        // Past the last step (which is 100) there is nothing but the promotion.
        let weight = c.steps.get(i).copied().unwrap_or(100);
        if weight >= 100 {
            if let Some(url) = &c.pre_promotion {
                if let Err(why) = webhook(url, c, "pre-promotion").await {
                    let weight = next.weight;
                    next.note(
                        now,
                        format!(
                            "promotion halted at {weight}%: pre-promotion webhook: {why}; retried after the next analysis"
                        ),
                    );
                    tracing::warn!(canary = %key, "canary: {}", next.message);
                    return;
                }
            }
            next.step = Some(i.min(c.steps.len() - 1));
            next.enter(
                Phase::Succeeded,
                100,
                now,
                format!("promoted: {} has all the traffic", c.to),
            );
            self.log(c, next);
            return;
        }
        next.step = Some(i);
        next.enter(
            Phase::Progressing,
            weight,
            now,
            format!("step {}: {weight}% to {}", i + 1, c.to),
        );
        self.log(c, next);
    }

    fn log(&self, c: &Canary, s: &RolloutState) {
        tracing::info!(canary = %routes::key(c), phase = ?s.phase, weight = s.weight, "canary: {}", s.message);
    }

    fn hook_due(&mut self, key: &str, every: Duration) -> bool {
        match self.hooked.get(key) {
            Some(at) if at.elapsed() < every => false,
            _ => {
                self.hooked.insert(key.to_string(), Instant::now());
                true
            }
        }
    }

    /// The new version judged over the interval that just ended, or `None` while it runs.
    async fn analyse(
        &mut self,
        api: &Arc<Api>,
        c: &Canary,
        state: &RolloutState,
    ) -> Option<Judged> {
        let key = routes::key(c);
        // The interval's first reading, or the judgement at its end; nothing in between.
        let fresh = self
            .marks
            .get(&key)
            .is_none_or(|m| m.since_ms != state.since_ms);
        if !fresh && self.marks.get(&key)?.at.elapsed() < c.interval {
            return None;
        }
        let replicas = analysis::replicas(c, &api.registry.proxies());
        let urls: Vec<(String, String)> = replicas
            .iter()
            .map(|(_, r, url)| (r.proxy.clone(), url.clone()))
            .collect();
        let readings = analysis::read(&urls).await;
        let mark = Mark {
            at: Instant::now(),
            since_ms: state.since_ms,
            readings,
        };
        // A fresh interval starts here; else the one that ended is judged.
        let start = self.marks.insert(key, mark).filter(|_| !fresh)?;
        let secs = start.at.elapsed().as_secs_f64();
        let after = &self.marks.get(&routes::key(c))?.readings;
        let judged = analysis::judge(c, &replicas, &start.readings, after, secs, now_ms());
        tracing::info!(
            canary = %routes::key(c), verdict = %judged.verdict, requests = judged.requests,
            error_rate = ?judged.error_rate, p99_ms = ?judged.p99_ms, "canary: analysis"
        );
        Some(judged)
    }
}

/// Puts `next` in force for `c` if the state in force is still `base` (another replica or an
/// operator's command may have moved it meanwhile: then nothing is written). The same state
/// again writes nothing either: every write is a new snapshot for every proxy.
async fn put(
    api: &Api,
    c: &Canary,
    base: Option<&RolloutState>,
    next: RolloutState,
) -> Result<(), String> {
    if base == Some(&next) {
        return Ok(());
    }
    let mut why = None;
    let r = api
        .resources
        .update(|cur| {
            let current = state_of(cur, c).map(|(_, s)| s);
            if current.as_ref() != base {
                return None;
            }
            match routes::plan(cur, c, &next) {
                Ok(new) => Some((Vec::new(), new)),
                Err(e) => {
                    why = Some(e);
                    None
                }
            }
        })
        .await;
    if let Some(e) = why {
        return Err(e);
    }
    r.map(|_| ()).map_err(|e| e.to_string())
}

/// POSTs the rollout to a webhook; `Err` says what it answered unless 2xx.
async fn webhook(url: &str, c: &Canary, phase: &str) -> Result<(), String> {
    let body = serde_json::json!({
        "name": c.name, "namespace": c.namespace, "phase": phase,
        "target": c.target.describe(), "from": c.from, "to": c.to,
    })
    .to_string();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(WEBHOOK_TIMEOUT, client.request(req)).await {
        Err(_) => Err(format!("no answer from {url} in {WEBHOOK_TIMEOUT:?}")),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Ok(Ok(rsp)) if rsp.status().is_success() => Ok(()),
        Ok(Ok(rsp)) => Err(format!("{url} answered {}", rsp.status())),
    }
}

/// A rollout as `GET /canaries` shows it (schema `weft.canary/v1`).
#[derive(Debug, serde::Serialize)]
pub struct View {
    pub schema: &'static str,
    pub namespace: String,
    pub name: String,
    pub target: String,
    pub from: String,
    pub to: String,
    pub steps: Vec<u32>,
    pub interval_ms: u64,
    pub thresholds: Thresholds,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ab: Option<model::canary::AbPhase>,
    /// The route the rollout owns (`KIND NAMESPACE/NAME`), once it has started.
    pub route: Option<String>,
    /// `None` before the controller has started it.
    pub state: Option<RolloutState>,
    /// The weights in force: `{from: %, to: %}`.
    pub weights: Weights,
}

#[derive(Debug, serde::Serialize)]
pub struct Thresholds {
    pub max_error_rate: f64,
    pub max_p99_ms: Option<u64>,
    pub min_requests: u64,
    pub failed_checks: u32,
}

#[derive(Debug, serde::Serialize)]
pub struct Weights {
    pub from: u32,
    pub to: u32,
}

/// Every rollout in force, with its state.
pub fn views(store: &config::Store) -> Vec<View> {
    match store.load() {
        Ok(loaded) => views_of(store, &loaded),
        Err(_) => Vec::new(),
    }
}

/// [`views`] of what `store` loaded to.
pub fn views_of(store: &config::Store, loaded: &config::Loaded) -> Vec<View> {
    loaded
        .canaries
        .iter()
        .map(|c| {
            let found = state_of(store, c);
            let weight = found.as_ref().map_or(0, |(_, s)| s.weight);
            View {
                schema: SCHEMA,
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                target: c.target.describe(),
                from: c.from.clone(),
                to: c.to.clone(),
                steps: c.steps.clone(),
                interval_ms: c.interval.as_millis() as u64,
                thresholds: Thresholds {
                    max_error_rate: c.analysis.max_error_rate,
                    max_p99_ms: c.analysis.max_p99.map(|d| d.as_millis() as u64),
                    min_requests: c.analysis.min_requests,
                    failed_checks: c.analysis.failed_checks,
                },
                ab: c.ab.clone(),
                route: found
                    .as_ref()
                    .map(|(r, _)| format!("{} {}/{}", r.kind, r.namespace, r.name)),
                state: found.map(|(_, s)| s),
                weights: Weights {
                    from: 100 - weight.min(100),
                    to: weight,
                },
            }
        })
        .collect()
}

/// What an operator can do to a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Abort,
    Promote,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "abort" => Action::Abort,
            "promote" => Action::Promote,
            _ => return None,
        })
    }
}

/// Why an action was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no Canary {0}")]
    NoSuch(String),
    #[error("Canary {0} has not started yet; try again in a moment")]
    NotStarted(String),
    #[error("Canary {0} is {1:?}: {2}")]
    Wrong(String, Phase, &'static str),
    #[error("{0}")]
    Failed(String),
}

/// Pauses, resumes, aborts or promotes the rollout `namespace/name`, at once.
pub async fn act(
    api: &Api,
    namespace: &str,
    name: &str,
    action: Action,
) -> Result<RolloutState, ActionError> {
    let key = format!("{namespace}/{name}");
    let store = api.resources.current();
    let loaded = store
        .load()
        .map_err(|e| ActionError::Failed(e.to_string()))?;
    let c = loaded
        .canaries
        .iter()
        .find(|c| c.namespace == namespace && c.name == name)
        .ok_or_else(|| ActionError::NoSuch(key.clone()))?;
    let (_, state) = state_of(&store, c).ok_or_else(|| ActionError::NotStarted(key.clone()))?;
    let now = now_ms();
    let mut next = state.clone();
    match action {
        Action::Pause if state.phase.is_final() || state.phase == Phase::Paused => {
            return Err(ActionError::Wrong(key, state.phase, "nothing to pause"))
        }
        Action::Pause => {
            next.paused_from = Some(state.phase);
            let w = state.weight;
            next.enter(Phase::Paused, w, now, "paused by an operator");
        }
        Action::Resume => {
            let Some(back) = state.paused_from.filter(|_| state.phase == Phase::Paused) else {
                return Err(ActionError::Wrong(key, state.phase, "it is not paused"));
            };
            next.paused_from = None;
            let w = state.weight;
            next.enter(back, w, now, "resumed by an operator");
        }
        Action::Abort if state.phase.is_final() => {
            return Err(ActionError::Wrong(key, state.phase, "the rollout is over"))
        }
        Action::Abort => {
            next.ab = false;
            next.paused_from = None;
            next.enter(
                Phase::Aborted,
                0,
                now,
                format!("aborted by an operator: all traffic to {}", c.from),
            );
        }
        Action::Promote if state.phase.is_final() => {
            return Err(ActionError::Wrong(key, state.phase, "the rollout is over"))
        }
        Action::Promote => {
            next.ab = false;
            next.paused_from = None;
            next.step = Some(c.steps.len() - 1);
            next.enter(
                Phase::Succeeded,
                100,
                now,
                format!("promoted by an operator: all traffic to {}", c.to),
            );
        }
    }
    tracing::info!(canary = %key, phase = ?next.phase, weight = next.weight, "canary: {}", next.message);
    put(api, c, Some(&state), next.clone())
        .await
        .map_err(ActionError::Failed)?;
    // Moved by someone else in between: say what is in force now.
    let store = api.resources.current();
    match state_of(&store, c) {
        Some((_, s)) if s == next => Ok(s),
        Some((_, s)) => Err(ActionError::Failed(format!(
            "the rollout moved meanwhile (now {:?} at {}%); try again",
            s.phase, s.weight
        ))),
        None => Err(ActionError::NotStarted(key)),
    }
}
