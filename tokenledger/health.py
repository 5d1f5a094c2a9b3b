"""``/healthz``, ``/readyz`` and ``/metrics`` for every long-running process, on one port.

* ``/healthz`` (liveness): 200 while no registered liveness check fails; a supervisor
  restarts the process on 503 (e.g. the sink thread of the billing service died).
* ``/readyz`` (readiness): 200 once every readiness check passes (a worker has finished its
  changelog recovery, the store answers); 503 with the reasons otherwise.
* ``/metrics``: the Prometheus registry.

Checks return ``None`` when fine, else a short reason.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tokenledger.metrics import REGISTRY

Check = Callable[[], str | None]


class Health:
    """Named liveness and readiness checks of one process."""

    def __init__(self) -> None:
        self.live: dict[str, Check] = {}
        self.ready: dict[str, Check] = {}

    def report(self, checks: dict[str, Check]) -> tuple[bool, dict[str, str]]:
        """Whether every check passes, and the failing ones' reasons (a check that raises fails)."""
        failing: dict[str, str] = {}
        for name, check in list(checks.items()):
            try:
                reason = check()
            except Exception as exc:  # a broken check must say so, not take the endpoint down
                reason = f"check failed: {exc}"
            if reason is not None:
                failing[name] = reason
        return not failing, failing


HEALTH = Health()


def answer(path: str, health: Health = HEALTH) -> tuple[HTTPStatus, bytes, str] | None:
    """The response to a health or metrics path, or ``None`` for any other path."""
    if path == "/metrics":
        return HTTPStatus.OK, generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    if path in ("/healthz", "/readyz"):
        ok, failing = health.report(health.live if path == "/healthz" else health.ready)
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        body = orjson.dumps({"status": "ok" if ok else "failing", "failing": failing})
        return status, body, "application/json"
    return None


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        got = answer(self.path.split("?", 1)[0])
        status, body, ctype = got or (HTTPStatus.NOT_FOUND, b'{"error":"not found"}', "application/json")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(port: int, addr: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serve health and metrics on a daemon thread (``port=0``: any free port)."""
    httpd = ThreadingHTTPServer((addr, port), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="health", daemon=True).start()
    return httpd
