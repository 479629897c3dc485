"""The scoring routes: one part or reading (``/v1/lines/{line}/predict``), a batch of parts, and the plain
``/predict`` and ``/anomaly`` of the default lines. Each reads the request, hands it to a pipeline, turns
the result into the typed answer (:mod:`lineguard.registry.answers`) and queues its history row.

No ``from __future__ import annotations``: FastAPI reads the routes' annotations at import.
"""

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from PIL import Image

from lineguard.deployments.api.deps import CallerDep, LineDep, ServicesDep, line_for
from lineguard.deployments.api.errors import APIError
from lineguard.deployments.api.schemas import (
    BATCH_FORM,
    IMAGE_FORM,
    PREDICT_BODY,
    SENSOR_BODY,
    BatchItem,
    BatchResponse,
    ItemFailure,
)
from lineguard.deployments.api.uploads import read_images, read_readings
from lineguard.deployments.keys import Principal
from lineguard.deployments.lines import LineEntry
from lineguard.deployments.messages import ClassResult, ItemError, ScoreResult, StreamScores, VectorScores
from lineguard.deployments.records import image_row, sensor_rows
from lineguard.deployments.services import Services
from lineguard.history.ids import new_id, new_ids
from lineguard.models.preprocess import open_image, resize
from lineguard.models.visualize import normalise_map, overlay, png_bytes
from lineguard.registry.answers import (
    AlarmEventOut,
    AnomalyAnswer,
    ClassPrediction,
    Prediction,
    SensorBatchPrediction,
    SensorPrediction,
    SimpleClassPrediction,
    SimplePrediction,
    StreamAlarm,
    simple,
    status,
    statuses,
)
from lineguard.registry.kinds import IMAGE_KINDS, LineKind
from lineguard_edge.readings import Readings

router = APIRouter()


def _heatmap_png(data: bytes, result: ScoreResult, size: int) -> str:
    """The heatmap over the resized input the Scorer sent back (the full-size original is never decoded here:
    a 40 MP frame took 120 MB in the ingress, which its allocator kept)."""
    assert result.decision.anomaly_map is not None
    if result.image is not None:
        image = Image.fromarray(np.ascontiguousarray(result.image.transpose(1, 2, 0)))
    else:
        image = resize(open_image(data), size)
    heat = normalise_map(result.decision.anomaly_map, *result.display_range)
    return base64.b64encode(png_bytes(overlay(image, heat))).decode()


def _server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{k.removesuffix('_ms')};dur={v:.2f}" for k, v in timings.items())


def _failed(error: ItemError) -> APIError:
    return APIError(
        error.status, error.detail, {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else None
    )


async def _answer(
    services: Services,
    entry: LineEntry,
    result: ScoreResult | ClassResult,
    data: bytes,
    started: float,
    sensor_id: str | None,
    heatmap: bool,
    source: str | None,
) -> Prediction | ClassPrediction:
    """The answer for one image; its history row is queued under the id the answer carries."""
    prediction_id = new_id()
    answer: Prediction | ClassPrediction
    if isinstance(result, ClassResult):
        assert entry.card.classifier is not None
        info = entry.card.classifier
        elapsed = (time.perf_counter() - started) * 1000
        answer = ClassPrediction.of(
            entry.line,
            entry.version,
            result.decision,
            info.classes,
            info.normal_index,
            elapsed,
            sensor_id,
            prediction_id,
        )
    else:
        png = None
        if heatmap and result.decision.anomaly_map is not None:
            size = entry.card.backbone.image_size if entry.card.backbone else 256
            png = await asyncio.to_thread(_heatmap_png, data, result, size)
        elapsed = (time.perf_counter() - started) * 1000
        answer = Prediction.of(entry.line, entry.version, result.decision, elapsed, sensor_id, png, prediction_id)
    row = image_row(entry, result, prediction_id, time.time(), answer.inference_time_ms, sensor_id, source, data)
    services.record(entry, [row])
    return answer


async def _one_image(
    services: Services, entry: LineEntry, request: Request, response: Response, heatmap: bool, started: float
) -> Prediction | ClassPrediction:
    upload = await read_images(request, "file", 1, services.args.max_image_bytes)
    parsed = time.perf_counter()
    name, data = upload.files[0]
    result = (await services.images.score(entry, [data], heatmap))[0]
    if isinstance(result, ItemError):
        raise _failed(result)
    answer = await _answer(services, entry, result, data, started, upload.sensor_id, heatmap, name)
    timings = {"parse": (parsed - started) * 1000, **result.timings, "total": answer.inference_time_ms}
    response.headers["Server-Timing"] = _server_timing(timings)
    return answer


@dataclass
class _SensorCall:
    readings: Readings
    answer: VectorScores
    ids: list[str]
    elapsed_ms: float
    stream: StreamScores | None = None


async def _readings(services: Services, entry: LineEntry, request: Request, started: float) -> _SensorCall:
    """Score a sensor request (a stream's readings in their windows, by the stream's shard) and queue its
    history rows, alarm events with them."""
    readings = await read_readings(request, entry, services.args.max_batch_vectors)
    sent = time.perf_counter()
    streamed: StreamScores | None = None
    events: dict[int, str] = {}
    if services.sensors.by_stream(entry, readings.stream):
        window = entry.window
        if readings.stream is None and len(readings.values) < window:
            raise APIError(
                422,
                f"line {entry.line!r} scores each reading in a window of {window} readings: this request has "
                f'{len(readings.values)} and needs {window} (or send a "stream", whose earlier readings are kept)',
            )
        streamed = await services.sensors.score_stream(entry, readings.stream, readings.values, readings.timestamps)
        answer = VectorScores(streamed.out, streamed.threshold, streamed.score_ms)
        first = _first_reading(streamed)
        events = {e.reading - first: e.kind for e in streamed.events}
    else:
        answer = await services.sensors.score(entry, readings.values)
    answer.hop_ms = (time.perf_counter() - sent) * 1000
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    ids = new_ids(len(answer.out.scores))
    rows = sensor_rows(entry, answer.out, answer.threshold, ids, time.time(), elapsed, readings.sensor_id, events)
    services.record(entry, rows)
    return _SensorCall(readings, answer, ids, elapsed, streamed)


def _first_reading(streamed: StreamScores) -> int:
    """The stream's count of the request's first reading (events count readings over the stream's life)."""
    return streamed.seen - len(streamed.alarm)


def _with_stream(body: SensorPrediction | SensorBatchPrediction, call: _SensorCall) -> None:
    streamed = call.stream
    if streamed is None:
        return
    body.stream = call.readings.stream
    body.window = streamed.window
    first = _first_reading(streamed)
    if isinstance(body, SensorPrediction):
        event = streamed.events[0] if streamed.events else None  # one reading: at most one event
        body.alarm = StreamAlarm.model_construct(
            active=bool(streamed.alarm[0]),
            event=event.kind if event else None,
            duration=event.duration if event else (streamed.since if streamed.alarm[0] else None),
        )
    else:
        body.alarm = streamed.alarm.tolist()
        body.alarm_events = [
            AlarmEventOut.model_construct(reading=e.reading - first, event=e.kind, duration=e.duration)
            for e in streamed.events
        ]


async def _sensor_answer(services: Services, entry: LineEntry, request: Request, started: float) -> Response:
    call = await _readings(services, entry, request, started)
    readings, answer, ids, elapsed = call.readings, call.answer, call.ids, call.elapsed_ms
    assert entry.card.inputs is not None
    features = entry.card.inputs.features
    body: SensorPrediction | SensorBatchPrediction
    if readings.single:
        body = SensorPrediction.of(
            entry.line, entry.version, answer.out, answer.threshold, readings.values, features, elapsed,
            readings.sensor_id, ids[0],
        )  # fmt: skip
    else:
        body = SensorBatchPrediction.of(
            entry.line, entry.version, answer.out, answer.threshold, features, elapsed, readings.sensor_id, ids
        )
    _with_stream(body, call)
    timing = f"score;dur={answer.score_ms:.2f}, hop;dur={answer.hop_ms:.2f}, total;dur={elapsed:.2f}"
    return Response(
        body.model_dump_json(exclude_none=True), media_type="application/json", headers={"Server-Timing": timing}
    )


@router.post(
    "/v1/lines/{line}/predict",
    response_model=Prediction | ClassPrediction | SensorPrediction | SensorBatchPrediction,
    response_model_exclude_none=True,
    openapi_extra=PREDICT_BODY,
    summary="Score one part (image lines: multipart file) or sensor readings (sensor lines: JSON)",
)
async def predict(
    entry: LineDep, request: Request, response: Response, services: ServicesDep, heatmap: bool = False
) -> Any:
    started = time.perf_counter()
    if entry.kind is LineKind.SENSOR_ANOMALY:
        return await _sensor_answer(services, entry, request, started)
    return await _one_image(services, entry, request, response, heatmap, started)


@router.post(
    "/v1/lines/{line}/predict/batch",
    response_model=BatchResponse,
    response_model_exclude_none=True,
    openapi_extra=BATCH_FORM,
    summary="Score several parts; each gets its own answer or error",
)
async def predict_batch(
    entry: LineDep, request: Request, services: ServicesDep, heatmap: bool = False
) -> BatchResponse:
    started = time.perf_counter()
    upload = await read_images(request, "files", services.args.max_batch_images, services.args.max_image_bytes)
    results = await services.images.score(entry, [data for _, data in upload.files], heatmap)
    items = []
    for index, ((name, data), result) in enumerate(zip(upload.files, results, strict=True)):
        if isinstance(result, ItemError):
            failure = ItemFailure(status=result.status, detail=result.detail)
            items.append(BatchItem(index=index, filename=name, error=failure))
        else:
            answer = await _answer(services, entry, result, data, started, upload.sensor_id, heatmap, name)
            items.append(BatchItem(index=index, filename=name, prediction=answer))
    return BatchResponse(
        line=entry.line,
        model_version=entry.version,
        results=items,
        inference_time_ms=round((time.perf_counter() - started) * 1000, 3),
    )


async def default_line(
    request: Request, services: Services, who: Principal | None, kinds: tuple[LineKind, ...], setting: str, route: str
) -> LineEntry:
    """The line a plain route answers: the configured one, else the store's only line of the first of
    ``kinds`` that has exactly one (an anomaly line keeps answering when a classifier line is added)."""
    configured: str | None = getattr(services.args, setting)
    if configured is not None:
        entry = await line_for(request, configured, services, who)
        if entry.kind not in kinds:
            wanted = " or ".join(kinds)
            raise APIError(409, f"{setting} {configured!r} is a {entry.kind} line: POST {route} takes {wanted} lines")
        return entry
    entries = await services.lines.all()  # the same default line for every key
    counts = []
    for kind in kinds:
        lines = [e for e in entries if e.kind is kind]
        if len(lines) == 1:
            return await line_for(request, lines[0].line, services, who)
        counts.append(f"{len(lines)} {kind}")
    raise APIError(
        409,
        f"no {setting} is configured and the store holds {' and '.join(counts)} lines: "
        f"set {setting} in serve_config.yaml, or POST to /v1/lines/{{line}}/predict",
    )


@router.post(
    "/predict",
    response_model=SimplePrediction | SimpleClassPrediction,
    response_model_exclude_none=True,
    openapi_extra=IMAGE_FORM,
    summary="Score one part on the default line",
)
async def predict_default(
    request: Request, response: Response, services: ServicesDep, who: CallerDep
) -> SimplePrediction | SimpleClassPrediction:
    started = time.perf_counter()
    entry = await default_line(request, services, who, IMAGE_KINDS, "default_line", "/predict")
    return simple(await _one_image(services, entry, request, response, False, started))


@router.post(
    "/anomaly",
    response_model=AnomalyAnswer,
    openapi_extra=SENSOR_BODY,
    summary="Score sensor readings on the default sensor line",
)
async def anomaly(request: Request, services: ServicesDep, who: CallerDep) -> AnomalyAnswer:
    started = time.perf_counter()
    kinds = (LineKind.SENSOR_ANOMALY,)
    entry = await default_line(request, services, who, kinds, "default_sensor_line", "/anomaly")
    call = await _readings(services, entry, request, started)
    out, ids = call.answer.out, call.ids
    if call.readings.single:
        return AnomalyAnswer(score=float(out.scores[0]), status=status(bool(out.is_anomaly[0])), prediction_id=ids[0])
    return AnomalyAnswer(score=out.scores.tolist(), status=statuses(out.is_anomaly), prediction_id=ids)
