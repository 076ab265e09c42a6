//! Connection routes (VirtualService `tls[]` and `tcp[]`) compiled for the hot path: a tunnel
//! or TCP connection to a service is matched once, by the port its client addressed, the TLS
//! server name it sends first and the workload it comes from, and one destination is drawn by
//! weight for the whole connection.

use super::{pick_weighted, Me, RouteError};
use crate::table::Backend;
use model::route::{sni_host_matches, TcpRoute};
use std::sync::Arc;

/// Where a connection goes: a backend (a service, or a subset of one) and the port to ask its
/// sidecar for (`None`: the port the client addressed).
pub struct ConnDest {
    pub backend: Arc<Backend>,
    pub port: Option<u16>,
}

/// One compiled connection rule.
pub struct ConnRoute {
    pub name: String,
    /// Any of these; empty: every connection. Matches whose source conditions do not hold for
    /// this workload are left out when compiling, so a rule whose every match was left out
    /// takes no connection ([`ConnRoute::never`]).
    matches: Vec<ConnMatch>,
    never: bool,
    /// Destinations with their cumulative weights.
    destinations: Vec<(ConnDest, u32)>,
    total: u32,
}

struct ConnMatch {
    port: Option<u16>,
    sni_hosts: Vec<String>,
}

impl ConnRoute {
    /// Compiles `r` for the workload `me`; `backend_for` gives the endpoints a destination
    /// selects.
    pub fn compile_for(
        r: &TcpRoute,
        me: Me<'_>,
        mut backend_for: impl FnMut(&model::route::Destination) -> Arc<Backend>,
    ) -> Result<ConnRoute, RouteError> {
        let matches: Vec<ConnMatch> = r
            .matches
            .iter()
            .filter(|m| {
                m.source_labels
                    .iter()
                    .all(|(k, v)| me.labels.get(k) == Some(v))
                    && m.source_namespace
                        .as_deref()
                        .is_none_or(|ns| ns == me.namespace)
            })
            .map(|m| ConnMatch {
                port: m.port,
                sni_hosts: m.sni_hosts.clone(),
            })
            .collect();
        let never = matches.is_empty() && !r.matches.is_empty();
        let mut total = 0u32;
        let mut destinations = Vec::with_capacity(r.destinations.len());
        for d in r.destinations.iter().filter(|d| d.to.weight > 0) {
            total = total.saturating_add(d.to.weight);
            let dest = ConnDest {
                backend: backend_for(&d.to),
                port: d.port,
            };
            destinations.push((dest, total));
        }
        if total == 0 {
            return Err(RouteError {
                route: r.name.clone(),
                why: "every destination has weight 0".into(),
            });
        }
        Ok(ConnRoute {
            name: r.name.clone(),
            matches,
            never,
            destinations,
            total,
        })
    }

    /// Whether a connection to `port` whose client sent the server name `sni` (if it sent a
    /// TLS ClientHello) falls under this rule.
    pub fn matches(&self, port: u16, sni: Option<&str>) -> bool {
        if self.never {
            return false;
        }
        self.matches.is_empty()
            || self.matches.iter().any(|m| {
                m.port.is_none_or(|p| p == port)
                    && (m.sni_hosts.is_empty()
                        || sni.is_some_and(|name| {
                            m.sni_hosts.iter().any(|h| sni_host_matches(h, name))
                        }))
            })
    }

    /// Whether deciding needs the server name of the client's TLS ClientHello.
    pub fn needs_sni(&self) -> bool {
        self.matches.iter().any(|m| !m.sni_hosts.is_empty())
    }

    /// A destination, drawn by weight.
    pub fn pick(&self) -> &ConnDest {
        pick_weighted(&self.destinations, self.total)
            .expect("a compiled connection rule has a destination with weight")
    }

    /// Every backend the rule sends to.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.destinations.iter().map(|(d, _)| &d.backend)
    }
}

/// The first of `routes` that takes a connection to `port` with server name `sni`.
pub fn first<'a>(routes: &'a [ConnRoute], port: u16, sni: Option<&str>) -> Option<&'a ConnRoute> {
    routes.iter().find(|r| r.matches(port, sni))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests_support::backend;
    use model::route::{Destination, TcpDestination, TcpMatch};
    use model::{LoadBalancer, ServiceKey};

    fn dest(name: &str, weight: u32, port: Option<u16>) -> TcpDestination {
        TcpDestination {
            to: Destination::service(ServiceKey::new(name, "default"), weight),
            port,
        }
    }

    fn compile(r: &TcpRoute, me: Me<'_>) -> ConnRoute {
        ConnRoute::compile_for(r, me, |d| {
            Arc::new(backend(&d.service.to_string(), LoadBalancer::RoundRobin))
        })
        .unwrap()
    }

    #[test]
    fn rules_match_by_port_server_name_and_source() {
        let labels: model::Labels = [("app".to_string(), "web".to_string())].into();
        let me = Me {
            namespace: "default",
            labels: &labels,
        };
        let tls = TcpRoute {
            name: "tls".into(),
            matches: vec![TcpMatch {
                port: Some(443),
                sni_hosts: vec!["login.example.com".into(), "*.shop.test".into()],
                ..TcpMatch::default()
            }],
            destinations: vec![dest("login", 100, None)],
        };
        let r = compile(&tls, me);
        assert!(r.needs_sni());
        assert!(r.matches(443, Some("login.example.com")));
        assert!(r.matches(443, Some("LOGIN.example.com")));
        assert!(r.matches(443, Some("a.b.shop.test")));
        assert!(
            !r.matches(443, Some("shop.test")),
            "*.x needs a label before .x"
        );
        assert!(!r.matches(443, None), "a client that sends no ClientHello");
        assert!(!r.matches(8443, Some("login.example.com")));

        let from = |labels: &[(&str, &str)], ns: Option<&str>| TcpRoute {
            name: "from".into(),
            matches: vec![TcpMatch {
                source_labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                source_namespace: ns.map(str::to_string),
                ..TcpMatch::default()
            }],
            destinations: vec![dest("db", 1, Some(5432))],
        };
        assert!(compile(&from(&[("app", "web")], Some("default")), me).matches(1, None));
        assert!(!compile(&from(&[("app", "api")], None), me).matches(1, None));
        assert!(!compile(&from(&[], Some("shop")), me).matches(1, None));
        let any = TcpRoute {
            matches: vec![],
            ..from(&[], None)
        };
        assert!(compile(&any, me).matches(9, Some("x")));
        assert_eq!(compile(&any, me).pick().port, Some(5432));
    }

    #[test]
    fn destinations_are_drawn_by_weight() {
        let r = compile(
            &TcpRoute {
                name: "split".into(),
                matches: vec![],
                destinations: vec![dest("a", 80, None), dest("b", 20, None), dest("c", 0, None)],
            },
            Me::nobody(),
        );
        let n = 20_000;
        let a = (0..n)
            .filter(|_| r.pick().backend.name == "a.default")
            .count();
        let share = a as f64 / n as f64;
        // 80% ± 2% (the standard deviation is 0.28% at this count).
        assert!((0.78..0.82).contains(&share), "share of a: {share}");
        assert!(r.backends().all(|b| b.name != "c.default"));
    }

    #[test]
    fn a_rule_with_nothing_to_send_to_is_refused() {
        let r = TcpRoute {
            name: "zero".into(),
            matches: vec![],
            destinations: vec![dest("a", 0, None)],
        };
        assert!(ConnRoute::compile_for(&r, Me::nobody(), |d| {
            Arc::new(backend(&d.service.to_string(), LoadBalancer::RoundRobin))
        })
        .is_err());
    }
}
