//! Live tap: a stream of the requests a proxy handles (method, path, status, latency, flags,
//! identities), for `weft tap` and `weft top`, served as NDJSON on the admin `/tap`.
//!
//! It never slows the data path: with nobody watching, a request pays one atomic load; while
//! someone is, events go into a bounded broadcast buffer and a watcher that falls behind loses
//! events (and is told how many) rather than holding anything up.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events buffered per watcher before the oldest are dropped.
pub const BUFFER: usize = 4096;

/// One request as a proxy saw it end (the type `weft tap` reads back).
pub use model::tap::TapEvent;

/// What a request must carry to be worth an event, captured only while someone watches.
#[derive(Clone, Debug)]
pub struct TapRequest {
    pub ts_ms: u64,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub request_id: String,
}

pub struct Tap {
    watchers: AtomicUsize,
    tx: broadcast::Sender<Arc<TapEvent>>,
}

impl Default for Tap {
    fn default() -> Self {
        Tap {
            watchers: AtomicUsize::new(0),
            tx: broadcast::Sender::new(BUFFER),
        }
    }
}

/// A watcher; dropping it stops the events.
pub struct Watch {
    tap: Arc<Tap>,
    pub rx: broadcast::Receiver<Arc<TapEvent>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.tap.watchers.fetch_sub(1, Relaxed);
    }
}

impl Tap {
    /// A tap nobody can watch (for proxies without telemetry).
    pub fn idle() -> &'static Tap {
        static IDLE: std::sync::OnceLock<Tap> = std::sync::OnceLock::new();
        IDLE.get_or_init(Tap::default)
    }

    /// One atomic load: whether anyone watches.
    pub fn active(&self) -> bool {
        self.watchers.load(Relaxed) > 0
    }

    pub fn watch(self: &Arc<Self>) -> Watch {
        self.watchers.fetch_add(1, Relaxed);
        Watch {
            tap: self.clone(),
            rx: self.tx.subscribe(),
        }
    }

    pub fn send(&self, e: TapEvent) {
        let _ = self.tx.send(Arc::new(e));
    }

    /// The request side of an event, if someone watches.
    pub fn capture<B>(&self, req: &http::Request<B>) -> Option<Box<TapRequest>> {
        if !self.active() {
            return None;
        }
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        Some(Box::new(TapRequest {
            ts_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            method: req.method().to_string(),
            authority,
            path: req
                .uri()
                .path_and_query()
                .map_or("/".to_string(), |p| p.to_string()),
            request_id: req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        }))
    }
}

/// Which events a watcher wants (`/tap?path=&method=&authority=&direction=`).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub path_prefix: Option<String>,
    pub method: Option<String>,
    /// Substring of the destination service's FQDN or the authority.
    pub to: Option<String>,
    pub direction: Option<String>,
}

impl Filter {
    pub fn from_query(q: Option<&str>) -> Filter {
        let mut f = Filter::default();
        for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            let v = Some(v.into_owned()).filter(|v| !v.is_empty());
            match &*k {
                "path" => f.path_prefix = v,
                "method" => f.method = v.map(|m| m.to_ascii_uppercase()),
                "to" => f.to = v,
                "direction" => f.direction = v,
                _ => {}
            }
        }
        f
    }

    pub fn wants(&self, e: &TapEvent) -> bool {
        self.path_prefix
            .as_ref()
            .is_none_or(|p| e.path.starts_with(p.as_str()))
            && self.method.as_ref().is_none_or(|m| &e.method == m)
            && self
                .direction
                .as_ref()
                .is_none_or(|d| e.direction == d.as_str())
            && self.to.as_ref().is_none_or(|t| {
                e.dst_service.contains(t.as_str()) || e.authority.contains(t.as_str())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str, method: &str) -> TapEvent {
        TapEvent {
            ts_ms: 0,
            direction: "inbound".into(),
            method: method.into(),
            authority: "hello".into(),
            path: path.into(),
            status: 200,
            latency_ms: 1.0,
            flags: "-".into(),
            src_workload: "a".into(),
            src_identity: String::new(),
            dst_workload: "b".into(),
            dst_identity: String::new(),
            dst_service: "hello.default.svc.cluster.local".into(),
            mtls: true,
            request_id: String::new(),
            grpc_status: None,
        }
    }

    #[tokio::test]
    async fn watchers_get_what_their_filter_wants_and_nobody_watching_costs_nothing() {
        let tap = Arc::new(Tap::default());
        assert!(!tap.active());
        let req = http::Request::get("http://hello/x").body(()).unwrap();
        assert!(tap.capture(&req).is_none());
        let mut w = tap.watch();
        assert!(tap.active());
        assert!(tap.capture(&req).is_some());
        tap.send(event("/api/x", "GET"));
        let e = w.rx.recv().await.unwrap();
        let f = Filter::from_query(Some("path=/api&method=get&to=hello"));
        assert!(f.wants(&e));
        assert!(!Filter::from_query(Some("method=POST")).wants(&e));
        drop(w);
        assert!(!tap.active());
    }

    #[tokio::test]
    async fn a_slow_watcher_loses_events_instead_of_blocking() {
        let tap = Arc::new(Tap::default());
        let mut w = tap.watch();
        for _ in 0..BUFFER + 10 {
            tap.send(event("/", "GET"));
        }
        assert!(matches!(
            w.rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(10))
        ));
    }
}
