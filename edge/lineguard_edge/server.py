"""``lineguard-edge serve``: the service's per-line routes over one or more bundles, from the standard
library's threaded HTTP server (no web framework to install on a camera PC).

=====================================  =================================================================
``POST /v1/lines/{line}/predict``      image lines: multipart ``file`` (+ ``sensor_id``), ``?heatmap=true``;
                                       sensor lines: JSON ``{"values": [...]}`` or ``{"features": {...}}``
``POST /predict``                      the default image line, the service's short answer
``POST /anomaly``                      the default sensor line: ``{"score", "status", "prediction_id"}``
``GET /prediction_history``            the local history, newest first (``limit``, ``cursor``)
``GET /healthz`` (``/health``)         the bundles served and the rows recorded
=====================================  =================================================================

Answers are the service's, fields without a value left out as the service leaves them out, and every
refusal is the service's status with ``{"detail": "..."}`` naming the problem. Each answer is in the
history before it is sent.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from lineguard_edge.errors import ConfigError, DataError, LineGuardError, NotFoundError, outcome
from lineguard_edge.history import LocalHistory, rows_of
from lineguard_edge.model import EdgeModel
from lineguard_edge.readings import parse_readings
from lineguard_edge.text import printable

log = logging.getLogger("lineguard_edge")
MiB = 1024 * 1024
SIMPLE_IMAGE = ("anomaly_score", "threshold", "is_anomaly", "line", "model_version", "prediction_id")
SIMPLE_CLASS = (
    "prediction",
    "confidence",
    "severity",
    "sensor_id",
    "timestamp",
    "line",
    "model_version",
    "prediction_id",
)


class HTTPError(Exception):
    """What only HTTP knows (a content type, a body size, a route): a status and its detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Limits:
    max_request_bytes: int = 64 * MiB  # the service's defaults (serve_config.yaml)
    max_readings: int = 10_000


def _shown(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if v is not None}


class EdgeService:
    """The routes over ``models`` (by line name), recording into ``history``."""

    def __init__(
        self,
        models: Mapping[str, EdgeModel],
        history: LocalHistory,
        limits: Limits | None = None,
        default_line: str | None = None,
        default_sensor_line: str | None = None,
    ) -> None:
        self.models = dict(models)
        self.history = history
        self.limits = limits or Limits()
        self.default_line = default_line
        self.default_sensor_line = default_sensor_line
        for name in (default_line, default_sensor_line):
            if name is not None and name not in self.models:
                raise ConfigError(f"default line {name!r} is not among the bundles served: {sorted(self.models)}")

    # --- dispatch ----------------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        try:
            return self._route(method, target, headers, body)
        except HTTPError as err:
            return Reply(err.status, {"detail": err.detail})
        except LineGuardError as err:
            status = outcome(err).http
            return Reply(status, {"detail": str(err)}, {"Retry-After": "1"} if status == 503 else {})
        except Exception:  # a bug: logged, answered as one
            log.exception("%s %s failed", method, target)
            return Reply(500, {"detail": "internal error: see the edge runtime's log"})

    def _route(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        url = urlsplit(target)
        path, query = url.path, parse_qs(url.query)
        routes: dict[tuple[str, str], Callable[[], Reply]] = {
            ("GET", "/healthz"): self._health,
            ("GET", "/health"): self._health,
            ("GET", "/prediction_history"): lambda: self._history(query),
            ("POST", "/predict"): lambda: self._plain_image(headers, body),
            ("POST", "/anomaly"): lambda: self._plain_sensor(headers, body),
        }
        if (method, path) in routes:
            return routes[(method, path)]()
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[:2] == ["v1", "lines"] and parts[3] == "predict":
            if method != "POST":
                raise HTTPError(405, f"{method} {path}: use POST")
            model = self._model(unquote(parts[2]))
            heatmap = _flag(query, "heatmap")
            return Reply(200, _shown(self._predict(model, headers, body, heatmap)))
        if any(p == path for _, p in routes):
            raise HTTPError(405, f"{method} {path}: method not allowed")
        raise HTTPError(404, f"no route {path}: see the routes of lineguard_edge.server")

    # --- routes ------------------------------------------------------------------------------------
    def _health(self) -> Reply:
        lines = {
            name: {"kind": m.kind, "version": m.version, "runtime": m.bundle.runtime} for name, m in self.models.items()
        }
        return Reply(200, {"status": "ok", "lines": lines, "history_rows": self.history.count()})

    def _history(self, query: dict[str, list[str]]) -> Reply:
        text = query.get("limit", ["100"])[-1]
        try:
            limit = int(text)
        except ValueError:
            raise DataError(f"limit must be a whole number, got {text!r}") from None
        cursor = query.get("cursor", [None])[-1]
        rows = self.history.page(limit, cursor)
        headers = {"X-Next-Cursor": rows[-1]["id"]} if len(rows) == limit else {}
        return Reply(200, [_shown(r) for r in rows], headers)

    def _model(self, line: str) -> EdgeModel:
        model = self.models.get(line)
        if model is None:
            raise NotFoundError(f"unknown line {line!r}: this edge runtime serves {sorted(self.models)}")
        return model

    def _default(self, configured: str | None, image: bool, route: str) -> EdgeModel:
        if configured is not None:
            return self.models[configured]
        fitting = [m for m in self.models.values() if m.takes_images == image]
        if len(fitting) == 1:
            return fitting[0]
        kind = "image" if image else "sensor"
        raise HTTPError(
            409,
            f"no default {kind} line is set and {len(fitting)} {kind} bundles are served: "
            f"start with --default-{'line' if image else 'sensor-line'}, or POST to /v1/lines/{{line}}/predict",
        )

    def _plain_image(self, headers: Mapping[str, str], body: bytes) -> Reply:
        model = self._default(self.default_line, True, "/predict")
        answer = self._predict(model, headers, body, False)
        keys = SIMPLE_CLASS if model.kind == "image-classifier" else SIMPLE_IMAGE
        return Reply(200, _shown({k: answer.get(k) for k in keys}))

    def _plain_sensor(self, headers: Mapping[str, str], body: bytes) -> Reply:
        model = self._default(self.default_sensor_line, False, "/anomaly")
        answer = self._predict(model, headers, body, False)
        if "scores" in answer:
            return Reply(
                200, {"score": answer["scores"], "status": answer["status"], "prediction_id": answer["prediction_ids"]}
            )
        return Reply(
            200, {"score": answer["score"], "status": answer["status"], "prediction_id": answer["prediction_id"]}
        )

    def _predict(self, model: EdgeModel, headers: Mapping[str, str], body: bytes, heatmap: bool) -> dict[str, Any]:
        content_type = headers.get("content-type", "")
        if not model.takes_images:
            if "json" not in content_type:
                raise HTTPError(
                    415 if content_type else 422,
                    f'line {model.line!r} is a sensor line: send JSON {{"values": [..{len(model.features)} '
                    f"numbers..]}} with content-type application/json (got {content_type or 'none'!r})",
                )
            readings = parse_readings(body, model.line, model.features, self.limits.max_readings)
            answer = model.predict_readings(readings)
            if "scores" in answer:
                singles = [
                    {"line": model.line, "model_version": model.version, "score": s, "is_anomaly": st == "anomaly",
                     "sensor_id": readings.sensor_id}
                    for s, st in zip(answer["scores"], answer["status"], strict=True)
                ]  # fmt: skip
                answer["prediction_ids"] = self.history.record(rows_of(model.kind, singles))
            else:
                answer["prediction_id"] = self.history.record(rows_of(model.kind, [answer]))[0]
            return answer
        data, sensor_id = _image_form(content_type, body)
        answer = model.predict(data, heatmap=heatmap, sensor_id=sensor_id)
        answer["prediction_id"] = self.history.record(rows_of(model.kind, [answer]))[0]
        return answer


def _flag(query: dict[str, list[str]], name: str) -> bool:
    value = query.get(name, ["false"])[-1].lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise DataError(f"{name} must be true or false, got {value!r}")
    return value in ("true", "1", "yes")


def _image_form(content_type: str, body: bytes) -> tuple[bytes, str | None]:
    """The ``file`` field (and the optional ``sensor_id``) of a multipart form."""
    if "json" in content_type:
        raise HTTPError(
            422, "this is an image line: send the image as multipart/form-data with a file field named 'file', not JSON"
        )
    if not content_type.startswith("multipart/form-data"):
        raise HTTPError(
            415 if content_type else 422,
            f"send the image as multipart/form-data with a file field named 'file' (got content-type "
            f"{content_type or 'none'!r})",
        )
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
    )
    if not message.is_multipart() or message.defects:
        raise HTTPError(422, "malformed multipart body: its boundary or parts cannot be read")
    files, sensor_id, names = [], None, []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        names.append(str(name))
        payload = part.get_payload(decode=True)
        if name == "file":
            if part.get_filename() is None:
                raise HTTPError(422, "field 'file' must be a file upload, not a text value")
            files.append(payload if isinstance(payload, bytes) else b"")
        elif name == "sensor_id" and isinstance(payload, bytes) and payload:
            sensor_id = printable(payload.decode("utf-8", "replace"), "sensor_id", 200)
    if not files:
        raise HTTPError(422, f"no file field named 'file' in the form (fields: {sorted(set(names))})")
    if len(files) > 1:
        raise HTTPError(413, f"{len(files)} files in one request, over the limit of 1")
    return files[0], sensor_id


# --- the HTTP server -------------------------------------------------------------------------------------
def make_server(service: EdgeService, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A threaded HTTP/1.1 server for ``service`` (``serve_forever`` runs it; ``shutdown`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body leave in two writes: without TCP_NODELAY, Nagle's algorithm holds the body back
        # for the client's delayed ACK, and every answer took 44 ms instead of 1
        disable_nagle_algorithm = True
        timeout = 30  # seconds a client may take per read: a slow upload cannot hold a thread for ever

        def _handle(self) -> None:
            length_text = self.headers.get("Content-Length")
            body = b""
            if length_text is not None:
                try:
                    length = int(length_text)
                except ValueError:
                    return self._send(Reply(400, {"detail": f"Content-Length {length_text!r} is not a number"}))
                if length > service.limits.max_request_bytes:
                    self.close_connection = True
                    return self._send(Reply(413, {"detail": (
                        f"request body is {length} bytes, over the limit of {service.limits.max_request_bytes}"
                    )}))  # fmt: skip
                body = self.rfile.read(length)
            elif self.command == "POST":
                return self._send(Reply(411, {"detail": "send a Content-Length with the body"}))
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._send(service.handle(self.command, self.path, headers, body))

        do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815 (the server's naming)

        def _send(self, reply: Reply) -> None:
            data = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="lineguard-edge", daemon=True)
    thread.start()
    return thread
