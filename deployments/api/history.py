"""The operations routes: history (pages, CSV, the plain ``/prediction_history``), feedback, stats, the score
histogram, the threshold suggestion and rates, and drift. They parse and check the request, ask the
Recorder (which owns the database) and shape the answer; the queries and the math live in
``lineguard.history`` and ``lineguard.models``.

No ``from __future__ import annotations``: FastAPI reads the routes' annotations at import.
"""

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from lineguard.deployments.api.deps import CallerDep, HistoryDep, LineDep, ServicesDep, line_for
from lineguard.deployments.api.errors import APIError
from lineguard.deployments.api.schemas import Feedback, FeedbackRecorded, HistoryPage
from lineguard.deployments.api.security import check_every_line
from lineguard.deployments.records import CSV_COLUMNS, HistoryRecord, PlainRecord, Verdict, csv_values, iso
from lineguard.errors import ConfigError
from lineguard.history.db import MAX_PAGE, HistoryQuery
from lineguard.history.ids import decode_cursor, encode_cursor, parse_window
from lineguard.history.rows import StoredPrediction, VerdictEntry
from lineguard.models.visualize import binned_histogram

router = APIRouter()
LIMIT = Query(100, ge=1, le=MAX_PAGE, description=f"records per page (at most {MAX_PAGE})")
CURSOR = Query(None, max_length=64, description="next_cursor of the previous page")
WINDOW = Query("24h", max_length=16, description="how far back: 15m, 24h, 7d, 2w")
SINCE = Query(None, description="ISO 8601 time or epoch seconds (inclusive)")
UNTIL = Query(None, description="ISO 8601 time or epoch seconds (exclusive)")
SENSOR = Query(None, max_length=200)
DECISION = Query(None, max_length=64, description="ok, ng, or a class")
LABELLED = Query(None, description="only parts with (true) or without (false) feedback")


def _since(window: str) -> float:
    return time.time() - parse_window(window)  # a ConfigError (422) names a malformed window


def _after(cursor: str | None) -> str | None:
    return None if cursor is None else decode_cursor(cursor)  # a ConfigError (422) names a bad cursor


async def line_query(
    entry: LineDep,
    sensor_id: str | None = SENSOR,
    since: datetime | None = SINCE,
    until: datetime | None = UNTIL,
    decision: str | None = DECISION,
    labelled: bool | None = LABELLED,
) -> HistoryQuery:
    """The filters of a line's history routes, as one query (a dependency of both)."""
    start = None if since is None else since.timestamp()
    end = None if until is None else until.timestamp()
    if start is not None and end is not None and end <= start:
        raise ConfigError(f"until ({until}) must be after since ({since})")
    return HistoryQuery(entry.line, sensor_id, start, end, decision, labelled)


QueryDep = Annotated[HistoryQuery, Depends(line_query)]


@router.get(
    "/v1/lines/{line}/history",
    response_model=HistoryPage,
    summary="A line's predictions, newest first, with filters and cursor pagination",
)
async def history(query: QueryDep, history: HistoryDep, limit: int = LIMIT, cursor: str | None = CURSOR) -> HistoryPage:
    after = _after(cursor)
    rows: list[StoredPrediction] = await history.ask(lambda r: r.page.remote(query, after, limit))
    more = len(rows) == limit
    return HistoryPage(
        records=[HistoryRecord.of(row) for row in rows], next_cursor=encode_cursor(rows[-1].id) if more else None
    )


@router.get(
    "/v1/lines/{line}/history.csv",
    response_class=StreamingResponse,
    summary="A line's predictions as CSV (same filters as /history; newest first)",
)
async def history_csv(query: QueryDep, history: HistoryDep) -> StreamingResponse:
    pages = history.pages(query, history.args.export_max_rows)
    first: list[StoredPrediction] = await anext(pages, [])  # a failure is an error answer, before the 200 is sent

    async def chunks() -> AsyncIterator[str]:
        page = first
        header = True
        while True:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            if header:
                writer.writerow(CSV_COLUMNS)
                header = False
            writer.writerows(csv_values(row) for row in page)
            yield buffer.getvalue()
            page = await anext(pages, [])
            if not page:
                return

    name = f"{query.line}-history.csv"
    return StreamingResponse(
        chunks(), media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )


@router.get(
    "/prediction_history",
    response_model=list[PlainRecord],
    summary="Every line's predictions, newest first (timestamp, sensor_id, prediction, confidence, severity)",
)
async def prediction_history(
    response: Response, history: HistoryDep, who: CallerDep, limit: int = LIMIT, cursor: str | None = CURSOR
) -> list[PlainRecord]:
    check_every_line(who, "GET /prediction_history")
    after = _after(cursor)
    rows: list[StoredPrediction] = await history.ask(lambda r: r.page.remote(HistoryQuery(), after, limit))
    if len(rows) == limit:
        next_cursor = encode_cursor(rows[-1].id)
        response.headers["X-Next-Cursor"] = next_cursor
        response.headers["Link"] = f'</prediction_history?limit={limit}&cursor={next_cursor}>; rel="next"'
    return [PlainRecord.of(row) for row in rows]


@router.get(
    "/v1/predictions/{prediction_id}", response_model=HistoryRecord, summary="One recorded prediction with its feedback"
)
async def prediction(
    prediction_id: str, request: Request, services: ServicesDep, history: HistoryDep, who: CallerDep
) -> HistoryRecord:
    row = await history.find(prediction_id)
    await line_for(request, row.line, services, who)  # the caller's key may be limited to other lines
    return HistoryRecord.of(row)


@router.get(
    "/v1/predictions/{prediction_id}/verdicts",
    response_model=list[Verdict],
    summary="Every verdict given on a prediction, oldest first, with the API key each came with (the audit trail)",
)
async def verdicts(
    prediction_id: str, request: Request, services: ServicesDep, history: HistoryDep, who: CallerDep
) -> list[Verdict]:
    row = await history.find(prediction_id)
    await line_for(request, row.line, services, who)
    trail: list[VerdictEntry] = await history.ask(lambda r: r.verdicts.remote(prediction_id))
    return [Verdict(label=v.label, at=iso(v.at), by=v.operator or v.key_name, key=v.key_id, note=v.note) for v in trail]


@router.post(
    "/v1/predictions/{prediction_id}/feedback",
    response_model=FeedbackRecorded,
    summary="An operator's verdict on a prediction: ok / ng, or the true class",
)
async def feedback(
    prediction_id: str, body: Feedback, request: Request, services: ServicesDep, history: HistoryDep, who: CallerDep
) -> FeedbackRecorded:
    row = await history.find(prediction_id)
    entry = await line_for(request, row.line, services, who)
    allowed = entry.card.feedback_labels()
    if body.label not in allowed:
        raise APIError(422, f"label {body.label!r} is not one of line {entry.line!r}'s labels: {list(allowed)}")
    verdict = VerdictEntry(
        body.label,
        time.time(),
        body.operator,
        None if who is None else who.id,
        None if who is None else who.name,
        body.note,
    )
    updated = await history.ask(lambda r: r.feedback.remote(prediction_id, verdict))
    if updated is None:
        raise APIError(404, f"no prediction with id {prediction_id!r}")
    return FeedbackRecorded(
        prediction_id=prediction_id,
        line=row.line,
        decision=row.decision,
        label=body.label,
        agrees=row.decision == body.label,
    )


@router.get("/v1/lines/{line}/stats", summary="Counts, anomaly rate, latency, and miss / over-detection rates")
async def stats(entry: LineDep, history: HistoryDep, window: str = WINDOW) -> dict[str, Any]:
    since = _since(window)
    result: dict[str, Any] = await history.ask(lambda r: r.stats.remote(entry.line, entry.version, since))
    return {"window": window, **result}


async def _histogram(entry: Any, history: Any, window: str) -> dict[str, Any]:
    since = _since(window)
    result: dict[str, Any] = await history.ask(lambda r: r.histogram.remote(entry.line, entry.version, since))
    return {"window": window, **result}


@router.get("/v1/lines/{line}/histogram", summary="Score histogram by the operators' labels, with the threshold")
async def histogram(entry: LineDep, history: HistoryDep, window: str = WINDOW) -> dict[str, Any]:
    return await _histogram(entry, history, window)


@router.get(
    "/v1/lines/{line}/histogram.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
    summary="The score histogram as a picture",
)
async def histogram_png(entry: LineDep, history: HistoryDep, window: str = WINDOW) -> Response:
    h = await _histogram(entry, history, window)
    title = f"{h['line']} {h['version']}: last {window}, {h['n']} parts"
    png = await asyncio.to_thread(binned_histogram, h["edges"], h["counts"], h["threshold"], title, h["score"])
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get(
    "/v1/lines/{line}/threshold/suggestion",
    summary="The threshold that meets a target miss or over-detection rate on the operators' feedback",
)
async def threshold_suggestion(
    entry: LineDep,
    history: HistoryDep,
    target_miss_rate: float | None = Query(None, ge=0, lt=1),
    target_over_detection_rate: float | None = Query(None, ge=0, lt=1),
    window: str = Query("30d", max_length=16),
) -> dict[str, Any]:
    if (target_miss_rate is None) == (target_over_detection_rate is None):
        raise APIError(422, "give exactly one of target_miss_rate and target_over_detection_rate (e.g. 0.01)")
    since = _since(window)
    result: dict[str, Any] = await history.ask(
        lambda r: r.suggestion.remote(entry.line, entry.version, since, target_miss_rate, target_over_detection_rate)
    )
    if result["threshold"] is not None:
        note = f"suggested for {result['target']} {result['target_rate']} from feedback over {window}"
        result["apply"] = {
            "method": "PUT",
            "path": f"/v1/lines/{entry.line}/threshold",
            "body": {"threshold": result["threshold"], "note": note},
        }
    return {"window": window, **result}


@router.get(
    "/v1/lines/{line}/threshold/rates",
    summary="Miss and over-detection rates a threshold would give on the calibration data and the feedback",
)
async def threshold_rates(
    entry: LineDep,
    history: HistoryDep,
    threshold: float | None = Query(None, allow_inf_nan=False, description="default: the current threshold"),
    window: str = Query("30d", max_length=16, description="feedback this far back"),
) -> dict[str, Any]:
    since = _since(window)
    result: dict[str, Any] = await history.ask(lambda r: r.rates.remote(entry.line, entry.version, since, threshold))
    return {"window": window, **result}


@router.get("/v1/lines/{line}/drift", summary="Recent scores and inputs against the calibration: ok / warning / drift")
async def drift(entry: LineDep, history: HistoryDep) -> JSONResponse:
    result = await history.ask(lambda r: r.drift.remote(entry.line, entry.version))
    return JSONResponse(result)
