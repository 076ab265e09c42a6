"""An app that records the head of every request it gets (one JSON line each, appended to the
file named by its first argument) and answers 200. Listens on 127.0.0.1:$PORT, HTTP/1.1
keep-alive. The robustness tests read the file to tell whether a probe reached the app."""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = sys.argv[1]


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def record(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if "chunked" in (self.headers.get("transfer-encoding") or ""):
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        line = {"path": self.path, "headers": [[k, v] for k, v in self.headers.items()],
                "body": len(body)}
        with open(LOG, "a") as f:
            f.write(json.dumps(line) + "\n")
        self.send_response(200)
        self.send_header("content-length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    do_GET = do_POST = do_PUT = record

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Recorder).serve_forever()
