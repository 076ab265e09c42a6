//! Progressive delivery: a `Canary` — which traffic moves from one version of a service to
//! another, in which steps, judged by which thresholds — and the state of its rollout as the
//! control plane's canary controller keeps it.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A rollout as declared (`kind: Canary`, weft.dev/v1alpha1, or `weft canary start`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub namespace: String,
    pub name: String,
    /// Where the traffic is split.
    pub target: Target,
    /// The version that has the traffic (a `version` label value, or a Service's short name).
    pub from: String,
    /// The version that gets it.
    pub to: String,
    /// The new version's weights, in percent, ascending; the last is 100.
    pub steps: Vec<u32>,
    /// How long each step lasts before it is judged.
    #[serde(with = "millis")]
    pub interval: Duration,
    pub analysis: Analysis,
    /// Before any weight moves: only requests with this header go to the new version.
    pub ab: Option<AbPhase>,
    /// Called with a POST that must answer 2xx before the rollout starts…
    pub pre_rollout: Option<String>,
    /// …and before the new version gets all the traffic.
    pub pre_promotion: Option<String>,
}

/// What a rollout moves traffic on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// A service whose workloads differ by their `version` label: the versions are subsets
    /// (a VirtualService with a DestinationRule's subsets). Its short name, in the Canary's
    /// namespace.
    Subsets { service: String },
    /// A Gateway API HTTPRoute whose backends are the two versions' Services.
    #[serde(rename = "httproute")]
    HttpRoute { route: String },
    /// An SMI TrafficSplit whose backends are the two versions' Services.
    #[serde(rename = "trafficsplit")]
    TrafficSplit { split: String },
}

impl Target {
    /// What `weft canary status` names it by.
    pub fn describe(&self) -> String {
        match self {
            Target::Subsets { service } => format!("service {service}"),
            Target::HttpRoute { route } => format!("HTTPRoute {route}"),
            Target::TrafficSplit { split } => format!("TrafficSplit {split}"),
        }
    }
}

/// The thresholds a step is judged by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// The largest share (0..1) of the new version's requests that may fail (5xx, or a gRPC
    /// status other than OK).
    pub max_error_rate: f64,
    /// The new version's p99 latency may not exceed it.
    #[serde(with = "opt_millis")]
    pub max_p99: Option<Duration>,
    /// Fewer requests than this to the new version in a step: not judged yet (the step waits
    /// another interval).
    pub min_requests: u64,
    /// Failed analyses before the rollout is rolled back.
    pub failed_checks: u32,
}

impl Default for Analysis {
    fn default() -> Analysis {
        Analysis {
            max_error_rate: 0.01,
            max_p99: Some(Duration::from_millis(500)),
            min_requests: 100,
            failed_checks: 1,
        }
    }
}

/// The A/B phase: a header sends a request to the new version, for a while, before any
/// weight moves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbPhase {
    /// Lower case.
    pub header: String,
    pub value: String,
    #[serde(with = "millis")]
    pub duration: Duration,
}

/// The default steps.
pub const DEFAULT_STEPS: [u32; 4] = [10, 25, 50, 100];
/// The default interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Waiting for the pre-rollout webhook.
    Initializing,
    /// The A/B phase: the header's requests only.
    Testing,
    /// Moving weights, one step per interval.
    Progressing,
    /// Held by `weft canary pause`.
    Paused,
    /// All traffic on the new version.
    Succeeded,
    /// All traffic back on the old version after failed analyses.
    #[serde(rename = "rolledback")]
    RolledBack,
    /// All traffic back on the old version, by `weft canary abort`.
    Aborted,
}

impl Phase {
    /// Whether the rollout is over (nothing moves any more).
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack | Phase::Aborted)
    }
}

/// One judgement of the new version over an interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    pub at_ms: u64,
    pub requests: u64,
    pub failed: u64,
    /// `failed / requests`; `None` without requests.
    pub error_rate: Option<f64>,
    pub p99_ms: Option<f64>,
    /// `passed`, `failed` or `waiting` (too few requests).
    pub verdict: String,
    /// What failed, or why it waits.
    pub reasons: Vec<String>,
}

/// One thing that happened to a rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub phase: Phase,
    /// The new version's weight from then on.
    pub weight: u32,
    pub message: String,
}

/// A rollout's state, kept in the store with the route the controller owns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// A fingerprint of the Canary it runs: a changed Canary starts a new rollout.
    #[serde(default)]
    pub spec: String,
    pub phase: Phase,
    /// The phase to go back to when resumed (while paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_from: Option<Phase>,
    /// The index in `steps` of the weight in force (progressing); `None` before the first.
    pub step: Option<usize>,
    /// The new version's weight in force.
    pub weight: u32,
    /// Whether the A/B header route is in force.
    pub ab: bool,
    /// When the current phase or step began (ms since the epoch): it is judged `interval`
    /// later.
    pub since_ms: u64,
    pub started_ms: u64,
    /// Failed analyses so far (reset by none: they add up over the rollout).
    pub failed_checks: u32,
    pub last: Option<Judged>,
    pub message: String,
    pub history: Vec<Event>,
}

impl RolloutState {
    /// A rollout just started at `now_ms`.
    pub fn new(now_ms: u64) -> RolloutState {
        RolloutState {
            spec: String::new(),
            phase: Phase::Initializing,
            paused_from: None,
            step: None,
            weight: 0,
            ab: false,
            since_ms: now_ms,
            started_ms: now_ms,
            failed_checks: 0,
            last: None,
            message: "starting".into(),
            history: vec![Event {
                at_ms: now_ms,
                phase: Phase::Initializing,
                weight: 0,
                message: "rollout started".into(),
            }],
        }
    }

    /// Records `message` as what holds the rollout where it is (in the history once, however
    /// often it recurs in a row).
    pub fn note(&mut self, now_ms: u64, message: impl Into<String>) {
        let message = message.into();
        self.message = message.clone();
        if self.history.last().is_some_and(|e| e.message == message) {
            return;
        }
        self.record(now_ms, message);
    }

    /// Moves to `phase` with weight `weight` at `now_ms`, recording why.
    pub fn enter(&mut self, phase: Phase, weight: u32, now_ms: u64, message: impl Into<String>) {
        let message = message.into();
        self.phase = phase;
        self.weight = weight;
        self.since_ms = now_ms;
        self.message = message.clone();
        self.record(now_ms, message);
    }

    /// Adds `message` to the history at the phase and weight in force, keeping it bounded: the
    /// first event and the latest ones.
    fn record(&mut self, now_ms: u64, message: String) {
        const KEEP: usize = 64;
        self.history.push(Event {
            at_ms: now_ms,
            phase: self.phase,
            weight: self.weight,
            message,
        });
        if self.history.len() > KEEP {
            self.history.remove(1);
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_its_history_stays_bounded() {
        let mut s = RolloutState::new(1);
        for i in 0..200 {
            s.enter(
                Phase::Progressing,
                i % 100,
                2 + u64::from(i),
                format!("step {i}"),
            );
        }
        assert_eq!(s.history.len(), 64);
        assert_eq!(s.history[0].message, "rollout started");
        assert_eq!(s.history.last().unwrap().message, "step 199");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<RolloutState>(&json).unwrap(), s);
        assert!(json.contains("\"phase\":\"progressing\""), "{json}");
    }
}
