"""A local HTTP server for download tests: routes map a path to a behaviour.

Imported by the test modules' fixtures (pytest only collects ``test_*.py``; this helper has no
tests of its own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    """How the server answers one path.

    Attributes:
        body: The bytes of the file.
        status: HTTP status code.
        send_bytes: How many bytes of ``body`` are actually sent before the connection closes
            (``None``: all of them). ``Content-Length`` always announces ``len(body)``.
        content_length: Whether to send ``Content-Length``.
        chunked: Send the body with chunked transfer encoding (cut short by ``send_bytes``).
        stall_after: Sleep this long after ``send_bytes`` bytes (simulates a hung transfer).
    """

    body: bytes = b""
    status: int = 200
    send_bytes: int | None = None
    content_length: bool = True
    chunked: bool = False
    stall_after: float = 0.0


class LocalServer:
    """Serves :class:`Route` objects on 127.0.0.1 and counts the requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return  # keep test output clean

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "not found")
                    return
                if route.status != 200:
                    self.send_error(route.status)
                    return
                payload = (
                    route.body[: route.send_bytes] if route.send_bytes is not None else route.body
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if route.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                elif route.content_length:
                    self.send_header("Content-Length", str(len(route.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if route.chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
                    if route.send_bytes is None:
                        self.wfile.write(b"0\r\n\r\n")
                else:
                    self.wfile.write(payload)
                self.wfile.flush()
                if route.stall_after:
                    time.sleep(route.stall_after)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def serve() -> Iterator[LocalServer]:
    """Run a :class:`LocalServer` in a thread for the duration of the block."""
    server = LocalServer()
    thread = threading.Thread(
        target=server.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(timeout=5)
