"""Prometheus metrics through Ray Serve's metrics API: they are exported by Ray's metrics agent on every
node (``ray start --metrics-export-port``), beside Ray's own ``ray_serve_*`` metrics, each name with
Ray's ``ray_`` prefix (``ray_lineguard_requests_total``...).

The ingress counts requests, errors, latency and decisions per line and says which version serves each
line; the Recorder sets the drift and anomaly-rate gauges. Metric objects are made inside the replica
(``IngressMetrics()``/``RecorderMetrics()``), never at import, so the controller and tests import freely.
"""

from __future__ import annotations

import re
import time
from collections.abc import MutableMapping
from typing import Any

from ray.serve import metrics

LATENCY_BOUNDARIES_MS = [1.0, 2.0, 5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 1e3, 2.5e3, 5e3, 1e4]
DRIFT_LEVEL = {"insufficient_data": -1, "ok": 0, "warning": 1, "drift": 2}
_LINE_PATH = re.compile(r"^/v1/lines/([^/]+)/(predict(?:/batch)?)$")
_DEFAULT_ROUTES = {"/predict": "predict", "/anomaly": "anomaly"}

LINE = "line"  # where a route leaves the line a request turned out to be for, in the request's state


def _keys(*names: str) -> Any:
    """Tag keys (Ray's hint says a 1-tuple; any tuple of names works)."""
    return names


class IngressMetrics:
    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "lineguard_requests",
            "scoring requests by line, route and HTTP status",
            tag_keys=_keys("line", "route", "status"),
        )
        self.errors = metrics.Counter(
            "lineguard_errors", "scoring requests answered with a 4xx or 5xx", tag_keys=_keys("line", "route", "status")
        )
        self.latency = metrics.Histogram(
            "lineguard_request_latency_ms",
            "scoring request latency in the ingress, milliseconds",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=_keys("line", "route"),
        )
        self.predictions = metrics.Counter(
            "lineguard_predictions",
            "parts scored, by decision (ok / ng or the class)",
            tag_keys=_keys("line", "decision"),
        )
        self.anomalies = metrics.Counter(
            "lineguard_anomalies", "parts flagged (ng or a defect class)", tag_keys=_keys("line")
        )
        self.model_info = metrics.Gauge(
            "lineguard_model_info", "1 for the version that serves a line", tag_keys=_keys("line", "version", "kind")
        )
        self.history_dropped = metrics.Counter("lineguard_history_dropped", "history rows dropped: outbox full")
        self.history_queued = metrics.Gauge("lineguard_history_queued", "history rows waiting for the Recorder")
        self._versions: dict[str, str] = {}

    def served(self, line: str, version: str, kind: str) -> None:
        previous = self._versions.get(line)
        if previous == version:
            return
        if previous is not None:
            self.model_info.set(0, {"line": line, "version": previous, "kind": kind})
        self.model_info.set(1, {"line": line, "version": version, "kind": kind})
        self._versions[line] = version

    def decided(self, line: str, decisions: dict[str, int], flagged: int) -> None:
        for decision, count in decisions.items():
            self.predictions.inc(count, {"line": line, "decision": decision})
        if flagged:
            self.anomalies.inc(flagged, {"line": line})


class RecorderMetrics:
    def __init__(self) -> None:
        self.written = metrics.Counter(
            "lineguard_history_written", "prediction rows in committed writes (a re-sent batch counts again)"
        )
        self.rejected = metrics.Counter(
            "lineguard_history_rejected", "rows the database refused, set aside in rejected_rows"
        )
        self.drift_psi = metrics.Gauge(
            "lineguard_drift_psi", "PSI of the recent window", tag_keys=_keys("line", "measure")
        )
        self.drift_status = metrics.Gauge(
            "lineguard_drift_status", "-1 insufficient data, 0 ok, 1 warning, 2 drift", tag_keys=_keys("line")
        )
        self.anomaly_rate = metrics.Gauge(
            "lineguard_anomaly_rate", "share of flagged parts in the drift window", tag_keys=_keys("line")
        )


def noting_status(send: Any) -> tuple[Any, dict[str, int]]:
    """An ASGI ``send`` that passes every message on and notes the answer's status (500 until one is sent)."""
    status = {"code": 500}

    async def noted(message: dict[str, Any]) -> None:
        if message.get("type") == "http.response.start":
            status["code"] = int(message.get("status", 500))
        await send(message)

    return noted, status


class MetricsMiddleware:
    """Pure ASGI middleware: times the scoring routes and counts them by line and status."""

    def __init__(self, app: Any, metrics: IngressMetrics | None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        match = _LINE_PATH.match(path)
        route = match.group(2) if match else _DEFAULT_ROUTES.get(path)
        recorder = self.metrics
        if route is None or recorder is None:
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # the route notes its line here once it has resolved a real one
        send_status, status = noting_status(send)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            tags = {"line": str(state.get(LINE, "unknown"))[:64], "route": route}  # no tag per made-up name
            code = str(status["code"])
            recorder.requests.inc(1, {**tags, "status": code})
            if status["code"] >= 400:
                recorder.errors.inc(1, {**tags, "status": code})
            recorder.latency.observe((time.perf_counter() - started) * 1000, tags)


def note_line(scope: MutableMapping[str, Any], line: str) -> None:
    """Tell the metrics middleware which line this request is for (the plain routes find out late)."""
    scope.setdefault("state", {})[LINE] = line
