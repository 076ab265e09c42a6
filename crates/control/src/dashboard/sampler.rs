//! The dashboard's traffic history: every proxy's `/metrics` read every [`INTERVAL`] while
//! someone looks at the dashboard (and for [`LINGER`] after), kept as per-service and
//! per-workload rows of each interval for the charts, plus the last readings themselves for the
//! current window (the graph, the service pages). Nobody looking: no reads at all.

use crate::http_api::Api;
use stat::{EdgeRow, Kind, Reading, Replica, StatRow};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the proxies are read.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// The current window: rows between the newest reading and the one about this long before.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How much history the charts keep.
pub const HISTORY: Duration = Duration::from_secs(600);
/// How long reading goes on after the dashboard was last asked for data.
pub const LINGER: Duration = Duration::from_secs(300);

/// One interval's rows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Point {
    /// Its end, ms since the epoch.
    pub t_ms: u64,
    pub secs: f64,
    pub services: Vec<StatRow>,
    pub workloads: Vec<StatRow>,
}

/// The current window: its rows and edges, and how long it is.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub secs: f64,
    pub services: Vec<StatRow>,
    pub workloads: Vec<StatRow>,
    /// Edges to services, callers named by [`super::caller`].
    pub edges: Vec<EdgeRow>,
    /// Edges to workloads, callers named by their workload.
    pub workload_edges: Vec<EdgeRow>,
}

struct Taken {
    at: Instant,
    readings: HashMap<String, Reading>,
}

#[derive(Default)]
struct State {
    /// The readings of the last [`WINDOW`] (and one before it), oldest first.
    recent: VecDeque<Taken>,
    points: VecDeque<Point>,
    replicas: Vec<Replica>,
    window: Window,
}

/// The history and the task that keeps it while wanted.
#[derive(Default)]
pub struct Sampler {
    state: Mutex<State>,
    running: AtomicBool,
    /// When data was last asked for (ms since the sampler's epoch, [`Sampler::touch`]).
    wanted_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl Sampler {
    fn elapsed_ms(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    /// Someone wants data: reading starts (with a first reading right away) if it had stopped.
    pub fn touch(self: &Arc<Self>, api: &Arc<Api>) {
        self.wanted_ms.store(self.elapsed_ms(), Relaxed);
        if self.running.swap(true, Relaxed) {
            return;
        }
        let (me, api) = (self.clone(), api.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let idle = me.elapsed_ms() - me.wanted_ms.load(Relaxed);
                if idle > LINGER.as_millis() as u64 {
                    // A touch that lands between the check and the store finds it running and
                    // spawns nothing; the page's next poll (every few seconds) starts it again.
                    me.running.store(false, Relaxed);
                    return;
                }
                me.read_once(&api).await;
            }
        });
    }

    /// Reads every proxy once and adds the interval since the last reading.
    async fn read_once(&self, api: &Api) {
        let st = crate::status::build(&api.registry, api.control, api.api);
        let replicas: Vec<Replica> = st.workloads.iter().map(|w| w.replica()).collect();
        let urls: Vec<(String, String)> = st
            .admins()
            .into_iter()
            .map(|(instance, admin)| {
                let url = format!("http://{admin}/metrics");
                (crate::status::proxy_key(&instance, &admin), url)
            })
            .collect();
        let readings = crate::canary::analysis::read(&urls).await;
        let now = Instant::now();
        let t_ms = unix_ms();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = s.recent.back() {
            let secs = now.duration_since(last.at).as_secs_f64();
            let point = Point {
                t_ms,
                secs,
                services: stat::rows(Kind::Service, &replicas, &last.readings, &readings, secs),
                workloads: stat::rows(Kind::Workload, &replicas, &last.readings, &readings, secs),
            };
            s.points.push_back(point);
            let keep = (HISTORY.as_secs_f64() / INTERVAL.as_secs_f64()) as usize;
            while s.points.len() > keep {
                s.points.pop_front();
            }
        }
        s.recent.push_back(Taken { at: now, readings });
        // Keep the newest reading at least WINDOW after the oldest, no more.
        while s.recent.len() > 2 && now.duration_since(s.recent[1].at) >= WINDOW {
            s.recent.pop_front();
        }
        s.window = match (s.recent.front(), s.recent.back()) {
            (Some(a), Some(b)) if s.recent.len() > 1 => {
                let secs = b.at.duration_since(a.at).as_secs_f64();
                Window {
                    secs,
                    services: stat::rows(Kind::Service, &replicas, &a.readings, &b.readings, secs),
                    workloads: stat::rows(
                        Kind::Workload,
                        &replicas,
                        &a.readings,
                        &b.readings,
                        secs,
                    ),
                    edges: stat::edge_rows(
                        Kind::Service,
                        &a.readings,
                        &b.readings,
                        secs,
                        |ns, w, p| super::caller(Kind::Service, &st.workloads, ns, w, p),
                    ),
                    workload_edges: stat::edge_rows(
                        Kind::Workload,
                        &a.readings,
                        &b.readings,
                        secs,
                        |ns, w, p| super::caller(Kind::Workload, &st.workloads, ns, w, p),
                    ),
                }
            }
            _ => Window::default(),
        };
        s.replicas = replicas;
    }

    /// The current window (empty until two readings exist).
    pub fn window(&self) -> Window {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .window
            .clone()
    }

    /// The history's points, oldest first.
    pub fn points(&self) -> Vec<Point> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.points.iter().cloned().collect()
    }

    pub fn running(&self) -> bool {
        self.running.load(Relaxed)
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
