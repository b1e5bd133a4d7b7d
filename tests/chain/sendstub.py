"""A tiny JSON-RPC front for Anvil on 127.0.0.1 that answers HTTP 500 to eth_sendRawTransaction while `failing` is
set, passing everything else through: a send endpoint that is down for a while."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class SendStub:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.failing = threading.Event()
        self.refused = 0      # sends answered with HTTP 500
        self.passed = 0       # sends passed to the node
        self.url = ""


@contextmanager
def send_stub(upstream: str) -> Iterator[SendStub]:
    stub = SendStub(upstream)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            methods = [r.get("method") for r in (lambda p: p if isinstance(p, list) else [p])(json.loads(body))]
            if "eth_sendRawTransaction" in methods and stub.failing.is_set():
                stub.refused += 1
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"internal error")
                return
            stub.passed += "eth_sendRawTransaction" in methods
            request = urllib.request.Request(upstream, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                payload = answer.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
