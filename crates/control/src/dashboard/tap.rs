//! The dashboard's live tap: while the tap page polls, every proxy's admin `/tap` is streamed
//! (with the mesh's admin credential) into one bounded buffer of recent events that the page
//! reads from its last sequence number on. Proxies that appear later are tapped as they
//! register; nobody polling for [`IDLE`] ends every stream.

use crate::http_api::Api;
use http_body_util::BodyExt;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Events kept for the page.
pub const KEEP: usize = 1000;
/// How long the streams stay open without a poll.
pub const IDLE: Duration = Duration::from_secs(15);
/// How often the proxies are listed (new ones tapped, ended streams reopened).
const RESCAN: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    events: VecDeque<(u64, Arc<serde_json::Value>)>,
    next: u64,
    polled: Option<Instant>,
    running: bool,
    /// Proxies being tapped (key: instance@admin).
    tapping: BTreeMap<String, CancellationToken>,
    /// Why a proxy's tap failed, by proxy instance.
    errors: BTreeMap<String, String>,
    /// Events the proxies dropped because the stream fell behind.
    lost: u64,
}

#[derive(Default)]
pub struct TapFeed {
    state: Mutex<State>,
}

/// What a poll returns.
#[derive(serde::Serialize)]
pub struct Page {
    /// Events after the one asked from, oldest first, each with its `seq`.
    pub events: Vec<serde_json::Value>,
    /// The sequence number to ask from next.
    pub next: u64,
    /// How many proxies are tapped.
    pub proxies: usize,
    pub errors: BTreeMap<String, String>,
    pub lost: u64,
}

impl TapFeed {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The events after `after` (at most `limit`), starting the streams if they were not open.
    pub fn poll(self: &Arc<Self>, api: &Arc<Api>, after: u64, limit: usize) -> Page {
        let mut s = self.lock();
        s.polled = Some(Instant::now());
        if !s.running {
            s.running = true;
            tokio::spawn(self.clone().keep(api.clone()));
        }
        let skip = s.events.partition_point(|(seq, _)| *seq <= after);
        let mut events: Vec<serde_json::Value> = s
            .events
            .iter()
            .skip(skip)
            .map(|(seq, e)| {
                let mut e = (**e).clone();
                e["seq"] = (*seq).into();
                e
            })
            .collect();
        if events.len() > limit {
            events.drain(..events.len() - limit);
        }
        Page {
            events,
            next: s.next,
            proxies: s.tapping.len(),
            errors: s.errors.clone(),
            lost: s.lost,
        }
    }

    /// Keeps a stream open to every proxy until nobody polls.
    async fn keep(self: Arc<Self>, api: Arc<Api>) {
        loop {
            let idle = self.lock().polled.is_none_or(|t| t.elapsed() > IDLE);
            if idle {
                let mut s = self.lock();
                for (_, stop) in std::mem::take(&mut s.tapping) {
                    stop.cancel();
                }
                s.running = false;
                return;
            }
            let st = crate::status::build(&api.registry, api.control, api.api);
            for (instance, admin) in st.admins() {
                let key = format!("{instance}@{admin}");
                let stop = {
                    let mut s = self.lock();
                    if s.tapping.contains_key(&key) {
                        continue;
                    }
                    let stop = CancellationToken::new();
                    s.tapping.insert(key.clone(), stop.clone());
                    stop
                };
                let me = self.clone();
                let token = api.admin_token.clone();
                tokio::spawn(async move {
                    let ended = tokio::select! {
                        r = me.stream(&admin, token.as_deref()) => r,
                        _ = stop.cancelled() => Ok(()),
                    };
                    let mut s = me.lock();
                    s.tapping.remove(&key);
                    match ended {
                        Err(e) => s.errors.insert(instance, e),
                        Ok(()) => s.errors.remove(&instance),
                    };
                });
            }
            tokio::time::sleep(RESCAN).await;
        }
    }

    /// One proxy's `/tap`, line by line into the buffer, until it ends.
    async fn stream(&self, admin: &str, token: Option<&str>) -> Result<(), String> {
        let client = crate::proxy_admin::client();
        let mut req = http::Request::get(format!("http://{admin}/tap?seconds=600"));
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(http_body_util::Empty::new())
            .map_err(|e| e.to_string())?;
        let rsp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
            .await
            .map_err(|_| format!("{admin}/tap: no answer in 5 s"))?
            .map_err(|e| format!("{admin}/tap: {e}"))?;
        if !rsp.status().is_success() {
            let status = rsp.status();
            let body = rsp.into_body().collect().await.map(|b| b.to_bytes());
            let why = body.map(|b| String::from_utf8_lossy(&b).trim().to_string());
            return Err(format!("{admin}/tap: {status} {}", why.unwrap_or_default()));
        }
        let mut body = rsp.into_body();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("{admin}/tap: {e}"))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                self.add(&line);
            }
        }
        Ok(())
    }

    fn add(&self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            return;
        };
        let mut s = self.lock();
        if let Some(n) = v.get("lost").and_then(|n| n.as_u64()) {
            s.lost += n;
            return;
        }
        s.next += 1;
        let seq = s.next;
        s.events.push_back((seq, Arc::new(v)));
        while s.events.len() > KEEP {
            s.events.pop_front();
        }
    }
}
