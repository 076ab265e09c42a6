//! Linkerd's configuration: `ServiceProfile`s (`linkerd.io/v1alpha2`), `policy.linkerd.io`
//! HTTPRoutes, and the retry, timeout and failure-accrual annotations Linkerd reads on Services
//! and HTTPRoutes — turned into routes and [`ServicePolicy`]s once every document is read.
//!
//! - A ServiceProfile `NAME.NS.svc.cluster.local` routes service `NAME.NS`: each of its
//!   `routes[]`, in order, becomes one route named `ServiceProfile NS/NAME routes[i] (ROUTE)`,
//!   its `condition` in disjunctive normal form, then a catch-all route takes the requests no
//!   route matches. Both send to `dstOverrides` (weighted) when it is set, else to the service.
//!   `isRetryable` retries what the route's response classes call failures, up to
//!   [`profile::RETRYABLE_ATTEMPTS`] times, within the service's retry budget (`retryBudget`
//!   becomes the service's [`TrafficPolicy::retry_budget`]). See [`profile`].
//! - A `policy.linkerd.io` HTTPRoute has the Gateway API HTTPRoute's shape and is translated
//!   by `gateway`, ranked together with the Gateway API's own HTTPRoutes and named
//!   `HTTPRoute.policy.linkerd.io NS/NAME`. A `Server` parent (of an HTTPRoute of either group)
//!   makes it an inbound route of that Server, translated by `security`; a route with only
//!   Server parents goes no further here.
//! - Retry and timeout annotations on an HTTPRoute (either group) apply to that route's rules
//!   (bound to Services; Linkerd has no Gateway parents); on a Service (a Mesh file's
//!   `services[].annotations`) they are the defaults of every route of the service that does
//!   not set its own, or of a catch-all route if the service has none. Failure-accrual
//!   annotations on a Service become [`TrafficPolicy::failure_accrual`]. See [`annotations`].
//!
//! A ServiceProfile or HTTPRoute with errors (a bad annotation value included) is rejected
//! alone, its messages naming it; a bad annotation on a Mesh file's service is an error of the
//! Mesh document.
//!
//! # Which API wins
//!
//! When several APIs route one service, the first of these is used and the others' routes are
//! dropped, with a warning at each loser (an HTTPRoute's parentRef naming the service, a
//! TrafficSplit's `spec.service`, a ServiceProfile's `metadata.name`) naming the winner:
//!
//! 1. an Istio VirtualService;
//! 2. a ServiceProfile with `routes` or `dstOverrides`. Linkerd's proxy uses such a profile in
//!    place of the service's HTTPRoutes ("for backwards-compatibility reasons, a ServiceProfile
//!    will take precedence over HTTPRoutes", Linkerd's HTTPRoute reference; the proxy's
//!    `should_override_policy`), and ignores the Service's retry, timeout and failure-accrual
//!    annotations while it exists; weft does the same, so Linkerd configuration means here what
//!    it means in Linkerd. A profile with neither routes nor overrides routes nothing and
//!    overrides nothing;
//! 3. HTTPRoutes, `gateway.networking.k8s.io` and `policy.linkerd.io` alike;
//! 4. an SMI TrafficSplit (in Linkerd, itself written into the profile's `dstOverrides` by the
//!    deprecated SMI extension).

mod annotations;
mod profile;

use crate::diagnostic::{reject, Diagnostic};
use crate::doc::{Annotation, Doc, Parsed};
use crate::http_route::HttpRouteSpec;
use crate::k8s::Object;
use crate::marked::Node;
use crate::services::PRECEDENCE;
use crate::valid;
use annotations::{On, Timing};
use model::{
    Destination, FailureAccrual, HttpRoute, RetryBudget, ServiceKey, ServicePolicy, ServiceRoutes,
    ServiceSpec, TrafficPolicy,
};
use profile::ProfileSpec;
use std::collections::HashMap;
use std::path::Path;

/// The `policy.linkerd.io` HTTPRoute versions read.
const HTTP_ROUTE_API_VERSIONS: [&str; 4] = [
    "policy.linkerd.io/v1alpha1",
    "policy.linkerd.io/v1beta1",
    "policy.linkerd.io/v1beta2",
    "policy.linkerd.io/v1beta3",
];

/// The ServiceProfile version read.
const PROFILE_API_VERSION: &str = "linkerd.io/v1alpha2";

/// A `policy.linkerd.io` HTTPRoute, parsed into the Gateway API's shape; `None` for any other
/// document.
pub(crate) fn parse_route(
    api_version: &str,
    kind: &str,
    text: &str,
) -> Option<serde_yaml_ng::Result<Object<HttpRouteSpec>>> {
    (kind == "HTTPRoute" && HTTP_ROUTE_API_VERSIONS.contains(&api_version))
        .then(|| serde_yaml_ng::from_str(text))
}

/// A ServiceProfile; `None` for any other document.
pub(crate) fn parse_profile(
    api_version: &str,
    kind: &str,
    text: &str,
) -> Option<serde_yaml_ng::Result<Object<ProfileSpec>>> {
    (kind == "ServiceProfile" && api_version == PROFILE_API_VERSION)
        .then(|| serde_yaml_ng::from_str(text))
}

/// ServiceProfiles and the Linkerd annotations of Services and HTTPRoutes, resolved once every
/// document is read.
#[derive(Default)]
pub(crate) struct Linkerd {
    profiles: Vec<Profile>,
    services: Vec<Annotated>,
    /// Each annotated HTTPRoute's label (`HTTPRoute NS/NAME`) and what its annotations say.
    http_routes: Vec<(String, Timing)>,
}

/// What the APIs before Linkerd's in the precedence order claimed: the services a
/// VirtualService routes (with its label), and where the HTTPRoutes and TrafficSplits that
/// routed each service are.
pub(crate) struct Earlier<'a> {
    pub owners: &'a HashMap<ServiceKey, String>,
    pub placed: &'a crate::gateway::Placed,
}

type Profile = Parsed<Object<ProfileSpec>>;

impl Profile {
    fn label(&self) -> String {
        let m = &self.kind.metadata;
        format!("ServiceProfile {}/{}", m.namespace(), m.name)
    }
}

/// A Mesh file's service with Linkerd annotations, read.
struct Annotated {
    key: ServiceKey,
    annotations: Vec<Annotation>,
    timing: Timing,
    accrual: Option<FailureAccrual>,
}

/// A ServiceProfile translated.
struct Translated {
    key: ServiceKey,
    label: String,
    /// At `metadata.name`, for warnings.
    at: Diagnostic,
    routes: Vec<HttpRoute>,
    budget: Option<RetryBudget>,
    /// It has routes or dstOverrides, so Linkerd uses it in place of HTTPRoutes and
    /// annotations.
    in_force: bool,
}

/// A route that answers by itself has no upstream to time out or retry.
fn forwards(route: &HttpRoute) -> bool {
    route.redirect.is_none() && route.direct_response.is_none()
}

impl Linkerd {
    pub fn profile(
        &mut self,
        file: &Path,
        first_line: usize,
        tree: Node,
        object: Object<ProfileSpec>,
    ) {
        self.profiles.push(Profile {
            file: file.to_path_buf(),
            first_line,
            tree,
            kind: object,
        });
    }

    /// Reads the Linkerd annotations of the Mesh document's service at `field`
    /// (`spec.services[2]`). A bad value is an error of the Mesh document.
    pub fn service(
        &mut self,
        doc: &Doc,
        field: &str,
        key: ServiceKey,
        errors: &mut Vec<Diagnostic>,
        warnings: &mut Vec<Diagnostic>,
    ) {
        let annotations = annotations::read(doc, field);
        if annotations.is_empty() {
            return;
        }
        let owner = format!("service {key}");
        let mut found = Vec::new();
        let timing = annotations::timing(&annotations, &owner, On::Service, &mut found, warnings);
        let accrual = annotations::failure_accrual(&annotations, &owner, &mut found, warnings);
        errors.extend(found.into_iter().map(|d| Diagnostic {
            message: format!("{owner}: {}", d.message),
            ..d
        }));
        self.services.push(Annotated {
            key,
            annotations,
            timing,
            accrual,
        });
    }

    /// Reads what Linkerd adds to an outbound HTTPRoute of either group (`label` names it): its
    /// retry and timeout annotations (its `Server` parents are `security`'s). Returns whether
    /// the route goes on to be translated: not when an annotation is bad (the route is
    /// rejected).
    pub fn http_route(
        &mut self,
        doc: &Doc,
        label: String,
        rejected: &mut Vec<Diagnostic>,
        warnings: &mut Vec<Diagnostic>,
    ) -> bool {
        let found = annotations::read(doc, "metadata");
        if found.is_empty() {
            return true;
        }
        let mut errors = Vec::new();
        let timing = annotations::timing(&found, &label, On::HttpRoute, &mut errors, warnings);
        if !errors.is_empty() {
            reject(&label, errors, rejected);
            return false;
        }
        self.http_routes.push((label, timing));
        true
    }

    /// Adds the profiles' routes to `routes` (which holds the VirtualServices', owned as
    /// `owners` says, and the HTTPRoutes' and TrafficSplits'), applies the annotations, and
    /// adds the policies to `policies`. `services` is `None` when there is no Mesh document,
    /// and then names are not checked. A ServiceProfile with errors is rejected alone.
    pub fn resolve(
        &self,
        services: Option<&[ServiceSpec]>,
        routes: &mut Vec<ServiceRoutes>,
        earlier: Earlier<'_>,
        policies: &mut Vec<ServicePolicy>,
        rejected: &mut Vec<Diagnostic>,
        warnings: &mut Vec<Diagnostic>,
    ) {
        let Earlier { owners, placed } = earlier;
        let ports: Option<HashMap<ServiceKey, u16>> =
            services.map(|s| s.iter().map(|s| (s.key(), s.port)).collect());

        let mut profiles: Vec<Translated> = Vec::new();
        for p in &self.profiles {
            let mut errors = Vec::new();
            let t = translate(p, ports.as_ref(), &mut errors, warnings);
            if let Some(t) = &t {
                if let Some(other) = profiles.iter().find(|o| o.key == t.key) {
                    errors.push(t.at.with_message(format!(
                        "one ServiceProfile per service: {} already has {} at {}:{}",
                        t.key,
                        other.label,
                        other.at.file.display(),
                        other.at.line
                    )));
                }
            }
            match t {
                Some(t) if errors.is_empty() => profiles.push(t),
                _ => reject(&p.label(), errors, rejected),
            }
        }

        // HTTPRoutes' own annotations, and which groups each of their routes sets.
        let mut own: HashMap<String, (bool, bool)> = HashMap::new();
        for (label, timing) in &self.http_routes {
            let prefix = format!("{label} rules[");
            let groups = (timing.retry.is_some(), timing.sets_timeouts);
            for route in routes.iter_mut().flat_map(|r| r.routes.iter_mut()) {
                if route.name.starts_with(&prefix) && forwards(route) {
                    timing.apply_own(route);
                    own.insert(route.name.clone(), groups);
                }
            }
        }

        for t in profiles.iter().filter(|t| t.in_force) {
            if let Some(vs) = owners.get(&t.key) {
                warnings.push(t.at.with_message(format!(
                    "{}: service {} is also routed by {vs}; VirtualService wins; {PRECEDENCE}",
                    t.label, t.key
                )));
                continue;
            }
            match routes.iter_mut().find(|r| r.service == t.key) {
                Some(existing) => {
                    // At each loser (the HTTPRoutes' parentRefs, a TrafficSplit), as when a
                    // VirtualService wins; at the profile only if the losers' places are unknown.
                    let losers: Vec<(String, &Diagnostic)> = match placed.get(&t.key) {
                        Some(l) if !l.is_empty() => {
                            l.iter().map(|(n, at)| (n.clone(), at)).collect()
                        }
                        _ => vec![(sources(&existing.routes), &t.at)],
                    };
                    for (loser, at) in losers {
                        warnings.push(at.with_message(format!(
                            "{loser}: service {} is also routed by {}; ServiceProfile wins, as \
                             in Linkerd; {PRECEDENCE}",
                            t.key, t.label
                        )));
                    }
                    existing.routes = t.routes.clone();
                }
                None => routes.push(ServiceRoutes {
                    service: t.key.clone(),
                    routes: t.routes.clone(),
                }),
            }
            if let Some(budget) = &t.budget {
                let policy = TrafficPolicy {
                    retry_budget: Some(budget.clone()),
                    ..TrafficPolicy::default()
                };
                add_policy(policies, &t.key, &t.label, policy);
            }
        }

        for s in &self.services {
            if let Some(t) = profiles.iter().find(|t| t.in_force && t.key == s.key) {
                for a in &s.annotations {
                    warnings.push(a.at.with_message(format!(
                        "service {}: annotation {}: Linkerd ignores the retry, timeout and \
                         failure-accrual annotations of a service with a ServiceProfile ({}); \
                         ignored",
                        s.key, a.key, t.label
                    )));
                }
                continue;
            }
            if let Some(accrual) = &s.accrual {
                let policy = TrafficPolicy {
                    failure_accrual: Some(accrual.clone()),
                    ..TrafficPolicy::default()
                };
                let source = format!("Service {}/{} annotations", s.key.namespace, s.key.name);
                add_policy(policies, &s.key, &source, policy);
            }
            if !s.timing.has_effect() {
                continue;
            }
            match routes.iter_mut().find(|r| r.service == s.key) {
                Some(existing) => {
                    for route in existing.routes.iter_mut().filter(|r| forwards(r)) {
                        let (own_retry, own_timeouts) =
                            own.get(&route.name).copied().unwrap_or_default();
                        s.timing.apply_default(route, own_retry, own_timeouts);
                    }
                }
                None => {
                    let mut route = HttpRoute {
                        name: format!("Service {}/{} annotations", s.key.namespace, s.key.name),
                        destinations: vec![Destination::service(s.key.clone(), 1)],
                        ..HttpRoute::default()
                    };
                    s.timing.apply_default(&mut route, false, false);
                    routes.push(ServiceRoutes {
                        service: s.key.clone(),
                        routes: vec![route],
                    });
                }
            }
        }
    }
}

/// Adds `policy` to the service's policy (one per service, as proxies read only one; what is
/// there already, such as a DestinationRule's, wins field by field, and its subsets' policies,
/// merged over the service's, get it too), or a new one.
fn add_policy(
    policies: &mut Vec<ServicePolicy>,
    service: &ServiceKey,
    source: &str,
    policy: TrafficPolicy,
) {
    match policies.iter_mut().find(|p| p.service == *service) {
        Some(existing) => {
            existing.policy = policy.merged(&existing.policy);
            for subset in &mut existing.subsets {
                subset.policy = policy.merged(&subset.policy);
            }
            existing.source = format!("{}, {source}", existing.source);
        }
        None => policies.push(ServicePolicy {
            service: service.clone(),
            source: source.to_string(),
            policy,
            subsets: Vec::new(),
        }),
    }
}

/// The resources that made a service's routes (`HTTPRoute default/a, TrafficSplit default/b`).
fn sources(routes: &[HttpRoute]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in routes {
        let name = r.name.split(" rules[").next().unwrap_or(&r.name);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.join(", ")
}

/// One ServiceProfile's routes and budget; `None` (with errors, which the caller turns into
/// its rejection, or a notice) if it cannot apply.
fn translate(
    p: &Profile,
    ports: Option<&HashMap<ServiceKey, u16>>,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Option<Translated> {
    let (doc, label) = (p.doc(), p.label());
    let (metadata, spec) = (&p.kind.metadata, &p.kind.spec);
    let before = errors.len();
    let Some(key) = profile::profile_service(&metadata.name) else {
        errors.push(doc.error(
            "metadata.name",
            format!(
                "`{}` is not a service's fully qualified name NAME.NAMESPACE.svc.{}, the name \
                 Linkerd looks profiles up by",
                metadata.name,
                model::names::CLUSTER_DOMAIN
            ),
        ));
        return None;
    };
    if ports.is_some_and(|known| !known.contains_key(&key)) {
        errors.push(doc.error(
            "metadata.name",
            format!("service {key} is not a service of the mesh"),
        ));
        return None;
    }
    if key.namespace != metadata.namespace() {
        warnings.push(doc.error(
            "metadata.namespace",
            format!(
                "{label}: a profile outside its service's namespace ({}) applies only to clients \
                 in namespace {} in Linkerd, and weft does not yet scope routes by client \
                 namespace; ignored",
                key.namespace,
                metadata.namespace()
            ),
        ));
        return None;
    }
    if spec.opaque_ports.is_some() {
        warnings.push(doc.error(
            "spec.opaquePorts",
            format!("{label}: opaquePorts is not yet supported; ignored"),
        ));
    }

    let mut overrides = Vec::new();
    for (j, d) in spec.dst_overrides.iter().enumerate() {
        let field = format!("spec.dstOverrides[{j}]");
        let weight = match profile::weight(&d.weight) {
            Ok(w) => w,
            Err(message) => {
                errors.push(doc.error(&format!("{field}.weight"), message));
                continue;
            }
        };
        let Some((service, port)) = profile::authority(&d.authority, &key.namespace) else {
            errors.push(doc.error(
                &format!("{field}.authority"),
                format!(
                    "`{}` is not a service name like NAME.NAMESPACE.svc.cluster.local:PORT",
                    d.authority
                ),
            ));
            continue;
        };
        match (ports.map(|known| known.get(&service)), port) {
            (Some(None), _) => errors.push(doc.error(
                &format!("{field}.authority"),
                format!("backend {service} is not a service of the mesh"),
            )),
            (Some(Some(&listens)), Some(port)) if listens != port => errors.push(doc.error(
                &format!("{field}.authority"),
                format!("service {service} listens on port {listens}, not {port}"),
            )),
            _ => overrides.push(Destination::service(service, weight)),
        }
    }
    if !overrides.is_empty()
        && overrides.len() == spec.dst_overrides.len()
        && overrides.iter().all(|d| d.weight == 0)
    {
        warnings.push(doc.error(
            "spec.dstOverrides",
            format!(
                "{label}: every dstOverrides weight is 0, so Linkerd ignores them and requests go \
                 to {key}"
            ),
        ));
        overrides.clear();
    }
    let destinations = if overrides.is_empty() {
        vec![Destination::service(key.clone(), 1)]
    } else {
        overrides.clone()
    };

    let mut routes = Vec::new();
    for (i, r) in spec.routes.iter().enumerate() {
        let field = format!("spec.routes[{i}]");
        let route_before = errors.len();
        if r.name.is_empty() {
            errors.push(doc.error(&format!("{field}.name"), "a route needs a name"));
        }
        let matches = match &r.condition {
            Some(c) => profile::condition(&doc, &format!("{field}.condition"), c, errors),
            None => {
                errors.push(doc.error(&field, "missing field `condition`"));
                None
            }
        };
        let response_classes = profile::response_classes(
            &doc,
            &format!("{field}.responseClasses"),
            &r.response_classes,
            errors,
        );
        let timeout_ms = match r.timeout.as_deref().map(profile::go_duration) {
            Some(Ok(ms)) => ms,
            Some(Err(message)) => {
                errors.push(doc.error(&format!("{field}.timeout"), message));
                None
            }
            None => None,
        };
        let Some(matches) = matches else { continue };
        let name = format!("{label} routes[{i}] ({})", r.name);
        if matches.is_empty() {
            warnings.push(doc.error(
                &format!("{field}.condition"),
                format!("{name}: the condition matches no request; the route is never used"),
            ));
            continue;
        }
        let route = HttpRoute {
            name,
            matches,
            destinations: destinations.clone(),
            timeout_ms,
            retry: r.is_retryable.then(profile::retryable),
            response_classes,
            ..HttpRoute::default()
        };
        if errors.len() == route_before {
            valid::routes(&doc, &field, std::slice::from_ref(&route), true, errors);
        }
        routes.push(route);
    }
    routes.push(HttpRoute {
        name: format!("{label} (catch-all)"),
        destinations,
        ..HttpRoute::default()
    });
    // Linkerd bounds ServiceProfile retries by a budget even when the profile names none:
    // then its default (20% of requests plus 10 retries/s over 10 s).
    let budget = match spec.retry_budget.as_ref() {
        Some(b) => profile::retry_budget(&doc, b, errors),
        None if spec.routes.iter().any(|r| r.is_retryable) => Some(model::RetryBudget::default()),
        None => None,
    };
    if let (Some(b), true) = (&budget, errors.len() == before) {
        let policy = model::TrafficPolicy {
            retry_budget: Some(b.clone()),
            ..model::TrafficPolicy::default()
        };
        valid::policy(&doc, "spec.retryBudget", &policy, errors);
    }
    if errors.len() != before {
        return None;
    }
    let in_force = !spec.routes.is_empty() || !overrides.is_empty();
    if !in_force {
        warnings.push(doc.error(
            "spec",
            format!(
                "{label}: has no routes and no dstOverrides, so Linkerd does not use it; ignored"
            ),
        ));
    }
    Some(Translated {
        key,
        at: doc.error("metadata.name", ""),
        label,
        routes,
        budget,
        in_force,
    })
}

#[cfg(test)]
mod tests;
