"""A small Chrome DevTools Protocol driver for the browser tests: starts the installed Chromium
headless (no download), opens one page, and lets a test navigate, click, type, wait for what
the page shows and take a screenshot. Needs the `websockets` package (scripts/test installs it).

Every wait is bounded: a condition not met in time raises with what the page showed.
"""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

from websockets.sync.client import connect


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no chromium on PATH (Debian package `chromium`; scripts/test installs it)")


class Browser:
    """Chromium with one page, driven over its DevTools WebSocket."""

    def __init__(self, width=1100, height=900, timeout=30.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="weft-chromium-")
        args = [
            find_chromium(),
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--no-proxy-server",  # the mesh's ingress is on loopback; no proxy in between
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Chromium writes the port it chose to DevToolsActivePort once it listens.
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while not os.path.exists(port_file) or os.path.getsize(port_file) == 0:
            if self.proc.poll() is not None:
                raise RuntimeError("chromium exited: " + self.proc.stderr.read().decode(errors="replace")[-2000:])
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        with open(port_file) as f:
            port = int(f.readline().strip())
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=10)
        self.next_id = 0
        self.send("Page.enable")
        self.send("Runtime.enable")

    def send(self, method, **params):
        """Sends one command and returns its result (events in between are skipped)."""
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{method}: no answer in {self.timeout}s")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression):
        """The value of a JavaScript expression in the page."""
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def goto(self, url):
        self.send("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'", what=f"loading {url}")

    def wait_for(self, condition, what=None, timeout=None):
        """Polls `condition` (JavaScript) until it is true; raises with the page's text if not."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                if self.eval(f"Boolean({condition})"):
                    return
            except RuntimeError:
                pass  # mid-navigation: the context is being replaced
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or condition}: not true after {timeout or self.timeout}s; "
                                   f"the page at {self.location()} shows: {self.text()[:1500]!r}")
            time.sleep(0.1)

    def location(self):
        try:
            return self.eval("location.href")
        except RuntimeError:
            return "?"

    def text(self):
        try:
            return self.eval("document.body ? document.body.innerText : ''") or ""
        except RuntimeError:
            return ""

    def click(self, selector):
        self.wait_for(f"document.querySelector({json.dumps(selector)})", what=f"{selector} on the page")
        self.eval(f"document.querySelector({json.dumps(selector)}).click()")

    def type(self, selector, value):
        self.wait_for(f"document.querySelector({json.dumps(selector)})", what=f"{selector} on the page")
        self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus(); e.value = {json.dumps(value)}; }})()")

    def inner_text(self, selector):
        return self.eval(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText")

    def press(self, key, code, key_code):
        """Presses and releases one key in the focused element, as a keyboard would."""
        for kind in ("keyDown", "keyUp"):
            params = {"type": kind, "key": key, "code": code, "windowsVirtualKeyCode": key_code}
            if kind == "keyDown" and key == "Enter":
                params["text"] = "\r"
            self.send("Input.dispatchKeyEvent", **params)

    def screenshot(self, path):
        r = self.send("Page.captureScreenshot", format="png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
