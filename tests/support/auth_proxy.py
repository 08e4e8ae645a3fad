"""A reverse proxy in front of a real Flink REST port that requires HTTP Basic auth.

Flink's REST API has no authentication of its own; clusters that need it sit behind a proxy
like this one. It listens on 127.0.0.1 only, forwards every request of a client that sent
the right ``Authorization`` (without that header) to the real port, answers 401 to any
other, and counts both. ``mode`` turns it into servers that are not Flink at all: an HTML
page with 200 (``"html"``), an empty 200 (``"empty"``), an HTML 404 (``"notfound"``).
"""

from __future__ import annotations

import base64
import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HTML = b"<!doctype html>\n<html><head><title>Welcome</title></head>\n<body><h1>It works</h1>\n" \
       b"<p>This is a web server, not Flink.</p></body></html>\n"
_HOP = {"host", "authorization", "connection", "keep-alive", "transfer-encoding",
        "content-length", "proxy-authorization", "te", "trailer", "upgrade"}


class AuthProxy:
    """Basic-auth proxy of ``127.0.0.1:upstream`` (see the module docstring)."""

    def __init__(self, upstream: int, user: str, password: str, mode: str = "proxy"):
        self.upstream = upstream
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.mode = mode
        self.forwarded = 0
        self.refused = 0
        self.seen_paths: list[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline().strip():  # trailers
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _answer(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                with proxy._lock:
                    proxy.seen_paths.append(f"{self.command} {self.path}")
                if proxy.mode == "html":
                    return self._answer(200, HTML, [("Content-Type", "text/html")])
                if proxy.mode == "empty":
                    return self._answer(200, b"", [])
                if proxy.mode == "notfound":
                    return self._answer(404, HTML, [("Content-Type", "text/html")])
                if self.headers.get("Authorization") != proxy.expected:
                    with proxy._lock:
                        proxy.refused += 1
                    return self._answer(401, b'{"errors": ["authentication required"]}',
                                        [("Content-Type", "application/json"),
                                         ("WWW-Authenticate", 'Basic realm="flink"')])
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    out = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP]
                finally:
                    conn.close()
                with proxy._lock:
                    proxy.forwarded += 1
                self._answer(response.status, data, out)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's URL, without credentials."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> AuthProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
