//! Connection caps, in the spirit of Envoy's overload manager: each listener and the proxy as
//! a whole count their open connections; past a cap a new connection is answered 503 (flag
//! `OM`) and closed at once, while established connections keep being served. The admin
//! listener has its own small cap outside the proxy's, so readiness and metrics stay
//! answerable under any load.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Open connections against a cap.
#[derive(Debug)]
pub struct ConnCap {
    open: AtomicUsize,
    max: usize,
    refused: AtomicU64,
}

impl ConnCap {
    pub fn new(max: usize) -> Arc<ConnCap> {
        Arc::new(ConnCap {
            open: AtomicUsize::new(0),
            max,
            refused: AtomicU64::new(0),
        })
    }

    /// A slot, if one is free.
    pub fn try_take(self: &Arc<Self>) -> Option<ConnPermit> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= self.max {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(ConnPermit(self.clone())),
                Err(now) => open = now,
            }
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections refused at the cap so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One open connection's slot; given back when dropped.
#[derive(Debug)]
pub struct ConnPermit(Arc<ConnCap>);

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A proxy's caps: its own, and one per listener.
pub struct Caps {
    pub total: Arc<ConnCap>,
    pub listeners: Vec<(&'static str, Arc<ConnCap>)>,
}

impl Caps {
    /// `total` for the proxy, `per_listener` for each of `names`, [`ADMIN_MAX_CONNECTIONS`] for
    /// the admin listener.
    pub fn new(total: usize, per_listener: usize, names: &[&'static str]) -> Arc<Caps> {
        let mut listeners: Vec<_> = names
            .iter()
            .map(|n| (*n, ConnCap::new(per_listener)))
            .collect();
        listeners.push(("admin", ConnCap::new(ADMIN_MAX_CONNECTIONS)));
        Arc::new(Caps {
            total: ConnCap::new(total),
            listeners,
        })
    }

    /// The listener `name`'s cap.
    pub fn listener(&self, name: &str) -> Arc<ConnCap> {
        self.listeners
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| ConnCap::new(ADMIN_MAX_CONNECTIONS))
    }
}

/// Connections the admin listener takes at once, outside the proxy's cap.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The caps and HTTP/2 floods as metrics: `weft_listener_connections{listener}`,
/// `weft_listener_connections_refused_total{listener}` (`listener="proxy"`: the proxy-wide
/// cap) and `weft_http2_floods_total{kind}`.
pub struct OverloadCollector {
    pub caps: Arc<Caps>,
    pub floods: Arc<crate::guard::Floods>,
}

impl std::fmt::Debug for OverloadCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OverloadCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

impl prometheus_client::collector::Collector for OverloadCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let all = std::iter::once(("proxy", &self.caps.total))
            .chain(self.caps.listeners.iter().map(|(n, c)| (*n, c)));
        let mut e = encoder.encode_descriptor(
            "weft_listener_connections",
            "Open client connections by listener (listener=\"proxy\": all of the proxy's but the admin's)",
            None,
            MetricType::Gauge,
        )?;
        for (listener, cap) in all.clone() {
            ConstGauge::new(cap.open() as i64)
                .encode(e.encode_family(&ListenerLabel { listener })?)?;
        }
        let mut e = encoder.encode_descriptor(
            "weft_listener_connections_refused",
            "Client connections answered 503 OM and closed at a connection cap",
            None,
            MetricType::Counter,
        )?;
        for (listener, cap) in all {
            ConstCounter::new(cap.refused())
                .encode(e.encode_family(&ListenerLabel { listener })?)?;
        }
        let mut e = encoder.encode_descriptor(
            "weft_http2_floods",
            "HTTP/2 connections closed with GOAWAY(ENHANCE_YOUR_CALM) for a flood, by kind",
            None,
            MetricType::Counter,
        )?;
        for kind in crate::guard::Floods::ALL {
            ConstCounter::new(self.floods.count(kind)).encode(e.encode_family(&KindLabel {
                kind: kind.as_str(),
            })?)?;
        }
        Ok(())
    }
}

/// What a connection refused at the cap gets, when its socket takes it at once (a plaintext
/// listener); otherwise it is just closed.
pub const SHED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nx-weft-flag: OM\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 44\r\nconnection: close\r\n\r\nthe proxy is at its connection limit; retry\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_counts_and_refuses() {
        let cap = ConnCap::new(2);
        let a = cap.try_take().unwrap();
        let _b = cap.try_take().unwrap();
        assert!(cap.try_take().is_none());
        assert_eq!((cap.open(), cap.refused()), (2, 1));
        drop(a);
        assert!(cap.try_take().is_some());
    }

    #[test]
    fn the_shed_response_is_well_formed() {
        let text = std::str::from_utf8(SHED_RESPONSE).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body.len(), 44);
    }
}
