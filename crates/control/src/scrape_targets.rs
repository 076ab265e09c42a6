//! Which proxies Prometheus scrapes, as Prometheus's service discovery takes them (the JSON of
//! `http_sd_configs` and `file_sd_configs`): every connected proxy with an admin address, the
//! newest registration of each instance, with the labels dashboards filter on. The API serves
//! them at `GET /prometheus/targets`.

use crate::registry::ProxyRecord;
use serde::Serialize;
use std::collections::BTreeMap;

/// One entry of a service discovery list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// The scrape targets of `proxies` (see the module docs for which proxies): one group
/// per proxy, labelled with `mesh`, `service`, `namespace`, `workload`, `instance` (weft's
/// instance name, in place of Prometheus's default `HOST:PORT`) and `mode`, in a stable order.
pub fn targets(mesh: &str, proxies: &[ProxyRecord]) -> Vec<TargetGroup> {
    let mut newest: BTreeMap<(&str, &str, &str, &str), &ProxyRecord> = BTreeMap::new();
    // `proxies` comes in registration order: a later registration of an instance wins.
    for p in proxies.iter().filter(|p| p.node.admin.is_some()) {
        let n = &p.node;
        newest.insert((&n.mode, &n.namespace, &n.service, &n.instance), p);
    }
    newest
        .values()
        .filter_map(|p| {
            let n = &p.node;
            let labels = [
                ("mesh", mesh),
                ("service", &n.service),
                ("namespace", &n.namespace),
                ("workload", &n.workload),
                ("instance", &n.instance),
                ("mode", &n.mode),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            Some(TargetGroup {
                targets: vec![n.admin?.to_string()],
                labels,
            })
        })
        .collect()
}
