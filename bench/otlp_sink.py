"""An OTLP/HTTP endpoint that answers 200 to every export without decoding it.

Run as its own process (`python -m bench.otlp_sink PORT`), so what the exporters send costs
the benchmark's measuring process nothing. GET /stats answers the exports and bytes received,
which shows that tracing was really on during a measurement.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RECEIVED = {"exports": 0, "bytes": 0}
_lock = threading.Lock()


class SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a Collector

    def do_POST(self) -> None:
        length = remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        with _lock:
            RECEIVED["exports"] += 1
            RECEIVED["bytes"] += length - remaining
        # An empty ExportTraceServiceResponse serialises to zero bytes.
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        with _lock:
            body = json.dumps(RECEIVED).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def main() -> None:
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), SinkHandler)
    server.daemon_threads = True
    print(f"otlp sink on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
