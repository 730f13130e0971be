"""A real HTTP server on a free loopback port that records the POSTs it receives; the first ``fail_first``
answer 500, and with ``redirect_to`` every one answers 307 to that URL."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class CallbackReceiver:
    def __init__(self, fail_first: int = 0, redirect_to: str | None = None) -> None:
        self.fail_first = fail_first
        self.redirect_to = redirect_to
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    receiver.received.append({"path": self.path, "body": json.loads(body),
                                              "content_type": self.headers.get("content-type"),
                                              "host": self.headers.get("host")})
                    status = 500 if len(receiver.received) <= receiver.fail_first else 200
                if receiver.redirect_to is not None:
                    status = 307
                self.send_response(status)
                if receiver.redirect_to is not None:
                    self.send_header("location", receiver.redirect_to)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/done"

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
