//! `dashboards/`: the Grafana dashboards and the Prometheus alert rules, checked with the real
//! `promtool` (Debian package `prometheus`, which `scripts/test` installs): the rules pass
//! `promtool check rules` and their unit tests (`alerts_test.yaml`, each alert shown firing and
//! not firing); every dashboard has Grafana's shape and every query in it parses as PromQL; and
//! every metric and label name they use is one the proxies export (checked against a running
//! proxy's `/metrics`), so renaming one breaks this. The workload dashboard's TCP panels are
//! also evaluated against a real Prometheus scraping a mesh that carries TCP.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const DASHBOARDS: [&str; 3] = ["mesh.json", "service.json", "workload.json"];

/// The metrics the proxies export (Istio's standard ones and weft's own) that dashboards and
/// alerts may use.
const METRICS: &[&str] = &[
    "istio_requests_total",
    "istio_request_messages_total",
    "istio_response_messages_total",
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
    "istio_tcp_connections_opened_total",
    "istio_tcp_connections_closed_total",
    "weft_config_version",
    "weft_cert_expiration_timestamp_seconds",
    "weft_retries_total",
    "weft_tls_handshake_failures_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
];

/// Istio's distributions, exported as Prometheus histograms (`_bucket`, `_sum`, `_count`).
const HISTOGRAMS: &[&str] = &[
    "istio_request_duration_milliseconds",
    "istio_request_bytes",
    "istio_response_bytes",
];

/// Istio's standard labels, weft's own (`weft_tls_handshake_failures_total{direction,reason}`),
/// the histogram bucket label and the labels Prometheus gives every scraped series.
const LABELS: &[&str] = &[
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
    "direction",
    "reason",
    "le",
    "job",
    "instance",
];

/// The guide's alerts: name, severity, and a piece of the expression that pins its threshold.
const ALERTS: [(&str, &str, &[&str]); 4] = [
    (
        "WeftServiceHighErrorRate",
        "critical",
        &["response_code=~\"5..\"", "> 0.05"],
    ),
    (
        "WeftServiceLowSuccessRate",
        "critical",
        &["response_code!~\"5..\"", "< 0.95"],
    ),
    (
        "WeftServiceHighLatency",
        "warning",
        &["histogram_quantile(0.95", "> 1000"],
    ),
    (
        "WeftProxyHighCpu",
        "warning",
        &["process_cpu_seconds_total", "> 0.8"],
    ),
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboards")
}

fn read(name: &str) -> String {
    let path = dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `promtool` from PATH; never skipped: a missing one fails with what to install.
fn promtool() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool is not on PATH: install the Debian package `prometheus` \
                 (apt-get install -y --no-install-recommends prometheus); scripts/test does this"
            )
        })
}

/// Runs `promtool ARGS` in `dashboards/`; panics with its output unless it succeeds.
fn run_promtool(args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir())
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

// ---------------------------------------------------------------------------------------------
// A PromQL scanner: enough of the lexical grammar to tell metric names from functions, keywords
// and label names. Syntax itself is promtool's job.

#[derive(Debug, Default)]
struct Scan {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
    /// Contents of every `[...]` (range or subquery).
    ranges: Vec<String>,
    /// Functions and aggregations called.
    calls: BTreeSet<String>,
    /// Label lists of `by`/`without`/`on`/`ignoring`/`group_left`/`group_right`.
    groupings: Vec<Vec<String>>,
}

const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// Aggregation operators, which may be followed by `by (...)` before their parenthesis.
const AGGREGATIONS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// The index just past the string literal opening at `i`.
fn skip_string(b: &[u8], mut i: usize) -> usize {
    let quote = b[i];
    i += 1;
    while i < b.len() && b[i] != quote {
        if b[i] == b'\\' && quote != b'`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The index of the `close` matching the opener at `i`, skipping string literals.
fn closing(b: &[u8], mut i: usize, close: u8) -> usize {
    i += 1;
    while i < b.len() && b[i] != close {
        if matches!(b[i], b'"' | b'\'' | b'`') {
            i = skip_string(b, i);
        } else {
            i += 1;
        }
    }
    assert!(i < b.len(), "unclosed {:?}", close as char);
    i
}

fn scan(expr: &str) -> Scan {
    let b = expr.as_bytes();
    let mut s = Scan::default();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            i = skip_string(b, i);
        } else if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'{' {
            let end = closing(b, i, b'}');
            let mut j = i + 1;
            while j < end {
                if matches!(b[j], b'"' | b'\'' | b'`') {
                    j = skip_string(b, j);
                } else if is_ident_start(b[j]) {
                    let start = j;
                    while j < end && is_ident(b[j]) {
                        j += 1;
                    }
                    s.labels.insert(expr[start..j].to_string());
                } else {
                    j += 1;
                }
            }
            i = end + 1;
        } else if c == b'[' {
            let end = closing(b, i, b']');
            s.ranges.push(expr[i + 1..end].trim().to_string());
            i = end + 1;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            // Numbers and durations (`0.95`, `5m`, `1e3`).
            while i < b.len() && (is_ident(b[i]) || b[i] == b'.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let mut next = i;
            while next < b.len() && b[next].is_ascii_whitespace() {
                next += 1;
            }
            let paren = b.get(next) == Some(&b'(');
            if GROUPING.contains(&word) {
                if paren {
                    let end = closing(b, next, b')');
                    let list: Vec<String> = expr[next + 1..end]
                        .split(',')
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect();
                    s.labels.extend(list.iter().cloned());
                    s.groupings.push(list);
                    i = end + 1;
                }
            } else if KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
            } else if paren || AGGREGATIONS.contains(&word) {
                s.calls.insert(word.to_string());
            } else {
                s.metrics.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    s
}

/// Problems with the metric and label names `s` uses, each prefixed with `context`.
fn name_problems(context: &str, s: &Scan) -> Vec<String> {
    let mut problems = Vec::new();
    for m in &s.metrics {
        let histogram = HISTOGRAMS.iter().any(|h| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| m.strip_suffix(suffix) == Some(h))
        });
        if !METRICS.contains(&m.as_str()) && !histogram {
            problems.push(format!(
                "{context}: metric {m} is not one the proxies export"
            ));
        }
    }
    for l in &s.labels {
        if l == "__name__" || !LABELS.contains(&l.as_str()) {
            problems.push(format!(
                "{context}: label {l} is not one the proxies export"
            ));
        }
    }
    problems
}

#[test]
fn the_scanner_tells_metrics_from_functions_keywords_and_labels() {
    let s = scan(
        "histogram_quantile(0.95, sum by (le, destination_service) (rate(x_bucket{reporter=~\"$r\", a!=\"{b}\"}[5m] offset 1m)))\n\
         / on (instance) group_left(job) y > bool 0.5 or vector(0) and z unless Inf",
    );
    let set = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(s.metrics, set(&["x_bucket", "y", "z"]));
    assert_eq!(
        s.labels,
        set(&[
            "a",
            "destination_service",
            "instance",
            "job",
            "le",
            "reporter"
        ])
    );
    assert_eq!(
        s.calls,
        set(&["histogram_quantile", "rate", "sum", "vector"])
    );
    assert_eq!(s.ranges, vec!["5m"]);
    assert_eq!(s.groupings.len(), 3);
    assert_eq!(
        name_problems("t", &s).len(),
        4,
        "{:?}",
        name_problems("t", &s)
    );
    assert!(name_problems(
        "t",
        &scan("sum by (le) (rate(istio_request_bytes_bucket[1m]))")
    )
    .is_empty());
}

// ---------------------------------------------------------------------------------------------
// Alerts.

#[derive(Debug, Default)]
struct Alert {
    name: String,
    expr: String,
    for_: Option<String>,
    severity: Option<String>,
    summary: bool,
    description: bool,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The alerting rules of `alerts.yaml`, read line by line (the file keeps to one layout: `expr`
/// a block scalar or one line).
fn alerts() -> Vec<Alert> {
    let text = read("alerts.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let mut alerts: Vec<Alert> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        i += 1;
        if let Some(name) = t.strip_prefix("- alert:") {
            alerts.push(Alert {
                name: name.trim().to_string(),
                ..Alert::default()
            });
            continue;
        }
        let Some(alert) = alerts.last_mut() else {
            continue;
        };
        if let Some(value) = t.strip_prefix("expr:") {
            let value = value.trim();
            if value.starts_with('|') || value.starts_with('>') {
                let mut block = Vec::new();
                while i < lines.len()
                    && (lines[i].trim().is_empty() || indent(lines[i]) > indent(line))
                {
                    block.push(lines[i].trim());
                    i += 1;
                }
                alert.expr = block.join("\n");
            } else {
                alert.expr = value.trim_matches(|c| c == '"' || c == '\'').to_string();
            }
        } else if let Some(value) = t.strip_prefix("for:") {
            alert.for_ = Some(value.trim().to_string());
        } else if let Some(value) = t.strip_prefix("severity:") {
            alert.severity = Some(value.trim().to_string());
        } else if t.starts_with("summary:") {
            alert.summary = true;
        } else if t.starts_with("description:") {
            alert.description = true;
        }
    }
    alerts
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let out = run_promtool(&["check", "rules", "alerts.yaml"]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{out}"
    );
    let out = run_promtool(&["test", "rules", "alerts_test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_are_the_guides_four_and_their_tests_show_both_sides() {
    let alerts = alerts();
    let names: Vec<&str> = alerts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ALERTS.map(|(n, _, _)| n), "alerts.yaml");
    for (alert, (_, severity, pins)) in alerts.iter().zip(ALERTS) {
        assert_eq!(alert.severity.as_deref(), Some(severity), "{}", alert.name);
        assert!(alert.for_.is_some(), "{} has no `for:`", alert.name);
        assert!(
            alert.summary && alert.description,
            "{} lacks summary or description",
            alert.name
        );
        for pin in pins {
            assert!(
                alert.expr.contains(pin),
                "{}: expr lacks {pin:?}:\n{}",
                alert.name,
                alert.expr
            );
        }
    }

    // In alerts_test.yaml every alert has a case where it fires and one where it does not.
    let text = read("alerts_test.yaml");
    assert!(
        text.contains("- alerts.yaml"),
        "alerts_test.yaml must load alerts.yaml"
    );
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut cases: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("alertname:") else {
            continue;
        };
        let Some(exp) = lines[i + 1..]
            .iter()
            .position(|l| l.starts_with("exp_alerts:"))
        else {
            panic!("alerts_test.yaml: case for {name} without exp_alerts");
        };
        let exp = i + 1 + exp;
        let entry = cases.entry(name.trim()).or_default();
        if lines[exp] == "exp_alerts: []" {
            entry.1 += 1;
        } else if lines
            .get(exp + 1)
            .is_some_and(|l| l.starts_with("- exp_labels:"))
        {
            entry.0 += 1;
        }
    }
    for (name, _, _) in ALERTS {
        let (firing, silent) = cases.get(name).copied().unwrap_or_default();
        assert!(
            firing > 0 && silent > 0,
            "alerts_test.yaml: {name} has {firing} firing and {silent} not-firing cases; it needs both"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Dashboards.

fn dashboard(name: &str) -> Value {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

fn variables(d: &Value) -> &Vec<Value> {
    d["templating"]["list"].as_array().expect("templating.list")
}

/// A query variable's query: a string, or the object newer Grafana writes.
fn variable_query(v: &Value) -> &str {
    v["query"]
        .as_str()
        .or_else(|| v["query"]["query"].as_str())
        .unwrap_or_default()
}

/// A PromQL expression of a dashboard.
struct Query {
    /// Where it is, for messages.
    what: String,
    expr: String,
    /// A panel's target (else a variable's).
    panel: bool,
}

/// Every PromQL expression in a dashboard: panel targets, and the variables'
/// `label_values(SELECTOR, LABEL)` as `count by (LABEL) (SELECTOR)`.
fn queries(name: &str, d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            out.push(Query {
                what: format!("{name}: panel {} target {}", p["title"], t["refId"]),
                expr: expr.to_string(),
                panel: true,
            });
        }
    }
    for v in variables(d).iter().filter(|v| v["type"] == "query") {
        let q = variable_query(v);
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!("{name}: variable {}: not label_values(...): {q}", v["name"])
            });
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(SELECTOR, LABEL)");
        let what = format!("{name}: variable {}", v["name"]);
        out.push(Query {
            what,
            expr: format!("count by ({}) ({})", label.trim(), selector.trim()),
            panel: false,
        });
    }
    out
}

/// `expr` with Grafana's variables replaced by concrete values, or the unknown variable.
fn substitute(expr: &str, defined: &BTreeSet<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or("unclosed ${")?;
            let name = braced[..end].split(':').next().unwrap_or_default();
            (name, end + 2)
        } else {
            let end = after
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = match name {
            "__rate_interval" => "5m",
            "__interval" => "1m",
            "__range" => "1h",
            _ if defined.contains(name) => "x",
            _ => return Err(format!("${name} is not a variable of the dashboard")),
        };
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

#[test]
fn dashboards_have_grafanas_shape() {
    let mut uids = BTreeSet::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        let title = d["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "{name}: no title");
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty() && uid.len() <= 40, "{name}: uid {uid:?}");
        assert!(uids.insert(uid.to_string()), "{name}: uid {uid} used twice");
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{name}: schemaVersion"
        );

        // Variables: the data source, then label_values(...) queries on it.
        let vars = variables(&d);
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .expect("a datasource variable");
        assert_eq!(ds["type"], "datasource", "{name}");
        assert_eq!(ds["query"], "prometheus", "{name}");
        let expected: &[&str] = match name {
            "mesh.json" => &["namespace"],
            "service.json" => &["namespace", "service"],
            _ => &["namespace", "workload"],
        };
        for want in expected {
            let v = vars
                .iter()
                .find(|v| v["name"] == *want)
                .unwrap_or_else(|| panic!("{name}: no ${want}"));
            assert_eq!(v["type"], "query", "{name}: ${want}");
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}: ${want}");
            assert!(
                variable_query(v).starts_with("label_values("),
                "{name}: ${want}"
            );
        }

        let mut ids = BTreeSet::new();
        let all = panels(&d);
        assert!(
            all.iter().filter(|p| p["type"] != "row").count() >= 6,
            "{name}: too few panels"
        );
        for p in all {
            let what = format!("{name}: panel {}", p["title"]);
            assert!(
                p["title"].as_str().is_some_and(|t| !t.is_empty()),
                "{what}: no title"
            );
            assert!(p["type"].is_string(), "{what}: no type");
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "{what}: id used twice"
            );
            let g = &p["gridPos"];
            let (x, w) = (g["x"].as_u64().unwrap_or(99), g["w"].as_u64().unwrap_or(99));
            assert!(
                x + w <= 24 && g["h"].as_u64().is_some() && g["y"].as_u64().is_some(),
                "{what}: gridPos {g}"
            );
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{what}");
            let targets = p["targets"].as_array().filter(|t| !t.is_empty());
            let targets = targets.unwrap_or_else(|| panic!("{what}: no targets"));
            let mut refs = BTreeSet::new();
            for t in targets {
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                    "{what}: target without expr"
                );
                assert!(
                    refs.insert(t["refId"].as_str().expect("refId")),
                    "{what}: refId used twice"
                );
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{what}");
            }
        }
    }
}

#[test]
fn dashboard_queries_are_valid_promql_computed_as_istio_does() {
    // One recording rule per query, Grafana's variables made concrete, checked by promtool.
    let mut yaml = String::from("groups:\n");
    let mut count = 0;
    let mut names = Vec::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        let defined: BTreeSet<String> = variables(&d)
            .iter()
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect();
        yaml.push_str(&format!(
            "  - name: {}\n    rules:\n",
            serde_json::to_string(name).unwrap()
        ));
        let mut seen = BTreeSet::new();
        for Query { what, expr, panel } in queries(name, &d) {
            let concrete = substitute(&expr, &defined).unwrap_or_else(|e| panic!("{what}: {e}"));
            let record = format!("dashboard:{}:q{count}", name.trim_end_matches(".json"));
            yaml.push_str(&format!(
                "      - record: {record}\n        expr: {}\n",
                serde_json::to_string(&concrete).unwrap()
            ));
            names.push(format!("{record}  {what}"));
            count += 1;
            seen.insert(expr.clone());

            // Istio's way: rates over Grafana's $__rate_interval; quantiles from summed buckets
            // keeping `le`.
            if !panel {
                continue;
            }
            let s = scan(&expr);
            for r in &s.ranges {
                assert_eq!(r, "$__rate_interval", "{what}: range [{r}]:\n{expr}");
            }
            if s.calls.contains("histogram_quantile") {
                assert!(
                    s.metrics.iter().all(|m| m.ends_with("_bucket")),
                    "{what}:\n{expr}"
                );
                assert!(
                    s.calls.contains("rate"),
                    "{what}: quantile of buckets without rate:\n{expr}"
                );
                assert!(
                    s.groupings.iter().any(|g| g.iter().any(|l| l == "le")),
                    "{what}: buckets summed without `le`:\n{expr}"
                );
            }
        }
        assert!(
            seen.len() >= 10,
            "{name}: only {} distinct queries",
            seen.len()
        );
    }
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), &yaml).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(file.path())
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(&format!("SUCCESS: {count} rules found")),
        "promtool check rules on the dashboards' queries:\n{text}\nrules:\n{}",
        names.join("\n")
    );
}

#[test]
fn dashboards_cover_what_each_is_for() {
    let required: [(&str, &[&str]); 3] = [
        (
            "mesh.json",
            &[
                "istio_requests_total",
                "istio_request_duration_milliseconds_bucket",
                "connection_security_policy=\"mutual_tls\"",
                "response_code=~\"4..\"",
                "response_code=~\"5..\"",
                "response_code!~\"5..\"",
            ],
        ),
        (
            "service.json",
            &[
                "destination_service=~\"$service\"",
                "istio_request_bytes_bucket",
                "istio_response_bytes_bucket",
                "by (source_workload",
                "response_flags",
                "response_code!~\"5..\"",
            ],
        ),
        (
            "workload.json",
            &[
                "destination_workload=~\"$workload\"",
                "source_workload=~\"$workload\"",
                "by (reporter)",
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "weft_cert_expiration_timestamp_seconds",
                "weft_config_version",
                "istio_tcp_sent_bytes_total",
                "istio_tcp_received_bytes_total",
            ],
        ),
    ];
    for (name, wants) in required {
        let d = dashboard(name);
        let all: String = queries(name, &d)
            .into_iter()
            .map(|q| q.expr + "\n")
            .collect();
        for want in wants {
            assert!(all.contains(want), "{name}: no query uses {want}");
        }
        for q in ["0.50", "0.95", "0.99"] {
            assert!(
                all.contains(&format!("histogram_quantile({q}")),
                "{name}: no p{q} quantile"
            );
        }
        if name == "mesh.json" {
            assert!(
                panels(&d).iter().any(|p| p["type"] == "table"),
                "mesh.json: no services table"
            );
        }
    }
}

#[test]
fn dashboards_and_alerts_use_only_the_exported_metric_and_label_names() {
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for name in DASHBOARDS {
        let d = dashboard(name);
        for Query { what, expr, .. } in queries(name, &d) {
            let s = scan(&expr);
            used.extend(s.metrics.iter().cloned());
            problems.extend(name_problems(&what, &s));
        }
        // Labels named in legends must be labels too.
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let legend = t["legendFormat"].as_str().unwrap_or_default();
                for piece in legend.split("{{").skip(1) {
                    let label = piece.split("}}").next().unwrap_or_default().trim();
                    if !LABELS.contains(&label) {
                        problems.push(format!(
                            "{name}: panel {}: legend label {label}",
                            p["title"]
                        ));
                    }
                }
            }
        }
    }
    for alert in alerts() {
        let s = scan(&alert.expr);
        used.extend(s.metrics.iter().cloned());
        problems.extend(name_problems(&format!("alerts.yaml: {}", alert.name), &s));
    }
    for line in read("alerts_test.yaml").lines() {
        if let Some(series) = line.trim().strip_prefix("- series:") {
            let series = series.trim().trim_matches(|c| c == '\'' || c == '"');
            problems.extend(name_problems("alerts_test.yaml", &scan(series)));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The scanner found the names (an empty set would pass vacuously).
    for m in [
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "process_cpu_seconds_total",
    ] {
        assert!(
            used.contains(m),
            "{m} not found in the dashboards and alerts: {used:?}"
        );
    }
}

/// The names above are not a list to trust: a running proxy exports every metric family of
/// [`METRICS`] and [`HISTOGRAMS`] (its `/metrics` declares each with `# TYPE`, counters without
/// their `_total` suffix, as OpenMetrics writes them), and after one request through the mesh
/// its samples carry every label of [`LABELS`] except the ones Prometheus adds (`job`,
/// `instance`) and `reason`, which only a refused handshake writes (the security tests see it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_name_is_exported_by_a_running_proxy() {
    let mesh = Mesh::up(&mesh_yaml("dash-names", &[("a", 1, ""), ("b", 1, "")]));
    let c = client();
    let r = get(&c, mesh.ingress, "a", "/fetch?url=http://b/x")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text);
    let mut declared = BTreeMap::<String, String>::new();
    let mut labels = BTreeSet::<String>::new();
    for w in mesh.status["workloads"].as_array().unwrap() {
        let admin = w["admin"].as_str().unwrap().parse().unwrap();
        let text = get(&c, admin, "admin", "/metrics").await.unwrap().text;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                let (name, kind) = (it.next().unwrap(), it.next().unwrap());
                declared.insert(name.to_string(), kind.to_string());
            } else if let Some((_, rest)) = line.split_once('{') {
                let inside = rest.rsplit_once('}').map_or(rest, |(l, _)| l);
                for pair in inside.split("\",") {
                    if let Some((k, _)) = pair.split_once("=\"") {
                        labels.insert(k.trim_start_matches(',').to_string());
                    }
                }
            }
        }
    }
    let mut missing = Vec::new();
    for m in METRICS {
        let family = m.strip_suffix("_total").unwrap_or(m);
        if !declared.contains_key(family) {
            missing.push(format!("metric {m}"));
        }
    }
    for h in HISTOGRAMS {
        if declared.get(*h).map(String::as_str) != Some("histogram") {
            missing.push(format!("histogram {h} ({:?})", declared.get(*h)));
        }
    }
    for l in LABELS {
        if !["job", "instance", "reason"].contains(l) && !labels.contains(*l) {
            missing.push(format!("label {l}"));
        }
    }
    assert!(
        missing.is_empty(),
        "not exported: {missing:?}\ndeclared: {declared:?}\nlabels: {labels:?}"
    );
}

/// The workload dashboard's TCP panels return data from a real Prometheus scraping a mesh that
/// carries TCP: an echo service declared `protocol: tcp`, reached through `CONNECT` on a client
/// workload's outbound listener a connection at a time for a few seconds. Each panel's query,
/// with `$namespace` the mesh's namespace and `$workload` any workload, is evaluated as Grafana
/// would and must give a non-zero rate (the closed-connections series is drawn negated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_dashboards_tcp_panels_return_data() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let yaml = mesh_yaml("dash-tcp", &[("client", 1, ""), ("raw", 1, "")]).replace(
        "  - name: raw\n    port: 80\n",
        "  - name: raw\n    port: 80\n    protocol: tcp\n",
    );
    assert!(yaml.contains("protocol: tcp"), "{yaml}");
    let mesh = Mesh::up_with(
        &yaml,
        &["--prometheus", "127.0.0.1:0", "--scrape-interval", "1s"],
    );
    let prometheus: std::net::SocketAddr = mesh.status["prometheus"]
        .as_str()
        .and_then(|u| u.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no prometheus: {}", mesh.status))
        .parse()
        .unwrap();
    let outbound: std::net::SocketAddr = workload(&mesh.status, "client-v1-0")["outbound"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // One tunnel every 200 ms for 6 s (bounded): CONNECT, an HTTP request over the raw bytes,
    // the echo's answer, close.
    let load = tokio::spawn(async move {
        for _ in 0..30 {
            let mut s = tokio::net::TcpStream::connect(outbound).await.unwrap();
            s.write_all(b"CONNECT raw:80 HTTP/1.1\r\nHost: raw:80\r\n\r\nGET /tcp HTTP/1.1\r\nHost: raw\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.unwrap();
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.starts_with("HTTP/1.1 200") && text.contains("\"path\":\"/tcp\""),
                "{text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });

    let d = dashboard("workload.json");
    let tcp: Vec<Query> = queries("workload.json", &d)
        .into_iter()
        .filter(|q| q.panel && q.expr.contains("istio_tcp_"))
        .collect();
    assert_eq!(tcp.len(), 6, "the workload dashboard's TCP panels");
    let c = client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for q in &tcp {
        let expr = q
            .expr
            .replace("$__rate_interval", "1m")
            .replace("$namespace", "default")
            .replace("$workload", ".+");
        let negated = expr.starts_with('-');
        loop {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("query", &expr);
            let r = get(
                &c,
                prometheus,
                "prometheus",
                &format!("/api/v1/query?{}", form.finish()),
            )
            .await
            .unwrap();
            assert_eq!(r.body["status"], "success", "{}: {}", q.what, r.text);
            let values: Vec<f64> = r.body["data"]["result"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                .collect();
            let data = values
                .iter()
                .any(|v| if negated { *v < 0.0 } else { *v > 0.0 });
            if data {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}: no data from {expr}: {}",
                q.what,
                r.text
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    load.await.unwrap();
}
