"""weft's dashboard in a real browser: signs in with the URL `weft dashboard` prints, reads
the service graph (every node and edge, with their numbers) from the SVG, opens a service's
page from the graph with the keyboard, reads its numbers and waits for its charts, watches
the graph by workload (both versions of a rollout in progress), the live tap until requests
with identities arrive, finds a refused change on the configuration page, and lists
identities and the rollout; screenshots each page. Prints one
JSON document with what each page showed.

    python3 dashboard.py URL SCREENSHOT_DIR NAMESPACE/SERVICE REFUSED_FILE ROLLOUT

ROLLOUT: NAMESPACE/SERVICE of a rollout in progress, whose two versions the graph by workload
shows.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import Browser  # noqa: E402


def main():
    url, shots, service, refused_file, rollout = sys.argv[1:6]
    os.makedirs(shots, exist_ok=True)
    seen = {}
    with Browser(width=1500, height=1000, timeout=60.0) as b:
        # The token in the URL is traded for a cookie and dropped from the address.
        b.send("Page.navigate", url=url)
        b.wait_for("location.pathname === '/dashboard/' && !location.search && document.querySelector('#graph')",
                   what="the graph page, signed in")
        seen["signed_in_url"] = b.location()
        # Numbers over a full window, and every edge drawn.
        b.wait_for("(document.querySelector('#graph-note') || {}).innerText.startsWith('Over the last') && "
                   "parseFloat(document.querySelector('#graph-note').innerText.slice(14)) >= 8 && "
                   "document.querySelectorAll('#graph g.edge[data-src-principal]').length >= 4",
                   what="a full window with the edges drawn")
        seen["graph"] = b.eval("""(() => ({
            note: document.querySelector('#graph-note').innerText,
            nodes: [...document.querySelectorAll('#graph g.node')].map(n => ({
                id: n.dataset.id, kind: n.dataset.kind, rps: parseFloat(n.dataset.rps),
                health: n.dataset.health, text: [...n.querySelectorAll('text')].map(t => t.textContent),
                link: n.parentElement.tagName === 'a' ? n.parentElement.getAttribute('href') : null })),
            edges: [...document.querySelectorAll('#graph g.edge[data-src-principal]')].map(e => ({
                src: e.dataset.src, dst: e.dataset.dst, src_principal: e.dataset.srcPrincipal,
                dst_principal: e.dataset.dstPrincipal, mtls: e.dataset.mtls === 'true',
                rps: parseFloat(e.dataset.rps), title: e.querySelector('title').textContent,
                label: [...document.querySelectorAll('#graph g.edge-label')].find(l =>
                    l.dataset.src === e.dataset.src && l.dataset.dst === e.dataset.dst).textContent })),
        }))()""")
        b.screenshot(os.path.join(shots, "dashboard-graph.png"))

        # Keyboard: focus the service's node (a link) and press Enter.
        ns, name = service.split("/")
        link = f"#graph a[href='#/service/{ns}/{name}']"
        b.wait_for(f"document.querySelector(\"{link}\")", what=f"{service}'s node as a link")
        b.eval(f"document.querySelector(\"{link}\").focus()")
        seen["focused"] = b.eval("document.activeElement.getAttribute('href')")
        b.press("Enter", "Enter", 13)
        b.wait_for(f"location.hash === '#/service/{ns}/{name}'", what="the service page, opened with Enter")
        b.wait_for("(document.querySelector('#svc-rps') || {dataset: {}}).dataset.rps && "
                   "parseFloat(document.querySelector('#svc-window').innerText) >= 8 && "
                   "document.querySelectorAll('.uplot').length === 3",
                   what="the service's numbers and its three charts")
        seen["service"] = b.eval("""(() => ({
            rps: parseFloat(document.querySelector('#svc-rps').dataset.rps),
            window_s: parseFloat(document.querySelector('#svc-window').innerText),
            at_ms: Date.now(),
            versions: [...document.querySelectorAll('#svc-versions tbody tr')].map(r => r.dataset.workload),
            routes: document.querySelector('#svc-routes').innerText,
            resources: [...document.querySelectorAll('#svc-resources tbody tr')].map(r => r.innerText),
            charts: [...document.querySelectorAll('.uplot .u-title')].map(t => t.textContent),
        }))()""")
        b.screenshot(os.path.join(shots, "dashboard-service.png"))

        # The graph by workload: both versions of the service being rolled out get traffic.
        b.eval("location.hash = '#/graph/workload'")
        b.wait_for(f"[...document.querySelectorAll('#graph g.edge[data-src-principal]')].filter(e => "
                   f"e.dataset.dst.startsWith({json.dumps(rollout + '-')})).length >= 2",
                   what=f"edges to both versions of {rollout}")
        seen["workload_graph"] = b.eval("""(() => ({
            title: document.querySelector('h1').innerText,
            nodes: [...document.querySelectorAll('#graph g.node')].map(n => n.dataset.id),
            edges: [...document.querySelectorAll('#graph g.edge[data-src-principal]')].map(e => [e.dataset.src, e.dataset.dst, parseFloat(e.dataset.rps)]),
        }))()""")
        b.screenshot(os.path.join(shots, "dashboard-workloads.png"))

        # Live tap: requests with identities, and how old the newest is when it shows.
        b.eval("location.hash = '#/tap'")
        opened = time.monotonic()
        b.wait_for("document.querySelector('.tap-row[data-src-identity^=\"spiffe://\"]')",
                   what="tapped requests with identities")
        seen["tap"] = b.eval("""(() => {
            const rows = [...document.querySelectorAll('.tap-row')];
            const newest = Math.max(...rows.map(r => +r.dataset.ts));
            return { rows: rows.length, lag_ms: Date.now() - newest,
                     identities: [...new Set(rows.map(r => r.dataset.srcIdentity + ' -> ' + r.dataset.dstIdentity))].slice(0, 20) };
        })()""")
        seen["tap"]["first_after_s"] = time.monotonic() - opened
        b.screenshot(os.path.join(shots, "dashboard-tap.png"))

        # The refused change, with its file and line.
        b.eval("location.hash = '#/config'")
        b.wait_for(f"[...document.querySelectorAll('#refused .refused')].some(r => r.innerText.includes({json.dumps(refused_file)}))",
                   what=f"the refused change from {refused_file}")
        seen["config"] = b.eval("""(() => ({
            refused: [...document.querySelectorAll('#refused .refused')].map(r => r.innerText),
            problems: document.querySelector('#problems').hidden ? null : document.querySelector('#problems').innerText,
            resources: document.querySelectorAll('#resources tbody tr').length }))()""")
        b.screenshot(os.path.join(shots, "dashboard-config.png"))

        b.eval("location.hash = '#/identities'")
        b.wait_for("[...document.querySelectorAll('#ids td')].some(td => td.innerText.startsWith('● valid'))",
                   what="the proxies' certificates")
        seen["identities"] = b.eval("[...document.querySelectorAll('#ids tbody tr')].map(r => [...r.cells].map(c => c.innerText))")
        b.screenshot(os.path.join(shots, "dashboard-identities.png"))

        b.eval("location.hash = '#/canaries'")
        b.wait_for(f"document.querySelector('#rollouts .canary[data-name={json.dumps(rollout.split('/')[1])}]')",
                   what=f"the rollout of {rollout}")
        seen["canaries"] = b.inner_text("#rollouts")
        b.screenshot(os.path.join(shots, "dashboard-rollouts.png"))
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
