//! `weft top SERVICE`: the busiest paths of a service, live: method, path, count, success rate
//! and p50/p99 latency, sorted by count and redrawn every second (ratatui). It reads the same
//! `/tap` streams as `weft tap`. When stdout is not a terminal, or with `--once`, it collects for
//! `--duration` (default 5s) and prints the table once as text.
//!
//! Memory is bounded: at most [`MAX_ROWS`] (method, path) rows (the rest count under
//! `(other paths)`), each with a latency sketch of at most a thousand-odd buckets (1% error).

use super::runtime;
use super::tap::{Item, TapEvent, TapFilter, Taps};
use super::text::{columns, ms};
use ::stat::Sketch;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Distinct (method, path) rows kept; further paths count in one `(other paths)` row.
pub const MAX_ROWS: usize = 1000;
const OTHER: &str = "(other paths)";
/// How long `--once` (or a non-terminal stdout) collects by default.
const ONCE_DEFAULT: Duration = Duration::from_secs(5);
const REFRESH: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
pub struct TopArgs {
    /// The service (NAME, NAME.NAMESPACE or the FQDN)
    service: String,
    #[command(flatten)]
    filter: TapFilter,
    /// How long to watch [default: until q, or 5s with --once or when stdout is not a terminal]
    #[arg(long, value_parser = super::parse_duration)]
    duration: Option<Duration>,
    /// Collect for --duration and print the table once, as text
    #[arg(long)]
    once: bool,
    /// Which mesh (when several run)
    #[arg(long)]
    mesh: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct PathStats {
    count: u64,
    ok: u64,
    latency: Sketch,
}

/// A row of the view.
#[derive(Clone, Debug, PartialEq)]
pub struct TopRow {
    pub method: String,
    pub path: String,
    pub count: u64,
    pub success_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What the streams have shown so far.
#[derive(Debug, Default)]
pub struct Board {
    rows: HashMap<(String, String), PathStats>,
    pub events: u64,
    pub lost: u64,
    pub notes: Vec<String>,
}

impl Board {
    pub fn add(&mut self, e: &TapEvent) {
        // The path without its query: `/items?id=1` and `/items?id=2` are one path.
        let path = e.path.split(['?', '#']).next().unwrap_or("");
        let mut key = (e.method.clone(), path.to_string());
        if !self.rows.contains_key(&key) && self.rows.len() >= MAX_ROWS {
            key = ("*".to_string(), OTHER.to_string());
        }
        let s = self.rows.entry(key).or_default();
        s.count += 1;
        s.ok += u64::from(!e.failed());
        s.latency.add(e.latency_ms);
        self.events += 1;
    }

    pub fn take(&mut self, item: Item) {
        match item {
            Item::Event(e, _) => self.add(&e),
            Item::Lost { n, .. } => self.lost += n,
            Item::Failed { instance, error } => {
                if self.notes.len() < 8 {
                    self.notes.push(format!("{instance}: {error}"));
                }
            }
        }
    }

    /// Rows by count (busiest first), then method and path.
    pub fn rows(&self) -> Vec<TopRow> {
        let mut v: Vec<TopRow> = self
            .rows
            .iter()
            .map(|((method, path), s)| TopRow {
                method: method.clone(),
                path: path.clone(),
                count: s.count,
                success_rate: s.ok as f64 / s.count.max(1) as f64,
                p50_ms: s.latency.quantile(0.5).unwrap_or(0.0),
                p99_ms: s.latency.quantile(0.99).unwrap_or(0.0),
            })
            .collect();
        v.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.path.cmp(&b.path))
                .then_with(|| a.method.cmp(&b.method))
        });
        v
    }
}

const HEADER: [&str; 6] = ["METHOD", "PATH", "COUNT", "SUCCESS", "P50", "P99"];

fn cells(r: &TopRow) -> [String; 6] {
    [
        r.method.clone(),
        r.path.clone(),
        r.count.to_string(),
        format!("{:.2}%", r.success_rate * 100.0),
        ms(r.p50_ms),
        ms(r.p99_ms),
    ]
}

/// The table as text (`--once`).
pub fn text(rows: &[TopRow]) -> String {
    let all: Vec<[String; 6]> = std::iter::once(HEADER.map(String::from))
        .chain(rows.iter().map(cells))
        .collect();
    columns(&all)
}

fn scope(taps: &Taps, filter: &TapFilter) -> String {
    match &filter.to {
        Some(to) => format!("requests {} sends to {to}", taps.service),
        None => format!("requests {} receives", taps.service),
    }
}

pub fn run(a: TopArgs) -> anyhow::Result<i32> {
    let live_view = !a.once && std::io::stdout().is_terminal();
    let rt = runtime()?;
    let taps = rt.block_on(Taps::resolve(a.mesh.as_deref(), &a.service, &a.filter))?;
    let board = Arc::new(Mutex::new(Board::default()));
    let duration = match (a.duration, live_view) {
        (Some(d), _) => d,
        (None, false) => ONCE_DEFAULT,
        // Until q: a year stands for "no end".
        (None, true) => Duration::from_secs(365 * 86_400),
    };
    let started = Instant::now();
    let until = tokio::time::Instant::now() + duration;
    let stop = tokio_util::sync::CancellationToken::new();
    let (mut rx, set) = {
        let _rt = rt.enter();
        taps.spawn(until)
    };
    let collector = {
        let (board, stop) = (board.clone(), stop.clone());
        rt.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => return,
                    _ = stop.cancelled() => return,
                    item = rx.recv() => match item {
                        Some(item) => board.lock().unwrap_or_else(|p| p.into_inner()).take(item),
                        None => return,
                    },
                }
            }
        })
    };
    if !live_view {
        rt.spawn(super::on_signal(stop.clone()));
        let _ = rt.block_on(collector);
        drop(set);
        let b = board.lock().unwrap_or_else(|p| p.into_inner());
        for n in &b.notes {
            eprintln!("weft top: {n}");
        }
        if b.lost > 0 {
            eprintln!("weft top: {} events lost (the reader fell behind)", b.lost);
        }
        println!(
            "{} over {:.1}s from {} proxies: {} requests",
            scope(&taps, &a.filter),
            started.elapsed().as_secs_f64(),
            taps.proxies(),
            b.events
        );
        print!("{}", text(&b.rows()));
        return Ok(0);
    }
    let res = ui(&taps, &a.filter, &board, started, duration, &stop);
    stop.cancel();
    drop(set);
    res.map(|()| 0)
}

/// Puts the terminal back however the view ends (return, error, panic).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn ui(
    taps: &Taps,
    filter: &TapFilter,
    board: &Mutex<Board>,
    started: Instant,
    duration: Duration,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    use ratatui::layout::{Constraint, Layout};
    use ratatui::style::{Modifier, Style};
    use ratatui::text::Line;
    use ratatui::widgets::{Block, Row, Table};

    let mut terminal = ratatui::try_init()?;
    let _restore = Restore;
    let title = format!(
        " weft top: {} from {} proxies · q to quit ",
        scope(taps, filter),
        taps.proxies()
    );
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        if now.duration_since(started) >= duration || stop.is_cancelled() {
            return Ok(());
        }
        if now >= next {
            let (rows, events, lost, notes) = {
                let b = board.lock().unwrap_or_else(|p| p.into_inner());
                (b.rows(), b.events, b.lost, b.notes.clone())
            };
            let secs = started.elapsed().as_secs_f64();
            terminal.draw(|f| {
                let [top, main] =
                    Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(f.area());
                let mut status = format!(
                    "{events} requests in {secs:.0}s ({:.1}/s)",
                    events as f64 / secs.max(1e-3)
                );
                if lost > 0 {
                    status.push_str(&format!(" · {lost} lost"));
                }
                if let Some(n) = notes.last() {
                    status.push_str(&format!(" · {n}"));
                }
                f.render_widget(Line::from(status), top);
                let body = rows.iter().map(|r| Row::new(cells(r)));
                let widths = [
                    Constraint::Length(8),
                    Constraint::Fill(1),
                    Constraint::Length(9),
                    Constraint::Length(9),
                    Constraint::Length(9),
                    Constraint::Length(9),
                ];
                let table = Table::new(body, widths)
                    .header(Row::new(HEADER).style(Style::new().add_modifier(Modifier::BOLD)))
                    .block(Block::bordered().title(title.as_str()));
                f.render_widget(table, main);
            })?;
            next = now + REFRESH;
        }
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press => {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(());
                    }
                }
                Event::Resize(..) => next = Instant::now(),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(method: &str, path: &str, status: u16, ms: f64) -> TapEvent {
        TapEvent {
            method: method.into(),
            path: path.into(),
            status,
            latency_ms: ms,
            ..TapEvent::default()
        }
    }

    /// A gRPC call answered 200 with a status but OK (in its headers or trailers) fails, as
    /// Istio's metrics and `weft stat` count it.
    #[test]
    fn grpc_calls_fail_by_their_status() {
        let mut b = Board::default();
        for status in [0, 14, 0, 4] {
            b.add(&TapEvent {
                grpc_status: Some(status),
                ..ev("POST", "/echo.Echo/Say", 200, 1.0)
            });
        }
        assert_eq!(b.rows()[0].success_rate, 0.5);
    }

    #[test]
    fn board_groups_paths_sorts_by_count_and_stays_bounded() {
        let mut b = Board::default();
        for _ in 0..3 {
            b.add(&ev("GET", "/a?x=1", 200, 1.0));
        }
        b.add(&ev("GET", "/a?x=2", 500, 3.0));
        b.add(&ev("POST", "/b", 200, 2.0));
        b.add(&ev("GET", "/b", 200, 2.0));
        b.add(&ev("GET", "/b", 503, 2.0));
        b.take(Item::Lost {
            instance: "p".into(),
            n: 4,
        });
        let rows = b.rows();
        let keys: Vec<(&str, &str, u64)> = rows
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str(), r.count))
            .collect();
        assert_eq!(
            keys,
            vec![("GET", "/a", 4), ("GET", "/b", 2), ("POST", "/b", 1)]
        );
        assert_eq!(rows[0].success_rate, 0.75);
        assert!((rows[0].p99_ms - 3.0).abs() < 0.06);
        assert!((rows[0].p50_ms - 1.0).abs() < 0.02);
        assert_eq!((b.events, b.lost), (7, 4));
        for i in 0..MAX_ROWS + 50 {
            b.add(&ev("GET", &format!("/p{i}"), 200, 1.0));
        }
        assert!(b.rows.len() <= MAX_ROWS + 1);
        assert!(b.rows().iter().any(|r| r.path == OTHER && r.count >= 50));
        let mine: Vec<TopRow> = b.rows().into_iter().filter(|r| r.path.len() == 2).collect();
        let t = text(&mine);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("METHOD  PATH"), "{t}");
        assert!(
            lines[1].contains("/a") && lines[1].contains("75.00%"),
            "{t}"
        );
    }
}
