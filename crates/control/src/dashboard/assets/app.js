// weft's dashboard: one page per hash route, each reading the control plane's
// /dashboard/api/* JSON on a timer. The DOM is built with text nodes only (nothing from the
// mesh is ever parsed as HTML).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const main = document.getElementById("main");
let timer = null;
let charts = [];

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function s(tag, attrs, ...kids) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) e.setAttribute(k, String(v));
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

async function api(path, opts) {
  const r = await fetch("api/" + path, Object.assign({ credentials: "same-origin", cache: "no-store" }, opts || {}));
  if (r.status === 401 || r.status === 403) {
    throw new Error("not signed in: open the URL `weft dashboard` prints");
  }
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

const fmt = {
  rps: (v) => (v === null || v === undefined ? "–" : v >= 100 ? v.toFixed(0) : v.toFixed(1)),
  pct: (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(v >= 0.9995 ? 0 : 2) + "%"),
  ms: (v) => (v === null || v === undefined ? "–" : v >= 100 ? v.toFixed(0) + " ms" : v.toFixed(1) + " ms"),
  time: (ms) => new Date(ms).toLocaleTimeString(),
};

function healthText(hv) {
  return { healthy: "● healthy", degraded: "▲ degraded", failing: "✖ failing", idle: "○ idle" }[hv] || hv;
}

function setPage(name) {
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function every(ms, fn) {
  let stopped = false;
  const run = async () => {
    if (stopped) return;
    try {
      await fn();
      const err = document.getElementById("load-error");
      if (err) err.remove();
    } catch (e) {
      if (!document.getElementById("load-error")) {
        main.prepend(h("p", { id: "load-error", class: "error", role: "alert" }, String(e.message || e)));
      }
    }
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return () => { stopped = true; clearTimeout(timer); };
}

let stop = () => {};

function route() {
  stop();
  for (const c of charts) c.destroy();
  charts = [];
  main.replaceChildren();
  const parts = (location.hash || "#/graph").slice(2).split("/").map(decodeURIComponent);
  const page = parts[0] || "graph";
  setPage(page === "service" ? "services" : page);
  const pages = { graph, services, service, tap, config, identities, canaries };
  stop = (pages[page] || graph)(...parts.slice(1));
}

function header(o) {
  const m = document.getElementById("mesh");
  m.textContent = `mesh ${o.mesh} · ${o.ready ? "ready" : "not ready"} · window ${o.window_s ? o.window_s.toFixed(0) + " s" : "starting…"}`;
  const p = document.getElementById("problems");
  p.hidden = !o.problems;
  p.textContent = `${o.problems} configuration problem${o.problems === 1 ? "" : "s"}`;
}

// ---- graph ----------------------------------------------------------------------------

function layout(nodes, edges) {
  const depth = Object.fromEntries(nodes.map((n) => [n.id, 0]));
  const linked = new Set();
  for (const e of edges) { linked.add(e.src); linked.add(e.dst); }
  // Longest path from the callers (bounded: a cycle stops growing after |nodes| rounds).
  for (let i = 0; i < nodes.length; i++) {
    let changed = false;
    for (const e of edges) {
      if (e.src === e.dst) continue;
      const d = depth[e.src] + 1;
      if (d > depth[e.dst] && d < nodes.length) { depth[e.dst] = d; changed = true; }
    }
    if (!changed) break;
  }
  const maxDepth = Math.max(0, ...nodes.filter((n) => linked.has(n.id)).map((n) => depth[n.id]));
  const cols = [];
  for (const n of nodes) {
    const c = linked.has(n.id) ? depth[n.id] : maxDepth + 1; // idle services: their own column
    (cols[c] = cols[c] || []).push(n);
  }
  const W = 230, H = 78, GX = 170, GY = 40, PAD = 20;
  const pos = {};
  let height = 0;
  cols.forEach((col, c) => {
    (col || []).sort((a, b) => a.id.localeCompare(b.id)).forEach((n, r) => {
      pos[n.id] = { x: PAD + c * (W + GX), y: PAD + r * (H + GY), w: W, h: H };
      height = Math.max(height, PAD + r * (H + GY) + H + PAD);
    });
  });
  return { pos, width: PAD * 2 + cols.length * (W + GX) - GX, height };
}

function drawGraph(o) {
  const { pos, width, height } = layout(o.nodes, o.edges);
  const svg = s("svg", { id: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `service graph: ${o.nodes.length} nodes, ${o.edges.length} edges` });
  svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#6b7280" }))));
  const edgeLayer = s("g", { class: "edges" });
  const labelLayer = s("g", { class: "labels" });
  for (const e of o.edges) {
    const a = pos[e.src], b = pos[e.dst];
    if (!a || !b) continue;
    let d, lx, ly;
    if (e.src === e.dst) {
      const x = a.x + a.w, y = a.y + 20;
      d = `M ${x} ${y} c 40 -30 40 50 0 ${a.h - 40}`;
      lx = x + 30; ly = y + 10;
    } else if (b.x > a.x) {
      const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2, mx = (x1 + x2) / 2;
      d = `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
      lx = mx; ly = (y1 + y2) / 2;
    } else {
      const x1 = a.x + a.w / 2, y1 = a.y + a.h, x2 = b.x + b.w / 2, y2 = b.y + b.h, dip = Math.max(y1, y2) + 40;
      d = `M ${x1} ${y1} C ${x1} ${dip}, ${x2} ${dip}, ${x2} ${y2}`;
      lx = (x1 + x2) / 2; ly = dip - 10;
    }
    const lock = e.mtls ? "✓ mTLS" : e.mtls_share ? `⚠ ${fmt.pct(e.mtls_share)} mTLS` : "⚠ plaintext";
    const line1 = `${fmt.rps(e.rps)} rps · ${fmt.pct(e.success_rate)}`;
    const line2 = `p99 ${fmt.ms(e.p99_ms)} · ${lock}`;
    const label = `${line1} · ${line2}`;
    const g = s("g", { class: `edge health-${e.health}`, "data-src": e.src, "data-dst": e.dst,
      "data-src-principal": e.src_principal, "data-dst-principal": e.dst_principal,
      "data-mtls": e.mtls, "data-rps": e.rps.toFixed(3), "data-success": e.success_rate ?? "", "data-p99": e.p99_ms ?? "" },
      s("title", {}, `${e.src_principal} → ${e.dst_principal}: ${label} (${healthText(e.health)})`),
      s("path", { d, "marker-end": "url(#arrow)" }));
    edgeLayer.append(g);
    const tw = Math.max(line1.length, line2.length) * 6.3 + 10;
    labelLayer.append(s("g", { class: `edge-label edge health-${e.health}`, "data-src": e.src, "data-dst": e.dst },
      s("g", { class: "label" }, s("rect", { x: lx - tw / 2, y: ly - 17, width: tw, height: 32, rx: 3 }),
        s("text", { x: lx, y: ly - 4, "text-anchor": "middle", class: "edge-text" }, line1),
        s("text", { x: lx, y: ly + 10, "text-anchor": "middle", class: "edge-text" }, line2))));
  }
  svg.append(edgeLayer);
  for (const n of o.nodes) {
    const p = pos[n.id];
    const replica = n.kind === "service" || n.kind === "workload";
    const stats = replica
      ? `${fmt.rps(n.rps)} rps · ${fmt.pct(n.success_rate)} · p99 ${fmt.ms(n.p99_ms)}`
      : `calls ${fmt.rps(n.rps)} rps · ${fmt.pct(n.success_rate)}`;
    const sub = n.kind === "service" ? `${n.ready}/${n.replicas} ready · ${n.workloads.join(", ")}`
      : n.kind === "workload" ? `${n.ready}/${n.replicas} ready · service ${n.service}`
      : n.kind === "outside" ? "callers without a mesh identity" : n.kind === "gateway" ? "ingress gateway" : `mesh client, ${n.namespace}`;
    const g = s("g", { class: `node health-${n.health}`, "data-id": n.id, "data-kind": n.kind, "data-rps": n.rps.toFixed(3),
      "data-health": n.health, transform: `translate(${p.x},${p.y})` },
      s("title", {}, `${n.id} (${n.principal || "no identity"}): ${stats}; ${healthText(n.health)}`),
      s("rect", { width: p.w, height: p.h, rx: 6 }),
      s("text", { x: 10, y: 20, class: "name" }, replica ? `${n.name}.${n.namespace}` : n.name),
      s("text", { x: 10, y: 38, class: "stats" }, stats),
      s("text", { x: 10, y: 55, class: "stats" }, sub.length > 34 ? sub.slice(0, 33) + "…" : sub),
      s("text", { x: 10, y: 71, class: "htext" }, healthText(n.health)));
    if (replica) {
      const link = s("a", { href: `#/service/${encodeURIComponent(n.namespace)}/${encodeURIComponent(n.service)}`,
        "aria-label": `${n.name}.${n.namespace}: ${stats}, ${healthText(n.health)}` }, g);
      svg.append(link);
    } else {
      g.setAttribute("tabindex", "0");
      svg.append(g);
    }
  }
  svg.append(labelLayer);
  return svg;
}

function graph(by) {
  by = by === "workload" ? "workload" : "service";
  const wrap = h("div", { id: "graph-wrap" });
  const toggle = h("div", { role: "group", "aria-label": "nodes per" }, "Nodes per ",
    ...["service", "workload"].map((k) => h("a", { href: `#/graph/${k}`, "aria-current": k === by ? "true" : null, class: "toggle" }, k === by ? `[${k}]` : k)), " ");
  main.append(h("h1", {}, by === "service" ? "Service graph" : "Workload graph"), toggle,
    h("p", { class: "note", id: "graph-note" }, "Reading the proxies…"),
    h("div", { class: "legend" },
      h("span", {}, "Node and edge: requests/s · success rate · p99 over the window"),
      h("span", {}, "● healthy ≥ 99% · ▲ degraded ≥ 95% · ✖ failing · ○ idle"),
      h("span", {}, "✓ mTLS: every request mutual TLS · ⚠ plaintext")),
    wrap, h("h2", {}, "Edges"), h("div", { id: "edge-table" }));
  return every(2000, async () => {
    const o = await api(`overview?by=${by}`);
    header(o);
    document.getElementById("graph-note").textContent = o.window_s
      ? `Over the last ${o.window_s.toFixed(1)} s. ${o.edges.length} edges carried traffic.`
      : "Reading the proxies… (numbers appear after the second reading, in 2 s)";
    wrap.replaceChildren(drawGraph(o));
    const rows = o.edges.map((e) => h("tr", { "data-src-principal": e.src_principal, "data-dst-principal": e.dst_principal },
      h("td", {}, e.src), h("td", {}, e.dst), h("td", { class: "mono" }, `${e.src_principal} → ${e.dst_principal}`),
      h("td", { class: "num" }, fmt.rps(e.rps)), h("td", { class: "num" }, fmt.pct(e.success_rate)),
      h("td", { class: "num" }, fmt.ms(e.p99_ms)), h("td", {}, e.mtls ? "yes" : "no"),
      h("td", { class: `health health-${e.health}` }, healthText(e.health))));
    document.getElementById("edge-table").replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "From"), h("th", {}, "To"), h("th", {}, "Identities"), h("th", { class: "num" }, "RPS"),
        h("th", { class: "num" }, "Success"), h("th", { class: "num" }, "p99"), h("th", {}, "mTLS"), h("th", {}, "Health"))),
      h("tbody", {}, rows)));
  });
}

// ---- services -------------------------------------------------------------------------

function services() {
  main.append(h("h1", {}, "Services"), h("div", { id: "svc-table" }));
  return every(2000, async () => {
    const o = await api("overview");
    header(o);
    const rows = o.nodes.filter((n) => n.kind === "service").map((n) => h("tr", { "data-id": n.id },
      h("td", {}, h("a", { href: `#/service/${encodeURIComponent(n.namespace)}/${encodeURIComponent(n.name)}` }, `${n.name}.${n.namespace}`)),
      h("td", {}, n.workloads.join(", ")), h("td", { class: "num" }, `${n.ready}/${n.replicas}`),
      h("td", { class: "num" }, fmt.rps(n.rps)), h("td", { class: "num" }, fmt.pct(n.success_rate)),
      h("td", { class: "num" }, fmt.ms(n.p99_ms)), h("td", { class: `health health-${n.health}` }, healthText(n.health))));
    document.getElementById("svc-table").replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, ...["Service", "Workloads", "Ready", "RPS", "Success", "p99", "Health"].map((t, i) => h("th", { class: i > 1 && i < 6 ? "num" : null }, t)))),
      h("tbody", {}, rows)));
  });
}

const PALETTE = ["#2457c5", "#d97706", "#15803d", "#9333ea", "#be123c", "#0e7490"];

function chart(el, title, t, series, unit) {
  const opts = {
    title, width: Math.max(380, el.clientWidth - 10), height: 220,
    scales: { x: { time: true }, y: unit === "%" ? { range: (u, lo, hi) => [Math.max(0, Math.min(lo ?? 100, 95) - 1), 100.5] } : {} },
    axes: [{}, { values: (u, vals) => vals.map((v) => (v === null ? "" : unit === "%" ? v.toFixed(1) + "%" : v + (unit ? " " + unit : ""))) , size: 60 }],
    series: [{}].concat(series.map((sr, i) => ({ label: sr.label, stroke: sr.color || PALETTE[i % PALETTE.length], width: 2, dash: sr.dash, spanGaps: false }))),
  };
  const data = [t].concat(series.map((sr) => sr.data));
  const u = new uPlot(opts, data, el);
  charts.push(u);
  return u;
}

function service(ns, name) {
  const head = h("h1", {}, `${name}.${ns}`);
  const summary = h("div", { id: "svc-summary", class: "card" }, "Reading the proxies…");
  const chartBox = h("div", { class: "charts" }, h("div", { id: "c-rps" }), h("div", { id: "c-success" }), h("div", { id: "c-latency" }));
  const routes = h("pre", { id: "svc-routes" });
  const resources = h("div", { id: "svc-resources" });
  const replicas = h("div", { id: "svc-replicas" });
  const edges = h("div", { id: "svc-edges" });
  main.append(head, summary, h("h2", {}, "Over the last minutes, per version"), chartBox,
    h("h2", {}, "Callers and callees"), edges, h("h2", {}, "Routes in force"), routes,
    h("h2", {}, "Resources about it"), resources, h("h2", {}, "Replicas"), replicas);
  let drawn = 0;
  return every(2000, async () => {
    const d = await api(`service?namespace=${encodeURIComponent(ns)}&name=${encodeURIComponent(name)}`);
    const r = d.row;
    summary.replaceChildren(
      h("div", {}, "Over the last ", h("span", { id: "svc-window" }, d.window_s ? d.window_s.toFixed(1) : "–"), " s: ",
        h("strong", { id: "svc-rps", "data-rps": r ? r.rps : "" }, r ? fmt.rps(r.rps) : "–"), " requests/s, success ",
        h("strong", { id: "svc-success" }, r ? fmt.pct(r.success_rate) : "–"), ", latency p50 / p95 / p99 ",
        h("strong", { id: "svc-latency" }, r && r.latency_ms ? `${fmt.ms(r.latency_ms.p50)} / ${fmt.ms(r.latency_ms.p95)} / ${fmt.ms(r.latency_ms.p99)}` : "–"),
        r && r.mtls_share !== null ? `, ${fmt.pct(r.mtls_share)} mTLS` : "",
        d.prometheus ? h("span", {}, " · ", h("a", { href: d.prometheus }, "in Prometheus")) : ""),
      h("table", { id: "svc-versions" },
        h("thead", {}, h("tr", {}, ...["Version (workload)", "Ready", "RPS", "Success", "p50", "p95", "p99"].map((t, i) => h("th", { class: i ? "num" : null }, t)))),
        h("tbody", {}, d.workloads.map((w) => h("tr", { "data-workload": w.name },
          h("td", {}, w.name), h("td", { class: "num" }, w.replicas), h("td", { class: "num" }, fmt.rps(w.rps)),
          h("td", { class: "num" }, fmt.pct(w.success_rate)),
          ...["p50", "p95", "p99"].map((q) => h("td", { class: "num" }, fmt.ms(w.latency_ms ? w.latency_ms[q] : null))))))));
    routes.textContent = d.routes;
    resources.replaceChildren(d.resources.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ...["Kind", "Resource", "File", "State", "Errors and warnings"].map((t) => h("th", {}, t)))),
        h("tbody", {}, d.resources.map((r) => h("tr", { "data-state": r.state },
          h("td", {}, r.kind), h("td", {}, `${r.namespace}/${r.name}`), h("td", { class: "mono" }, `${r.file}:${r.first_line}`),
          h("td", { class: `state-${r.state}` }, r.state === "rejected" ? "✖ rejected" : r.state === "ignored" ? "▲ ignored" : "✓ " + r.state),
          h("td", {}, (r.reasons || []).map((x) => h("div", { class: "error mono" }, x)), (r.warnings || []).map((x) => h("div", { class: "mono" }, "warning: " + x)))))))
      : h("p", { class: "note" }, "No resource names this service."));
    replicas.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, ...["Replica", "Workload", "State", "Identity", "Admin"].map((t) => h("th", {}, t)))),
      h("tbody", {}, d.replicas.map((w) => h("tr", {}, h("td", {}, w.instance), h("td", {}, w.workload),
        h("td", { class: w.ready ? "health health-healthy" : "health health-failing" }, w.ready ? "● ready" : `✖ ${w.state} ${w.reason}`),
        h("td", { class: "mono" }, w.identity), h("td", { class: "mono" }, w.admin))))));
    edges.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, ...["From", "To", "RPS", "Success", "p99", "mTLS"].map((t) => h("th", {}, t)))),
      h("tbody", {}, d.edges.map((e) => h("tr", {}, h("td", { class: "mono" }, e.src), h("td", { class: "mono" }, `${e.dst_namespace}/${e.dst_name}`),
        h("td", { class: "num" }, fmt.rps(e.rps)), h("td", { class: "num" }, fmt.pct(e.success_rate)),
        h("td", { class: "num" }, fmt.ms(e.latency_ms ? e.latency_ms.p99 : null)), h("td", {}, e.mtls_share === 1 ? "yes" : fmt.pct(e.mtls_share)))))));
    // Charts: redrawn when a point was added.
    if (d.t.length !== drawn) {
      drawn = d.t.length;
      for (const c of charts) c.destroy();
      charts = [];
      const names = Object.keys(d.series).filter((k) => !k.startsWith("service "));
      const svc = d.series[`service ${name}`] || {};
      const mk = (key, scale) => names.map((n) => ({ label: n, data: d.series[n][key].map((v) => (v === null ? null : v * scale)) }));
      for (const id of ["c-rps", "c-success", "c-latency"]) document.getElementById(id).replaceChildren();
      chart(document.getElementById("c-rps"), "Requests/s", d.t, mk("rps", 1), "");
      chart(document.getElementById("c-success"), "Success rate", d.t, mk("success_rate", 100), "%");
      const lat = [];
      names.forEach((n, i) => {
        for (const [q, dash] of [["p50_ms", [2, 3]], ["p95_ms", [6, 3]], ["p99_ms", null]]) {
          lat.push({ label: `${n} ${q.slice(0, 3)}`, data: d.series[n][q], color: PALETTE[i % PALETTE.length], dash });
        }
      });
      if (!names.length && svc.p99_ms) lat.push({ label: "p99", data: svc.p99_ms });
      chart(document.getElementById("c-latency"), "Latency (ms)", d.t, lat, "ms");
    }
  });
}

// ---- tap ------------------------------------------------------------------------------

function tap() {
  const f = {};
  const field = (key, label, el) => { f[key] = el; return h("label", {}, label, el); };
  const method = h("select", { id: "tap-method" }, ["", "GET", "POST", "PUT", "DELETE", "PATCH"].map((m) => h("option", { value: m }, m || "any")));
  const paused = h("button", { id: "tap-pause", type: "button", "aria-pressed": "false" }, "Pause");
  const body = h("tbody", { id: "tap-rows" });
  const status = h("p", { class: "note", id: "tap-status", "aria-live": "polite" }, "Opening the proxies' taps…");
  main.append(h("h1", {}, "Live tap"),
    h("div", { class: "filters", role: "search" },
      field("src", "From (identity or workload)", h("input", { id: "tap-src", type: "search" })),
      field("dst", "To (service or identity)", h("input", { id: "tap-dst", type: "search" })),
      field("path", "Path starts with", h("input", { id: "tap-path", type: "search" })),
      field("method", "Method", method),
      field("status", "Status", h("select", { id: "tap-status-filter" }, ["", "2xx", "3xx", "4xx", "5xx"].map((m) => h("option", { value: m }, m || "any")))),
      field("direction", "Seen by", h("select", { id: "tap-direction" }, [["", "either"], ["outbound", "the caller's proxy"], ["inbound", "the callee's proxy"]].map(([v, t]) => h("option", { value: v }, t)))),
      paused),
    status,
    h("table", {}, h("thead", {}, h("tr", {}, ...["Time", "Seen by", "From", "To", "Request", "Status", "Latency", "Flags", "mTLS"].map((t) => h("th", {}, t)))), body));
  paused.addEventListener("click", () => {
    const p = paused.getAttribute("aria-pressed") !== "true";
    paused.setAttribute("aria-pressed", String(p));
    paused.textContent = p ? "Resume" : "Pause";
  });
  let after = 0;
  const wants = (e) => {
    const v = (k) => (f[k].value || "").trim();
    const has = (x, sub) => !sub || (x || "").includes(sub);
    const st = v("status");
    return has(`${e.src_identity} ${e.src_workload}`, v("src")) && has(`${e.dst_service} ${e.dst_identity} ${e.authority}`, v("dst")) &&
      (!v("path") || e.path.startsWith(v("path"))) && (!v("method") || e.method === v("method")) &&
      (!st || String(e.status)[0] === st[0]) && (!v("direction") || e.direction === v("direction"));
  };
  return every(500, async () => {
    const p = await api(`tap?after=${after}`);
    after = p.next;
    const errs = Object.entries(p.errors).map(([k, v]) => `${k}: ${v}`);
    status.textContent = `Tapping ${p.proxies} proxies${p.lost ? `, ${p.lost} events dropped by proxies (too fast to show)` : ""}.` + (errs.length ? " Errors: " + errs.join("; ") : "");
    if (paused.getAttribute("aria-pressed") === "true") return;
    for (const e of p.events) {
      if (!wants(e)) continue;
      const ok = e.status < 500 && (e.grpc_status === null || e.grpc_status === undefined || e.grpc_status === 0);
      body.prepend(h("tr", { class: "tap-row", "data-ts": e.ts_ms, "data-src-identity": e.src_identity, "data-dst-identity": e.dst_identity },
        h("td", {}, fmt.time(e.ts_ms)), h("td", {}, e.direction),
        h("td", { class: "mono" }, e.src_identity || `${e.src_workload || "?"} (no identity)`),
        h("td", { class: "mono" }, e.dst_identity || e.dst_service),
        h("td", { class: "mono" }, `${e.method} ${e.authority}${e.path}`),
        h("td", { class: ok ? "health health-healthy" : "health health-failing" }, `${ok ? "✓" : "✖"} ${e.status}${e.grpc_status ? " grpc " + e.grpc_status : ""}`),
        h("td", { class: "num" }, fmt.ms(e.latency_ms)), h("td", {}, e.flags), h("td", {}, e.mtls ? "yes" : "no")));
    }
    while (body.children.length > 200) body.lastChild.remove();
  });
}

// ---- configuration ----------------------------------------------------------------------

function config() {
  main.append(h("h1", {}, "Configuration"), h("div", { id: "cfg" }));
  return every(3000, async () => {
    const [c, o] = await Promise.all([api("config"), api("overview")]);
    header(o);
    const refused = c.refused.length
      ? h("div", { id: "refused" }, c.refused.map((r) => h("div", { class: "card refused" },
          h("div", {}, h("span", { class: "error" }, "✖ refused "), `${fmt.time(r.at_ms)} · ${r.file}`),
          h("pre", { class: "error-text" }, r.error))))
      : h("p", { class: "note" }, "No change was refused since the control plane started.");
    const res = h("table", { id: "resources" },
      h("thead", {}, h("tr", {}, ...["Kind", "Resource", "File", "State", "Errors and warnings"].map((t) => h("th", {}, t)))),
      h("tbody", {}, c.resources.map((r) => h("tr", { "data-state": r.state },
        h("td", {}, r.kind), h("td", {}, `${r.namespace}/${r.name}`), h("td", { class: "mono" }, `${r.file}:${r.first_line}`),
        h("td", { class: `state-${r.state}` }, r.state === "rejected" ? "✖ rejected" : r.state === "ignored" ? "▲ ignored" : "✓ " + r.state),
        h("td", {}, (r.reasons || []).map((x) => h("div", { class: "error mono" }, x)), (r.warnings || []).map((x) => h("div", { class: "mono" }, "warning: " + x)))))));
    const nacks = c.nacks.length
      ? h("ul", {}, c.nacks.map((n) => h("li", { class: "error" }, JSON.stringify(n))))
      : h("p", { class: "note" }, "Every proxy accepted the snapshot it was sent.");
    document.getElementById("cfg").replaceChildren(
      h("h2", {}, "Changes refused (weft apply / delete)"), refused,
      h("h2", {}, "Resources in force"), res,
      h("h2", {}, "Snapshots refused by proxies"), nacks,
      h("h2", {}, "Ingress gateway routes"), h("pre", {}, c.ingress_routes));
  });
}

// ---- identities -------------------------------------------------------------------------

function identities() {
  main.append(h("h1", {}, "Identities"), h("p", { class: "note" }, "The certificate each proxy holds, read from its admin /identity."), h("div", { id: "ids" }));
  return every(10000, async () => {
    const rows = await api("identities");
    document.getElementById("ids").replaceChildren(h("table", {},
      h("thead", {}, h("tr", {}, ...["Proxy", "Service", "Identity (SPIFFE)", "Expires", "Renews", "State"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.map((r) => {
        const left = r.expires_in_s;
        const state = r.error ? ["failing", "✖ " + r.error] : left === null ? ["idle", "–"] : left < 0 ? ["failing", "✖ expired"] : left < 3600 ? ["degraded", `▲ expires in ${Math.round(left / 60)} min`] : ["healthy", `● valid ${Math.round(left / 3600)} h more`];
        return h("tr", {}, h("td", {}, r.instance), h("td", {}, r.namespace ? `${r.service}.${r.namespace}` : r.service),
          h("td", { class: "mono" }, r.identity), h("td", {}, r.not_after), h("td", {}, r.renew_at),
          h("td", { class: `health health-${state[0]}` }, state[1]));
      }))));
  });
}

// ---- rollouts ---------------------------------------------------------------------------

function canaries() {
  main.append(h("h1", {}, "Rollouts"), h("div", { id: "rollouts" }));
  const act = async (c, action) => {
    await api(`canaries/${encodeURIComponent(c.namespace)}/${encodeURIComponent(c.name)}/${action}`,
      { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
  };
  return every(2000, async () => {
    const list = await api("canaries");
    const box = document.getElementById("rollouts");
    if (!list.length) {
      box.replaceChildren(h("p", { class: "note" }, "No rollout. Start one with `weft canary start SERVICE --from v1 --to v2`."));
      return;
    }
    box.replaceChildren(...list.map((c) => {
      const st = c.state || {};
      const last = st.last ? ` · last check: ${JSON.stringify(st.last)}` : "";
      return h("div", { class: "card canary", "data-name": c.name },
        h("h2", {}, `${c.name}.${c.namespace}: ${c.from} → ${c.to}`),
        h("div", {}, h("strong", {}, st.phase || "waiting to start"), ` · step ${st.step === null || st.step === undefined ? "–" : st.step + 1} of ${c.steps.length} · failed checks ${st.failed_checks || 0}/${c.thresholds.failed_checks}`),
        h("div", { "aria-label": `weights: ${c.from} ${c.weights.from}%, ${c.to} ${c.weights.to}%` },
          h("span", { class: "bar", style: `width:${c.weights.from * 3}px` }), ` ${c.from} ${c.weights.from}% `,
          h("span", { class: "bar to", style: `width:${c.weights.to * 3}px` }), ` ${c.to} ${c.weights.to}%`),
        h("p", {}, (st.message || "") + last),
        h("div", {}, ["pause", "resume", "promote", "abort"].map((a) => h("button", { type: "button", onclick: () => act(c, a).catch((e) => alert(e.message)) }, a))),
        h("details", {}, h("summary", {}, "History"), h("ul", {}, (st.history || []).map((e) => h("li", {}, JSON.stringify(e))))));
    }));
  });
}

window.addEventListener("hashchange", () => { route(); main.focus(); });
route();
