//! Allow / deny counters by deciding policy. Label sets are created when an authorizer is
//! compiled, so counting a decision on the request path is one atomic add.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;

/// Whether a decision was about an HTTP request or a plain connection.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Protocol {
    http,
    tcp,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthzLabels {
    policy: String,
    protocol: Protocol,
}

/// Allow / deny counters by deciding policy (Linkerd's `inbound_http_authz_{allow,deny}_total`
/// by `authz_name`). Label sets are created when an [`Authorizer`] is compiled, so counting a
/// decision is one atomic add. Clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct AuthzStats {
    allow: Family<AuthzLabels, Counter>,
    deny: Family<AuthzLabels, Counter>,
}

impl AuthzStats {
    /// Registers `weft_inbound_authz_allow_total` and `weft_inbound_authz_deny_total`
    /// (labels `policy`, `protocol`).
    pub fn register(registry: &mut Registry) -> Self {
        let stats = AuthzStats::default();
        registry.register(
            "weft_inbound_authz_allow",
            "Inbound requests and connections allowed, by deciding policy",
            stats.allow.clone(),
        );
        registry.register(
            "weft_inbound_authz_deny",
            "Inbound requests and connections denied, by deciding policy",
            stats.deny.clone(),
        );
        stats
    }

    /// How many decisions `policy` made (for tests and the admin page).
    pub fn count(&self, policy: &str, protocol: Protocol, allowed: bool) -> u64 {
        let family = if allowed { &self.allow } else { &self.deny };
        family
            .get_or_create(&AuthzLabels {
                policy: policy.to_string(),
                protocol,
            })
            .get()
    }

    fn tally(&self, name: &str) -> Tally {
        let get = |family: &Family<AuthzLabels, Counter>, protocol| {
            family
                .get_or_create(&AuthzLabels {
                    policy: name.to_string(),
                    protocol,
                })
                .clone()
        };
        Tally {
            name: name.into(),
            allow: [
                get(&self.allow, Protocol::http),
                get(&self.allow, Protocol::tcp),
            ],
            deny: [
                get(&self.deny, Protocol::http),
                get(&self.deny, Protocol::tcp),
            ],
        }
    }
}

/// A deciding policy's name and its counters, resolved at compile time.
#[derive(Debug)]
pub(super) struct Tally {
    pub(super) name: Arc<str>,
    /// By [`Protocol`]: http, tcp.
    pub(super) allow: [Counter; 2],
    pub(super) deny: [Counter; 2],
}

/// Hands out one [`Tally`] per name while compiling.
pub(super) struct Tallies<'s> {
    stats: &'s AuthzStats,
    by_name: HashMap<String, Arc<Tally>>,
}

impl<'s> Tallies<'s> {
    pub(super) fn new(stats: &'s AuthzStats) -> Self {
        Tallies {
            stats,
            by_name: HashMap::new(),
        }
    }

    pub(super) fn get(&mut self, name: &str) -> Arc<Tally> {
        if let Some(t) = self.by_name.get(name) {
            return t.clone();
        }
        let t = Arc::new(self.stats.tally(name));
        self.by_name.insert(name.to_string(), t.clone());
        t
    }
}
