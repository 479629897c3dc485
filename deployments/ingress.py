"""The HTTP ingress: validates, resolves each line's version, and drives the deployment graph.

Concurrent requests are gathered into micro-batches (``@serve.batch``, a couple of milliseconds) and
each batch goes down the graph as one call per hop: Preprocessor -> Backbone -> Scorer (one Scorer
call per line in the batch). The hops are chained by passing ``DeploymentResponse`` objects on, so
images and features travel between the replicas directly and only the scores come back here. Ray's
per-call cost (serialisation, scheduling) is paid once per batch instead of once per image.

Two Serve-specific rules shape this file: no ``from __future__ import annotations`` (FastAPI must
resolve the route annotations, such as ``Request``, through Serve's class wrapper), and module-level
helpers come before the class (``@serve.ingress`` captures the class as it is created).
"""

import asyncio
import base64
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile

from lineguard.deployments.config import SENSOR_CHUNK_ROWS, AppArgs, IngressTuning, tune_batching
from lineguard.deployments.errors import APIError
from lineguard.deployments.history_routes import HistoryRoutes
from lineguard.deployments.history_routes import router as history_router
from lineguard.deployments.keys import KeyRing
from lineguard.deployments.lines import LineDirectory, LineEntry
from lineguard.deployments.messages import ClassResult, ItemError, ScoreResult, VectorScores
from lineguard.deployments.outbox import Outbox
from lineguard.deployments.records import decisions, image_row, sensor_rows
from lineguard.deployments.schemas import (
    SENSOR_BODY_SCHEMA,
    AnomalyAnswer,
    BatchItem,
    BatchResponse,
    ClassPrediction,
    Health,
    ItemFailure,
    LineDetail,
    LineSummary,
    Prediction,
    SensorBatchPrediction,
    SensorPrediction,
    SeverityChanged,
    SeverityUpdate,
    SimpleClassPrediction,
    SimplePrediction,
    ThresholdChanged,
    ThresholdUpdate,
)
from lineguard.deployments.security import CORS, AuthMiddleware, BodyLimitMiddleware, KeyCache, check_line
from lineguard.deployments.sensor_input import Readings, parse_readings
from lineguard.deployments.telemetry import IngressMetrics, MetricsMiddleware, note_line
from lineguard.deployments.web_routes import WebRoutes
from lineguard.deployments.web_routes import router as web_router
from lineguard.history.ids import new_id, new_ids
from lineguard.models.preprocess import open_image, resize
from lineguard.models.sensor_model import SensorScores
from lineguard.models.visualize import normalise_map, overlay, png_bytes
from lineguard.registry.revisions import set_severity, set_threshold
from lineguard.registry.store import ModelStore

log = logging.getLogger("ray.serve")


def _multipart_body(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI request body of a form with one file field (routes parse the form themselves)."""
    properties = {field: schema, "sensor_id": {"type": "string", "description": "camera or station id, echoed back"}}
    form = {"type": "object", "required": [field], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}}}


IMAGE_FORM = _multipart_body("file", {"type": "string", "format": "binary", "description": "PNG/JPEG/BMP/TIFF/WebP"})
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            **IMAGE_FORM["requestBody"]["content"],  # image lines
            "application/json": {"schema": SENSOR_BODY_SCHEMA},  # sensor lines
        },
    }
}
SENSOR_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": SENSOR_BODY_SCHEMA}}}}
BATCH_FORM = _multipart_body("files", {"type": "array", "items": {"type": "string", "format": "binary"}})

app = FastAPI(
    title="LineGuard",
    version="1",
    description="Anomaly detection for production lines: every line's model behind one API.",
    docs_url="/docs",
)


@dataclass
class _Replica:
    """What the middleware needs from the replica (made there, not at import)."""

    metrics: IngressMetrics | None = None
    keys: KeyCache | None = None
    max_request_bytes: int | None = None
    cors_origins: list[str] | None = None


_STATE = _Replica()
# added innermost first: CORS -> body limit -> metrics -> API keys -> routes
app.add_middleware(AuthMiddleware, get_keys=lambda: _STATE.keys)
app.add_middleware(MetricsMiddleware, get_metrics=lambda: _STATE.metrics)
app.add_middleware(BodyLimitMiddleware, get_limit=lambda: _STATE.max_request_bytes)
app.add_middleware(CORS, get_origins=lambda: _STATE.cors_origins)
app.include_router(history_router)
app.include_router(web_router)


@app.exception_handler(APIError)
async def _api_error(_: Request, err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, without echoing the input back (it may be huge, or NaN, which JSON cannot hold)."""
    problems = [
        {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in err.errors()
    ]
    return JSONResponse({"detail": problems}, status_code=422)


def _summary(entry: LineEntry) -> LineSummary:
    card = entry.card
    auroc = (card.metrics or {}).get("image_auroc")
    return LineSummary(
        line=card.line,
        kind=card.kind,
        version=card.version,
        threshold=float(card.threshold["value"]),
        head=card.head.kind if card.head else None,
        backbone=card.backbone.name if card.backbone else None,
        image_auroc=float(auroc) if isinstance(auroc, int | float) else None,
        created_at=card.created_at,
    )


def _graph_error(err: BaseException) -> ItemError:
    if isinstance(err, BackPressureError):
        return ItemError(503, "the service is at capacity: retry shortly")
    log.exception("scoring failed", exc_info=err)
    return ItemError(503, f"scoring is temporarily unavailable ({type(err).__name__}): retry shortly")


def _heatmap_png(data: bytes, result: ScoreResult, size: int) -> str:
    assert result.anomaly_map is not None
    image = resize(open_image(data), size)
    heat = normalise_map(result.anomaly_map, *result.display_range)
    return base64.b64encode(png_bytes(overlay(image, heat))).decode()


IMAGE_KINDS = ("image-anomaly", "image-classifier")
Scored = ScoreResult | ClassResult | ItemError


def _class_prediction(
    entry: LineEntry, result: ClassResult, started: float, sensor_id: str | None, prediction_id: str
) -> ClassPrediction:
    return ClassPrediction(
        prediction_id=prediction_id,
        line=entry.line,
        model_version=entry.version,
        prediction=result.label,
        confidence=round(result.confidence, 6),
        probabilities=result.probabilities,
        severity=result.severity,
        defect_confidence=None if result.defect_confidence is None else round(result.defect_confidence, 6),
        is_defect=result.is_defect,
        sensor_id=sensor_id,
        timestamp=datetime.now(UTC),
        inference_time_ms=round((time.perf_counter() - started) * 1000, 3),
    )


SMALL_SENSOR_REQUEST = 32  # readings; requests up to this size are micro-batched in the ingress


@dataclass
class _Item:
    entry: LineEntry
    data: bytes
    want_map: bool


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=128)
@serve.ingress(app)
class Ingress(HistoryRoutes, WebRoutes):
    def __init__(
        self,
        preprocessor: DeploymentHandle[Any],
        backbones: list[DeploymentHandle[Any]],
        scorer: DeploymentHandle[Any],
        sensor_scorer: DeploymentHandle[Any],
        recorder: DeploymentHandle[Any] | None,
        args: dict[str, Any],
    ) -> None:
        self.args = AppArgs(**args)
        self.metrics = _STATE.metrics = IngressMetrics()
        self.recorder = recorder
        history = self.args.history
        self.outbox = (
            None
            if recorder is None
            else Outbox(
                recorder.record.remote,
                max_rows=history.buffer_rows,
                batch_rows=history.batch_rows,
                interval_s=history.flush_interval_s,
                timeout_s=history.write_timeout_s,
                on_drop=self.metrics.history_dropped.inc,
            )
        )
        self.store = ModelStore(self.args.store)
        self.lines = LineDirectory(self.store, self.args.line_cache_ttl_s)
        _STATE.keys = KeyCache(KeyRing(self.store), self.args.security.keys_refresh_s)
        _STATE.max_request_bytes = self.args.max_request_bytes
        _STATE.cors_origins = self.args.security.cors_origins
        self.preprocessor = preprocessor
        self.scorer = scorer
        self.sensor_scorer = sensor_scorer
        self._sensor_handles: dict[str, DeploymentHandle[Any]] = {}
        self._sensor_in_flight = 0  # sensor calls awaiting the SensorScorer (micro-batch only under load)
        self.backbones = {b.spec().key(): (b, h) for b, h in zip(self.args.backbones, backbones, strict=True)}

    def _record(self, entry: LineEntry, rows: list[dict[str, Any]]) -> None:
        """Count the answers in the metrics and queue them for the history (off the request path)."""
        self.metrics.served(entry.line, entry.version, entry.card.kind)
        if not rows:
            return
        counts, flagged = decisions(rows)
        self.metrics.decided(entry.line, counts, flagged)
        if self.outbox is not None:
            self.outbox.add(rows)
            self.metrics.history_queued.set(self.outbox.queued)

    async def __del__(self) -> None:
        """Graceful shutdown: what is queued for the history is written first."""
        if self.outbox is not None:
            await self.outbox.close()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        tuning = IngressTuning(**user_config)
        tune_batching(self._score_batch, tuning.batch_max_size, tuning.batch_wait_timeout_s)
        # at most SENSOR_CHUNK_ROWS readings per call, which every SensorScorer batch holds
        tune_batching(self._vector_batch, SENSOR_CHUNK_ROWS // SMALL_SENSOR_REQUEST, tuning.batch_wait_timeout_s)

    # --- the graph -------------------------------------------------------------------------------
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002, max_concurrent_batches=4)
    async def _score_batch(self, items: list[_Item]) -> list[Scored]:
        return await self._run_graph(items)

    async def _run_graph(self, items: list[_Item]) -> list[Scored]:
        results: list[Scored] = [ItemError(500, "not scored")] * len(items)
        by_backbone: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            by_backbone[str(item.entry.backbone_key)].append(i)
        calls = []
        for key, indices in by_backbone.items():
            backbone_args, backbone = self.backbones[key]
            images = self.preprocessor.remote(
                [items[i].data for i in indices], backbone_args.image_size, self.args.max_pixels
            )
            features = backbone.remote(images)  # the DeploymentResponse is passed on, not awaited here
            groups: dict[str, list[int]] = defaultdict(list)
            for position, i in enumerate(indices):
                groups[items[i].entry.model_id].append(position)
            for model_id, positions in groups.items():
                want_maps = any(items[indices[p]].want_map for p in positions)
                response = self.scorer.options(multiplexed_model_id=model_id).remote(features, positions, want_maps)
                calls.append((response, [indices[p] for p in positions]))
        outcomes = await asyncio.gather(*(response for response, _ in calls), return_exceptions=True)
        for (_, targets), outcome in zip(calls, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                error = _graph_error(outcome)
                for t in targets:
                    results[t] = error
            else:
                for t, result in zip(targets, outcome, strict=True):
                    results[t] = result
        return results

    async def _score(self, entry: LineEntry, payloads: list[bytes], want_map: bool) -> list[Scored]:
        if entry.card.kind not in IMAGE_KINDS:
            raise APIError(422, f"line {entry.line!r} is a {entry.card.kind} line: it does not take images")
        if want_map and entry.card.kind == "image-classifier":
            raise APIError(
                422, f"line {entry.line!r} is a classifier: it answers a class, not a heatmap (drop ?heatmap=true)"
            )
        if entry.backbone_key not in self.backbones:
            served = sorted(self.backbones)
            raise APIError(
                409,
                f"line {entry.line!r} was fitted on backbone {entry.backbone_key}, which this "
                f"service does not run (it runs {served}): add it to serve_config.yaml",
            )
        try:
            return list(
                await asyncio.wait_for(
                    asyncio.gather(*(self._score_batch(_Item(entry, p, want_map)) for p in payloads)),
                    timeout=self.args.request_timeout_s,
                )
            )
        except TimeoutError as err:
            raise APIError(
                503, f"scoring took longer than {self.args.request_timeout_s} s: retry shortly", {"Retry-After": "1"}
            ) from err

    def _sensor_handle(self, model_id: str) -> DeploymentHandle[Any]:
        handle = self._sensor_handles.get(model_id)
        if handle is None:
            if len(self._sensor_handles) > 4096:  # old versions pile up over months of threshold changes
                self._sensor_handles.clear()
            handle = self._sensor_handles[model_id] = self.sensor_scorer.options(multiplexed_model_id=model_id)
        return handle

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0, max_concurrent_batches=4)
    async def _vector_batch(self, items: list[tuple[str, np.ndarray]]) -> list[VectorScores | ItemError]:
        """Small sensor requests gathered under load: one SensorScorer call per line in the batch."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, (model_id, _) in enumerate(items):
            groups[model_id].append(i)
        calls = []
        for model_id, indices in groups.items():
            values = items[indices[0]][1] if len(indices) == 1 else np.concatenate([items[i][1] for i in indices])
            calls.append((self._sensor_handle(model_id).remote(values), indices))
        outcomes = await asyncio.gather(*(call for call, _ in calls), return_exceptions=True)
        results: list[VectorScores | ItemError] = [ItemError(500, "not scored")] * len(items)
        for (_, indices), outcome in zip(calls, outcomes, strict=True):
            if isinstance(outcome, BaseException | ItemError):
                error = _graph_error(outcome) if isinstance(outcome, BaseException) else outcome
                for i in indices:
                    results[i] = error
                continue
            start = 0
            for i in indices:
                rows = slice(start, start + len(items[i][1]))
                results[i] = VectorScores(outcome.out.rows(rows), outcome.threshold, outcome.score_ms)
                start = rows.stop
        return results

    async def _score_vectors(self, entry: LineEntry, values: np.ndarray) -> VectorScores:
        """A small request goes straight to the SensorScorer when it is alone, and joins the ingress's
        micro-batches when others are in flight (one hop per batch under load); a large one goes in
        chunks (concurrent; each fits one of the SensorScorer's batches)."""
        if len(values) <= SMALL_SENSOR_REQUEST and self._sensor_in_flight > 0:
            calls: Any = self._vector_batch((entry.model_id, values))  # others are waiting: join a batch
            chunks = 1
        else:  # alone (no batching machinery on the way), or large
            handle = self._sensor_handle(entry.model_id)
            pieces = [values[i : i + SENSOR_CHUNK_ROWS] for i in range(0, len(values), SENSOR_CHUNK_ROWS)]
            chunks = len(pieces)
            calls = handle.remote(pieces[0]) if chunks == 1 else asyncio.gather(*(handle.remote(c) for c in pieces))
        self._sensor_in_flight += 1
        try:
            answer = await asyncio.wait_for(calls, timeout=self.args.request_timeout_s)
            parts = [answer] if chunks == 1 else answer
        except TimeoutError as err:
            raise APIError(
                503, f"scoring took longer than {self.args.request_timeout_s} s: retry shortly", {"Retry-After": "1"}
            ) from err
        except Exception as err:
            failure = _graph_error(err)
            raise APIError(failure.status, failure.detail, {"Retry-After": "1"}) from err
        finally:
            self._sensor_in_flight -= 1
        for part in parts:
            if isinstance(part, ItemError):
                raise APIError(part.status, part.detail, {"Retry-After": "1"} if part.status == 503 else None)
        if len(parts) == 1:
            return parts[0]  # type: ignore[no-any-return]
        combined = SensorScores.concatenate([p.out for p in parts])
        return VectorScores(combined, parts[0].threshold, sum(p.score_ms for p in parts))

    async def _sensor_request(self, entry: LineEntry, request: Request) -> tuple[Readings, VectorScores]:
        if entry.card.kind != "sensor-anomaly" or entry.card.inputs is None:
            raise APIError(422, f"line {entry.line!r} is a {entry.card.kind} line: it does not take sensor readings")
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type:
            raise APIError(
                415 if content_type else 422,
                f"line {entry.line!r} is a sensor line: send JSON "
                f'{{"values": [..{entry.card.inputs.n_features} numbers..]}} with content-type application/json '
                f"(got {content_type or 'none'!r})",
            )
        body = await request.body()  # BodyLimitMiddleware holds it to max_request_bytes
        readings = parse_readings(body, entry.line, entry.card.inputs.features, self.args.max_batch_vectors)
        sent = time.perf_counter()
        out = await self._score_vectors(entry, readings.values)
        out.hop_ms = (time.perf_counter() - sent) * 1000
        return readings, out

    def _record_sensor(
        self, entry: LineEntry, readings: Readings, answer: VectorScores, started: float
    ) -> tuple[list[str], float]:
        """Ids for the readings, their history rows queued; returns the ids and the elapsed ms."""
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        ids = new_ids(len(answer.out.scores))
        rows = sensor_rows(entry, answer.out, answer.threshold, ids, time.time(), elapsed, readings.sensor_id)
        self._record(entry, rows)
        return ids, elapsed

    async def _predict_sensor(self, entry: LineEntry, request: Request, started: float) -> Response:
        readings, answer = await self._sensor_request(entry, request)
        out = answer.out
        assert entry.card.inputs is not None
        features = entry.card.inputs.features
        ids, elapsed = self._record_sensor(entry, readings, answer, started)
        body: dict[str, Any]
        if readings.single:
            top = [
                {
                    "feature": features[j],
                    "share": round(float(share), 4),
                    "value": float(readings.values[0, j]),
                    "expected": round(float(out.expected[0, j]), 6),
                }
                for j, share in zip(out.top_index[0].tolist(), out.top_share[0].tolist(), strict=True)
            ]
            body = {
                "line": entry.line,
                "model_version": entry.version,
                "score": float(out.scores[0]),
                "threshold": answer.threshold,
                "normalized_score": float(out.normalized[0]),
                "status": "anomaly" if out.is_anomaly[0] else "normal",
                "is_anomaly": bool(out.is_anomaly[0]),
                "top_features": top,
                "inference_time_ms": elapsed,
                "prediction_id": ids[0],
            }
        else:
            names = np.asarray(features, dtype=object)
            body = {
                "line": entry.line,
                "model_version": entry.version,
                "threshold": answer.threshold,
                "count": len(out.scores),
                "anomalies": int(out.is_anomaly.sum()),
                "scores": out.scores,
                "status": np.where(out.is_anomaly, "anomaly", "normal").tolist(),
                "top_features": names[out.top_index].tolist(),
                "top_shares": out.top_share.round(4),
                "inference_time_ms": elapsed,
                "prediction_ids": ids,
            }
        if readings.sensor_id is not None:
            body["sensor_id"] = readings.sensor_id
        timing = f"score;dur={answer.score_ms:.2f}, hop;dur={answer.hop_ms:.2f}, total;dur={elapsed:.2f}"
        return Response(
            orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
            media_type="application/json",
            headers={"Server-Timing": timing},
        )

    # --- helpers ---------------------------------------------------------------------------------
    async def _read_files(
        self, request: Request, field: str, limit: int
    ) -> tuple[list[tuple[str | None, bytes]], str | None]:
        content_type = request.headers.get("content-type", "")
        if "json" in content_type:
            raise APIError(
                422,
                f"this is an image line: send the image as multipart/form-data with a file field named {field!r}, "
                "not JSON",
            )
        if not content_type.startswith("multipart/form-data"):
            raise APIError(
                415 if content_type else 422,
                f"send the image as multipart/form-data with a file field named {field!r} "
                f"(got content-type {content_type or 'none'!r})",
            )
        try:
            form = await request.form(max_files=limit, max_fields=10)
        except HTTPException:  # BodyLimitMiddleware: over max_request_bytes
            raise
        except Exception as err:  # starlette raises MultiPartException and friends for malformed bodies
            if "Too many files" in str(err):
                raise APIError(413, f"more than {limit} files in one request, over the limit of {limit}") from err
            raise APIError(422, f"malformed multipart body: {err}") from err
        uploads = [v for k, v in form.multi_items() if k == field]
        if not uploads:
            raise APIError(422, f"no file field named {field!r} in the form (fields: {sorted(set(form.keys()))})")
        if len(uploads) > limit:
            raise APIError(413, f"{len(uploads)} files in one request, over the limit of {limit}")
        files = []
        for upload in uploads:
            if not isinstance(upload, UploadFile):
                raise APIError(422, f"field {field!r} must be a file upload, not a text value")
            data = await upload.read(self.args.max_image_bytes + 1)
            if len(data) > self.args.max_image_bytes:
                raise APIError(413, f"file {upload.filename!r} is over the limit of {self.args.max_image_bytes} bytes")
            files.append((upload.filename, data))
        sensor = form.get("sensor_id")
        sensor_id = sensor if isinstance(sensor, str) and sensor else None
        if sensor_id is not None and len(sensor_id) > 200:
            raise APIError(422, "sensor_id is longer than 200 characters")
        return files, sensor_id

    async def _prediction(
        self,
        entry: LineEntry,
        result: ScoreResult | ClassResult,
        data: bytes,
        started: float,
        sensor_id: str | None,
        heatmap: bool,
        source: str | None = None,
    ) -> Prediction | ClassPrediction:
        """The answer for one image; its history row is queued under the id the answer carries."""
        prediction_id = new_id()
        prediction: Prediction | ClassPrediction
        if isinstance(result, ClassResult):
            prediction = _class_prediction(entry, result, started, sensor_id, prediction_id)
        else:
            png = None
            if heatmap and result.anomaly_map is not None:
                png = await asyncio.to_thread(
                    _heatmap_png, data, result, entry.card.backbone.image_size if entry.card.backbone else 256
                )
            prediction = Prediction(
                line=entry.line,
                model_version=entry.version,
                anomaly_score=result.score,
                threshold=result.threshold,
                normalized_score=result.normalized,
                is_anomaly=result.is_anomaly,
                inference_time_ms=round((time.perf_counter() - started) * 1000, 3),
                sensor_id=sensor_id,
                heatmap_png=png,
                prediction_id=prediction_id,
            )
        latency = prediction.inference_time_ms
        self._record(entry, [image_row(entry, result, prediction_id, time.time(), latency, sensor_id, source, data)])
        return prediction

    # --- routes ----------------------------------------------------------------------------------
    @app.post(
        "/v1/lines/{line}/predict",
        response_model=Prediction | ClassPrediction | SensorPrediction | SensorBatchPrediction,
        response_model_exclude_none=True,
        openapi_extra=PREDICT_BODY,
        summary="Score one part (image lines: multipart file) or sensor readings (sensor lines: JSON)",
    )
    async def predict(
        self, line: str, request: Request, response: Response, heatmap: bool = False
    ) -> Prediction | ClassPrediction | Response:
        started = time.perf_counter()
        entry = await self.lines.get(line)
        note_line(entry.line)
        if entry.card.kind == "sensor-anomaly":
            return await self._predict_sensor(entry, request, started)
        files, sensor_id = await self._read_files(request, "file", 1)
        parsed = time.perf_counter()
        result = (await self._score(entry, [files[0][1]], heatmap))[0]
        if isinstance(result, ItemError):
            raise APIError(result.status, result.detail, {"Retry-After": "1"} if result.status == 503 else None)
        name, data = files[0]
        prediction = await self._prediction(entry, result, data, started, sensor_id, heatmap, name)
        timings = {"parse": (parsed - started) * 1000, **result.timings, "total": prediction.inference_time_ms}
        response.headers["Server-Timing"] = ", ".join(
            f"{k.removesuffix('_ms')};dur={v:.2f}" for k, v in timings.items()
        )
        return prediction

    @app.post(
        "/v1/lines/{line}/predict/batch",
        response_model=BatchResponse,
        response_model_exclude_none=True,
        openapi_extra=BATCH_FORM,
        summary="Score several parts; each gets its own answer or error",
    )
    async def predict_batch(self, line: str, request: Request, heatmap: bool = False) -> BatchResponse:
        started = time.perf_counter()
        entry = await self.lines.get(line)
        note_line(entry.line)
        files, sensor_id = await self._read_files(request, "files", self.args.max_batch_images)
        results = await self._score(entry, [data for _, data in files], heatmap)
        items = []
        for index, ((name, data), result) in enumerate(zip(files, results, strict=True)):
            if isinstance(result, ItemError):
                items.append(
                    BatchItem(index=index, filename=name, error=ItemFailure(status=result.status, detail=result.detail))
                )
            else:
                prediction = await self._prediction(entry, result, data, started, sensor_id, heatmap, name)
                items.append(BatchItem(index=index, filename=name, prediction=prediction))
        return BatchResponse(
            line=entry.line,
            model_version=entry.version,
            results=items,
            inference_time_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    @app.post(
        "/predict",
        response_model=SimplePrediction | SimpleClassPrediction,
        response_model_exclude_none=True,
        openapi_extra=IMAGE_FORM,
        summary="Score one part on the default line",
    )
    async def predict_default(self, request: Request) -> SimplePrediction | SimpleClassPrediction:
        entry = await self._default_entry(IMAGE_KINDS, self.args.default_line, "default_line", "/predict")
        full = await self.predict(entry.line, request, Response())
        simple = SimpleClassPrediction if isinstance(full, ClassPrediction) else SimplePrediction
        assert isinstance(full, Prediction | ClassPrediction)
        return simple.model_validate(full.model_dump(include=set(simple.model_fields)))

    @app.post(
        "/anomaly",
        response_model=AnomalyAnswer,
        openapi_extra=SENSOR_BODY,
        summary="Score sensor readings on the default sensor line",
    )
    async def anomaly(self, request: Request) -> AnomalyAnswer:
        entry = await self._default_entry(
            ("sensor-anomaly",), self.args.default_sensor_line, "default_sensor_line", "/anomaly"
        )
        started = time.perf_counter()
        note_line(entry.line)
        readings, answer = await self._sensor_request(entry, request)
        ids, _ = self._record_sensor(entry, readings, answer, started)
        out = answer.out
        status = np.where(out.is_anomaly, "anomaly", "normal").tolist()
        if readings.single:
            return AnomalyAnswer(score=float(out.scores[0]), status=status[0], prediction_id=ids[0])
        return AnomalyAnswer(score=out.scores.tolist(), status=status, prediction_id=ids)

    async def _default_entry(
        self, kinds: tuple[str, ...], configured: str | None, setting: str, route: str
    ) -> LineEntry:
        """The line a plain route answers: the configured one, else the store's only line of the first of
        ``kinds`` that has exactly one (an anomaly line keeps answering when a classifier line is added)."""
        wanted = " or ".join(kinds)
        if configured is None:
            entries = await self.lines.all(visible_only=False)  # the same default line for every key
            counts = []
            for kind in kinds:
                lines = [e for e in entries if e.card.kind == kind]
                if len(lines) == 1:
                    check_line(lines[0].line)
                    return lines[0]
                counts.append(f"{len(lines)} {kind}")
            raise APIError(
                409,
                f"no {setting} is configured and the store holds {' and '.join(counts)} lines: "
                f"set {setting} in serve_config.yaml, or POST to /v1/lines/{{line}}/predict",
            )
        entry = await self.lines.get(configured)
        if entry.card.kind not in kinds:
            problem = f"{setting} {configured!r} is a {entry.card.kind} line"
            raise APIError(409, f"{problem}: POST {route} takes {wanted} lines")
        return entry

    @app.get("/v1/lines", response_model=list[LineSummary], summary="Every line with its version in service")
    async def list_lines(self) -> list[LineSummary]:
        return [_summary(e) for e in await self.lines.all()]

    @app.get("/v1/lines/{line}", response_model=LineDetail, summary="One line: version, threshold, metrics")
    async def line_detail(self, line: str) -> LineDetail:
        entry = await self.lines.get(line)
        card = entry.card
        versions = await asyncio.to_thread(self.store.versions, line)
        metrics = {k: v for k, v in (card.metrics or {}).items() if k != "test_scores"} if card.metrics else None
        refused = self.lines.refused.get(line, (None, None))
        return LineDetail(
            **_summary(entry).model_dump(),
            threshold_method=str(card.threshold.get("method")),
            threshold_reference=float(card.threshold.get("reference", 0.0)),
            parent=card.parent,
            note=card.note,
            versions=versions,
            metrics=metrics,
            calibration={k: v for k, v in card.calibration.items() if k != "scores"},
            data=card.data.model_dump() if card.data else None,
            head_params=card.head.params if card.head else {},
            image_size=card.backbone.image_size if card.backbone else None,
            features=card.inputs.features if card.inputs else None,
            classes=card.classifier.classes if card.classifier else None,
            normal_class=card.classifier.normal_class if card.classifier else None,
            severity=card.classifier.severity if card.classifier else None,
            refused_version=refused[0],
            refused_reason=refused[1],
        )

    @app.put(
        "/v1/lines/{line}/threshold",
        response_model=ThresholdChanged,
        summary="Change a line's sensitivity (stored as a new version)",
    )
    async def change_threshold(self, line: str, update: ThresholdUpdate) -> ThresholdChanged:
        entry = await self.lines.get(line)
        try:
            card = await asyncio.to_thread(set_threshold, self.store, line, update.threshold, update.note)
        except ValueError as err:
            raise APIError(422, str(err)) from err
        self.lines.invalidate(line)
        return ThresholdChanged(
            line=line,
            version=card.version,
            previous_version=entry.version,
            threshold=float(card.threshold["value"]),
            previous_threshold=float(entry.card.threshold["value"]),
        )

    @app.put(
        "/v1/lines/{line}/severity",
        response_model=SeverityChanged,
        summary="Change a classifier line's severity rules (stored as a new version)",
    )
    async def change_severity(self, line: str, update: SeverityUpdate) -> SeverityChanged:
        entry = await self.lines.get(line)
        try:
            card = await asyncio.to_thread(set_severity, self.store, line, update.rules, update.note)
        except ValueError as err:
            raise APIError(422, str(err)) from err
        self.lines.invalidate(line)
        assert card.classifier is not None
        previous = entry.card.classifier.severity if entry.card.classifier else {}
        return SeverityChanged(
            line=line,
            version=card.version,
            previous_version=entry.version,
            severity=card.classifier.severity,
            previous_severity=previous,
        )

    @app.get("/healthz", response_model=Health, summary="Ready when every deployment answers and the store is readable")
    async def healthz(self) -> JSONResponse:
        handles = {"Preprocessor": self.preprocessor, "Scorer": self.scorer, "SensorScorer": self.sensor_scorer}
        if self.recorder is not None:
            handles["Recorder"] = self.recorder
        for i, (_, handle) in enumerate(self.backbones.values()):
            handles["Backbone" if i == 0 else f"Backbone{i + 1}"] = handle
        names = list(handles)
        pings = await asyncio.gather(
            *(asyncio.wait_for(handles[n].ping.remote(), 5.0) for n in names), return_exceptions=True
        )
        states = {
            n: "ok" if p == "ok" else f"unavailable: {type(p).__name__}" for n, p in zip(names, pings, strict=True)
        }
        store_ok = await asyncio.to_thread(self.store.readable)
        healthy = store_ok and all(s == "ok" for s in states.values())
        history = None
        if self.recorder is not None and self.outbox is not None:  # a database outage degrades, never fails
            try:
                database = await asyncio.wait_for(self.recorder.health.remote(), 6.0)
            except Exception as err:
                database = {"reachable": False, "last_error": f"Recorder: {type(err).__name__}"}
            outbox = self.outbox.stats()
            ok = bool(database.get("reachable")) and outbox["dropped"] == 0
            history = {"status": "ok" if ok else "degraded", "outbox": outbox, **database}
        body = Health(status="ok" if healthy else "unavailable", store=store_ok, deployments=states, history=history)
        return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)


__all__ = ["Ingress", "app"]
