//! The routes a rollout owns: which resource carries a rollout's weights (a VirtualService, an
//! HTTPRoute or a TrafficSplit, taken over when one exists), how its weights and A/B rule are
//! written into it, and the annotations that mark it as the rollout's and keep its state.

use config::Resource;
use model::canary::{Canary, RolloutState, Target};
use serde_yaml_ng::{Mapping, Value};
use std::path::PathBuf;

/// The annotation naming the Canary (`NAMESPACE/NAME`) that owns a route.
pub const OWNER: &str = "weft.dev/canary";
/// The annotation holding the rollout's state (JSON), on the route that carries its weights.
pub const STATE: &str = "weft.dev/canary-state";

/// `NAMESPACE/NAME` of a Canary.
pub fn key(c: &Canary) -> String {
    format!("{}/{}", c.namespace, c.name)
}

fn parse(r: &Resource) -> Option<Value> {
    serde_yaml_ng::from_str(&r.text).ok()
}

fn annotation(v: &Value, name: &str) -> Option<String> {
    v.get("metadata")?
        .get("annotations")?
        .get(name)?
        .as_str()
        .map(str::to_string)
}

/// The Canary that owns `r`, if one does.
pub fn owner_of(r: &Resource) -> Option<String> {
    if !r.text.contains(OWNER) {
        return None; // the common case, without parsing
    }
    annotation(&parse(r)?, OWNER)
}

/// The resource owned by `owner` that carries its state, and the state.
pub fn state_in(store: &config::Store, owner: &str) -> Option<(Resource, RolloutState)> {
    store.resources.iter().find_map(|r| {
        if !r.text.contains(STATE) {
            return None;
        }
        let v = parse(r)?;
        if annotation(&v, OWNER).as_deref() != Some(owner) {
            return None;
        }
        let state = serde_json::from_str(&annotation(&v, STATE)?).ok()?;
        Some((r.clone(), state))
    })
}

/// The resources owned by a Canary that no longer exists, released: the annotations removed,
/// the routes left as they are (their weights where the rollout left them).
pub fn orphans(store: &config::Store, live: &[String]) -> Vec<Resource> {
    store
        .resources
        .iter()
        .filter_map(|r| {
            let owner = owner_of(r)?;
            if live.contains(&owner) {
                return None;
            }
            let mut v = parse(r)?;
            if let Some(a) = v
                .get_mut("metadata")
                .and_then(|m| m.get_mut("annotations"))
                .and_then(Value::as_mapping_mut)
            {
                a.remove(OWNER);
                a.remove(STATE);
            }
            Some(rewritten(r, &v))
        })
        .collect()
}

fn rewritten(r: &Resource, v: &Value) -> Resource {
    Resource {
        text: serde_yaml_ng::to_string(v).unwrap_or_default(),
        first_line: 1,
        file: PathBuf::from(format!("<canary-controller {}/{}>", r.namespace, r.name)),
        ..r.clone()
    }
}

fn s(text: &str) -> Value {
    Value::String(text.to_string())
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(s(k), v);
    }
    Value::Mapping(m)
}

fn spec_hosts_match(v: &Value, service: &str, namespace: &str) -> bool {
    let forms = [
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    v.get("spec")
        .and_then(|s| s.get("hosts").or_else(|| s.get("host")))
        .is_some_and(|h| match h {
            Value::Sequence(list) => list
                .iter()
                .any(|h| h.as_str().is_some_and(|h| forms.iter().any(|f| f == h))),
            Value::String(h) => forms.iter().any(|f| f == h),
            _ => false,
        })
}

/// A resource of `kind` the controller makes for `c` (named `canary-NAME`), before its text.
fn made(kind: &str, c: &Canary) -> Resource {
    Resource {
        kind: kind.into(),
        api_version: "networking.istio.io/v1".into(),
        namespace: c.namespace.clone(),
        name: format!("canary-{}", c.name),
        file: PathBuf::new(),
        first_line: 1,
        text: String::new(),
    }
}

/// The resource of `kind` named `name` in `c`'s namespace, parsed.
fn named(
    store: &config::Store,
    c: &Canary,
    kind: &str,
    name: &str,
) -> Result<(Resource, Value), String> {
    let r = store
        .resources
        .iter()
        .find(|r| r.namespace == c.namespace && r.kind == kind && r.name == name)
        .ok_or_else(|| format!("no {kind} {}/{name}", c.namespace))?;
    let v = parse(r).ok_or_else(|| format!("its {kind} does not parse"))?;
    Ok((r.clone(), v))
}

/// The resources to write so that `store` routes as `state` says for `c`: the owned route
/// (taken over, or made), annotated with the owner and the state, and what it needs (a
/// DestinationRule's subsets). An error says why the rollout cannot route.
pub fn plan(
    store: &config::Store,
    c: &Canary,
    state: &RolloutState,
) -> Result<Vec<Resource>, String> {
    let owner = key(c);
    let state_json = serde_json::to_string(state).map_err(|e| e.to_string())?;
    let annotate = |v: &mut Value| {
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_mapping_mut) {
            let a = meta
                .entry(s("annotations"))
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            if !a.is_mapping() {
                *a = Value::Mapping(Mapping::new());
            }
            if let Some(a) = a.as_mapping_mut() {
                a.insert(s(OWNER), s(&owner));
                a.insert(s(STATE), s(&state_json));
            }
        }
    };
    let (w_to, w_from) = (state.weight, 100 - state.weight.min(100));
    let in_ns = |r: &&Resource| r.namespace == c.namespace;
    match &c.target {
        Target::Subsets { service } => {
            let mut out = Vec::new();
            // The subsets: an existing DestinationRule's, completed; or one made.
            let dr = store.resources.iter().filter(in_ns).find(|r| {
                r.kind == "DestinationRule"
                    && parse(r).is_some_and(|v| spec_hosts_match(&v, service, &c.namespace))
            });
            let mut names = Vec::new();
            let mut dr_value = match dr {
                Some(r) => parse(r).ok_or("its DestinationRule does not parse")?,
                None => map(vec![
                    ("apiVersion", s("networking.istio.io/v1")),
                    ("kind", s("DestinationRule")),
                    (
                        "metadata",
                        map(vec![
                            ("name", s(&format!("canary-{}", c.name))),
                            ("namespace", s(&c.namespace)),
                        ]),
                    ),
                    ("spec", map(vec![("host", s(service))])),
                ]),
            };
            let mut dr_changed = dr.is_none();
            {
                let spec = dr_value
                    .get_mut("spec")
                    .and_then(Value::as_mapping_mut)
                    .ok_or("its DestinationRule has no spec")?;
                let subsets = spec
                    .entry(s("subsets"))
                    .or_insert_with(|| Value::Sequence(Vec::new()));
                let list = subsets
                    .as_sequence_mut()
                    .ok_or("its DestinationRule's subsets are not a list")?;
                for version in [&c.from, &c.to] {
                    let found = list.iter().find_map(|sub| {
                        let labels = sub.get("labels")?.as_mapping()?;
                        let only_version = labels.len() == 1
                            && labels.get("version").and_then(Value::as_str) == Some(version);
                        only_version
                            .then(|| sub.get("name")?.as_str().map(str::to_string))
                            .flatten()
                    });
                    match found {
                        Some(name) => names.push(name),
                        None => {
                            let name = if list
                                .iter()
                                .any(|sub| sub.get("name").and_then(Value::as_str) == Some(version))
                            {
                                format!("canary-{version}")
                            } else {
                                version.clone()
                            };
                            list.push(map(vec![
                                ("name", s(&name)),
                                ("labels", map(vec![("version", s(version))])),
                            ]));
                            names.push(name);
                            dr_changed = true;
                        }
                    }
                }
            }
            if dr_changed {
                let template = dr.cloned().unwrap_or_else(|| made("DestinationRule", c));
                out.push(rewritten(&template, &dr_value));
            }
            let (from_subset, to_subset) = (names[0].clone(), names[1].clone());
            // The VirtualService: the one this rollout owns, else the service's, else one made.
            let vs = store
                .resources
                .iter()
                .filter(in_ns)
                .filter(|r| r.kind == "VirtualService")
                .find(|r| owner_of(r).as_deref() == Some(&owner))
                .or_else(|| {
                    store.resources.iter().filter(in_ns).find(|r| {
                        r.kind == "VirtualService"
                            && parse(r).is_some_and(|v| {
                                spec_hosts_match(&v, service, &c.namespace)
                                    && v.get("spec").and_then(|s| s.get("gateways")).is_none()
                            })
                    })
                });
            let mut v = match vs {
                Some(r) => parse(r).ok_or("its VirtualService does not parse")?,
                None => map(vec![
                    ("apiVersion", s("networking.istio.io/v1")),
                    ("kind", s("VirtualService")),
                    (
                        "metadata",
                        map(vec![
                            ("name", s(&format!("canary-{}", c.name))),
                            ("namespace", s(&c.namespace)),
                        ]),
                    ),
                    (
                        "spec",
                        map(vec![
                            ("hosts", Value::Sequence(vec![s(service)])),
                            ("http", Value::Sequence(vec![map(vec![])])),
                        ]),
                    ),
                ]),
            };
            let dest = |subset: &str, weight: u32| {
                map(vec![
                    (
                        "destination",
                        map(vec![("host", s(service)), ("subset", s(subset))]),
                    ),
                    ("weight", Value::from(weight)),
                ])
            };
            {
                let http = v
                    .get_mut("spec")
                    .and_then(Value::as_mapping_mut)
                    .ok_or("its VirtualService has no spec")?
                    .entry(s("http"))
                    .or_insert_with(|| Value::Sequence(vec![map(vec![])]))
                    .as_sequence_mut()
                    .ok_or("its VirtualService's http is not a list")?;
                http.retain(|rule| rule.get("name").and_then(Value::as_str) != Some(AB_RULE));
                if http.is_empty() {
                    http.push(map(vec![]));
                }
                // The rules the weights go in: those that match every request (a rule
                // for some requests only — a header, a user — keeps its destination), or every
                // rule when all of them match some requests only.
                let routable = |rule: &Value| {
                    !(rule.get("redirect").is_some() || rule.get("directResponse").is_some())
                };
                let catch_all = |rule: &Value| routable(rule) && rule.get("match").is_none();
                let any_catch_all = http.iter().any(catch_all);
                for rule in http.iter_mut() {
                    if !(catch_all(rule) || (!any_catch_all && routable(rule))) {
                        continue;
                    }
                    if let Some(m) = rule.as_mapping_mut() {
                        m.insert(
                            s("route"),
                            Value::Sequence(vec![
                                dest(&from_subset, w_from),
                                dest(&to_subset, w_to),
                            ]),
                        );
                    }
                }
                if let (true, Some(ab)) = (state.ab, &c.ab) {
                    // The header's requests to the new version, with the catch-all rule's
                    // timeout and retries.
                    let template = http
                        .iter()
                        .find(|r| r.get("match").is_none())
                        .unwrap_or(&http[0]);
                    let mut rule = template.as_mapping().cloned().unwrap_or_default();
                    rule.remove("match");
                    rule.insert(s("name"), s(AB_RULE));
                    rule.insert(
                        s("match"),
                        Value::Sequence(vec![map(vec![(
                            "headers",
                            map(vec![(
                                ab.header.as_str(),
                                map(vec![("exact", s(&ab.value))]),
                            )]),
                        )])]),
                    );
                    rule.insert(s("route"), Value::Sequence(vec![dest(&to_subset, 100)]));
                    http.insert(0, Value::Mapping(rule));
                }
            }
            annotate(&mut v);
            let template = vs.cloned().unwrap_or_else(|| made("VirtualService", c));
            out.push(rewritten(&template, &v));
            Ok(out)
        }
        Target::HttpRoute { route } => {
            let (r, mut v) = named(store, c, "HTTPRoute", route)?;
            {
                let rules = v
                    .get_mut("spec")
                    .and_then(Value::as_mapping_mut)
                    .ok_or("the HTTPRoute has no spec")?
                    .entry(s("rules"))
                    .or_insert_with(|| Value::Sequence(vec![map(vec![])]))
                    .as_sequence_mut()
                    .ok_or("the HTTPRoute's rules are not a list")?;
                // The A/B rule is the first, marked by its single header match to `to`.
                let ab_rule = |rule: &Value| {
                    rule.get("matches")
                        .and_then(|m| m.get(0))
                        .and_then(|m| m.get("headers"))
                        .and_then(|h| h.get(0))
                        .and_then(|h| h.get("name"))
                        .and_then(Value::as_str)
                        .is_some_and(|n| c.ab.as_ref().is_some_and(|ab| ab.header == n))
                        && rule
                            .get("backendRefs")
                            .and_then(Value::as_sequence)
                            .is_some_and(|b| b.len() == 1)
                };
                rules.retain(|rule| !ab_rule(rule));
                if rules.is_empty() {
                    rules.push(map(vec![]));
                }
                let port = rules
                    .iter()
                    .filter_map(|rule| rule.get("backendRefs")?.get(0)?.get("port").cloned())
                    .next();
                let backend = |name: &str, weight: u32| {
                    let mut pairs = vec![("name", s(name))];
                    if let Some(p) = &port {
                        pairs.push(("port", p.clone()));
                    }
                    pairs.push(("weight", Value::from(weight)));
                    map(pairs)
                };
                for rule in rules.iter_mut() {
                    if let Some(m) = rule.as_mapping_mut() {
                        m.insert(
                            s("backendRefs"),
                            Value::Sequence(vec![backend(&c.from, w_from), backend(&c.to, w_to)]),
                        );
                    }
                }
                if let (true, Some(ab)) = (state.ab, &c.ab) {
                    rules.insert(
                        0,
                        map(vec![
                            (
                                "matches",
                                Value::Sequence(vec![map(vec![(
                                    "headers",
                                    Value::Sequence(vec![map(vec![
                                        ("name", s(&ab.header)),
                                        ("value", s(&ab.value)),
                                    ])]),
                                )])]),
                            ),
                            ("backendRefs", Value::Sequence(vec![backend(&c.to, 1)])),
                        ]),
                    );
                }
            }
            annotate(&mut v);
            Ok(vec![rewritten(&r, &v)])
        }
        Target::TrafficSplit { split } => {
            let (r, mut v) = named(store, c, "TrafficSplit", split)?;
            let spec = v
                .get_mut("spec")
                .and_then(Value::as_mapping_mut)
                .ok_or("the TrafficSplit has no spec")?;
            spec.insert(
                s("backends"),
                Value::Sequence(vec![
                    map(vec![
                        ("service", s(&c.from)),
                        ("weight", Value::from(w_from)),
                    ]),
                    map(vec![("service", s(&c.to)), ("weight", Value::from(w_to))]),
                ]),
            );
            annotate(&mut v);
            Ok(vec![rewritten(&r, &v)])
        }
    }
}

/// The name of the VirtualService rule the A/B phase adds.
const AB_RULE: &str = "canary-ab";

#[cfg(test)]
mod tests {
    use super::*;
    use model::canary::{Analysis, Phase};
    use std::path::Path;
    use std::time::Duration;

    const SHOP: &str = "apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: shop}
spec:
  services:
  - name: payment
    port: 80
    workloads:
    - {name: payment-v1, labels: {app: payment, version: v1}, replicas: 1, command: [x]}
    - {name: payment-v2, labels: {app: payment, version: v2}, replicas: 1, command: [x]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment, namespace: default}
spec:
  hosts: [payment]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route:
    - {destination: {host: payment, subset: stable}}
  - route:
    - {destination: {host: payment, subset: stable}, weight: 100}
    timeout: 10s
    retries: {attempts: 5, perTryTimeout: 2s, retryOn: \"5xx\"}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment, namespace: default}
spec:
  host: payment
  subsets:
  - {name: stable, labels: {version: v1}}
";

    fn canary(ab: bool) -> Canary {
        Canary {
            namespace: "default".into(),
            name: "payment".into(),
            target: Target::Subsets {
                service: "payment".into(),
            },
            from: "v1".into(),
            to: "v2".into(),
            steps: vec![25, 100],
            interval: Duration::from_secs(5),
            analysis: Analysis::default(),
            ab: ab.then(|| model::canary::AbPhase {
                header: "x-canary".into(),
                value: "true".into(),
                duration: Duration::from_secs(5),
            }),
            pre_rollout: None,
            pre_promotion: None,
        }
    }

    #[test]
    fn the_services_virtual_service_is_taken_over_with_its_retries_and_subsets_completed() {
        let store = config::Store {
            resources: config::resources(Path::new("shop.yaml"), SHOP),
        };
        let mut state = RolloutState::new(1);
        state.enter(Phase::Testing, 25, 2, "x");
        state.ab = true;
        let c = canary(true);
        let new = plan(&store, &c, &state).unwrap();
        // The DestinationRule gains a subset for v2 (v1's is `stable`); the VirtualService
        // keeps its name, timeout and retries, and gets the weights and the A/B rule.
        let kinds: Vec<(&str, &str)> = new
            .iter()
            .map(|r| (r.kind.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("DestinationRule", "payment"),
                ("VirtualService", "payment")
            ]
        );
        let next = store.applied(new.clone());
        let loaded = next.load().unwrap();
        assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
        let vs: Value = serde_yaml_ng::from_str(&new[1].text).unwrap();
        let http = vs["spec"]["http"].as_sequence().unwrap();
        assert_eq!(http.len(), 3);
        // jason's rule keeps its destination.
        assert_eq!(http[1]["route"].as_sequence().unwrap().len(), 1);
        assert_eq!(
            http[1]["route"][0]["destination"]["subset"].as_str(),
            Some("stable")
        );
        let http: Vec<Value> = [&http[0], &http[2]].into_iter().cloned().collect();
        assert_eq!(http[0]["name"].as_str(), Some(AB_RULE));
        assert_eq!(
            http[0]["match"][0]["headers"]["x-canary"]["exact"].as_str(),
            Some("true")
        );
        assert_eq!(
            http[1]["route"][0]["destination"]["subset"].as_str(),
            Some("stable")
        );
        assert_eq!(http[1]["route"][0]["weight"].as_u64(), Some(75));
        assert_eq!(
            http[1]["route"][1]["destination"]["subset"].as_str(),
            Some("v2")
        );
        assert_eq!(http[1]["route"][1]["weight"].as_u64(), Some(25));
        assert_eq!(http[1]["retries"]["attempts"].as_u64(), Some(5));
        assert_eq!(http[0]["timeout"].as_str(), Some("10s"));
        // Owned, with its state; a second plan (A/B over) removes the A/B rule.
        assert_eq!(owner_of(&new[1]).as_deref(), Some("default/payment"));
        let (_, kept) = state_in(&next, "default/payment").unwrap();
        assert_eq!(kept, state);
        state.ab = false;
        let again = plan(&next, &c, &state).unwrap();
        assert_eq!(again.len(), 1, "the subsets are there now");
        let vs: Value = serde_yaml_ng::from_str(&again[0].text).unwrap();
        assert_eq!(vs["spec"]["http"].as_sequence().unwrap().len(), 2);
        // Once the Canary is gone, its route is released as it stands.
        let after = next.applied(again);
        let released = orphans(&after, &[]);
        assert_eq!(released.len(), 1);
        assert_eq!(owner_of(&released[0]), None);
        assert!(
            released[0].text.contains("weight: 25"),
            "{}",
            released[0].text
        );
    }
}
