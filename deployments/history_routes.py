"""The ingress's operations routes: history (pages, CSV, the plain ``/prediction_history``), feedback,
stats, the score histogram, the threshold suggestion and drift. They parse and check the request, ask the
Recorder (which owns the database) and shape the answer; the queries and the math live in ``history/``
and ``models/``.

A mixin of :class:`deployments.ingress.Ingress` (Serve serves inherited route methods). No
``from __future__ import annotations``: FastAPI reads the route annotations.
"""

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse, StreamingResponse
from ray.serve.handle import DeploymentHandle

from lineguard.deployments.config import AppArgs
from lineguard.deployments.errors import APIError
from lineguard.deployments.lines import LineDirectory, LineEntry
from lineguard.deployments.messages import ItemError
from lineguard.deployments.outbox import Outbox
from lineguard.deployments.records import CSV_COLUMNS, api_record, csv_values, plain_record
from lineguard.deployments.schemas import Feedback, FeedbackRecorded, HistoryPage
from lineguard.deployments.security import check_every_line, check_line
from lineguard.history.db import MAX_PAGE, HistoryQuery
from lineguard.history.ids import decode_cursor, encode_cursor, id_time, is_id, parse_window
from lineguard.history.reports import ANOMALY_LABELS
from lineguard.models.plots import binned_histogram

router = APIRouter()
Call = Callable[[DeploymentHandle[Any]], Awaitable[Any]]
LIMIT = Query(100, ge=1, le=MAX_PAGE, description=f"records per page (at most {MAX_PAGE})")
CURSOR = Query(None, max_length=64, description="next_cursor of the previous page")
WINDOW = Query("24h", max_length=16, description="how far back: 15m, 24h, 7d, 2w")
SINCE = Query(None, description="ISO 8601 time or epoch seconds (inclusive)")
UNTIL = Query(None, description="ISO 8601 time or epoch seconds (exclusive)")


def _since(window: str) -> float:
    try:
        return time.time() - parse_window(window)
    except ValueError as err:
        raise APIError(422, str(err)) from err


def _after(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except ValueError as err:
        raise APIError(422, str(err)) from err


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _next_page(recorder: DeploymentHandle[Any], query: HistoryQuery, after: str) -> Awaitable[Any]:
    return recorder.page.remote(query, after, MAX_PAGE)


def feedback_labels(entry: LineEntry) -> tuple[str, ...]:
    classifier = entry.card.classifier
    return tuple(classifier.classes) if classifier is not None else ANOMALY_LABELS


class HistoryRoutes:
    args: AppArgs
    lines: LineDirectory
    recorder: DeploymentHandle[Any] | None
    outbox: Outbox | None

    async def _history(self, call: Call, timeout_s: float = 30.0) -> Any:
        """Ask the Recorder; 503 while the history database cannot answer, 4xx for what it refuses."""
        if self.recorder is None:
            raise APIError(
                409, "the prediction history is off in this service: set history.enabled in serve_config.yaml"
            )
        try:
            result = await asyncio.wait_for(call(self.recorder), timeout_s)
        except Exception as err:
            raise APIError(
                503,
                f"the history database is not answering ({type(err).__name__}): retry shortly",
                {"Retry-After": "2"},
            ) from err
        if isinstance(result, ItemError):
            raise APIError(result.status, result.detail)
        return result

    def _query(
        self,
        line: str | None,
        sensor_id: str | None,
        since: datetime | None,
        until: datetime | None,
        decision: str | None,
        labelled: bool | None,
    ) -> HistoryQuery:
        start, end = _epoch(since), _epoch(until)
        if start is not None and end is not None and end <= start:
            raise APIError(422, f"until ({until}) must be after since ({since})")
        return HistoryQuery(line, sensor_id, start, end, decision, labelled)

    @router.get(
        "/v1/lines/{line}/history",
        response_model=HistoryPage,
        summary="A line's predictions, newest first, with filters and cursor pagination",
    )
    async def history(
        self,
        line: str,
        sensor_id: str | None = Query(None, max_length=200),
        since: datetime | None = SINCE,
        until: datetime | None = UNTIL,
        decision: str | None = Query(None, max_length=64, description="ok, ng, or a class"),
        labelled: bool | None = Query(None, description="only parts with (true) or without (false) feedback"),
        limit: int = LIMIT,
        cursor: str | None = CURSOR,
    ) -> HistoryPage:
        entry = await self.lines.get(line)
        query = self._query(entry.line, sensor_id, since, until, decision, labelled)
        after = _after(cursor)
        rows = await self._history(lambda r: r.page.remote(query, after, limit))
        more = len(rows) == limit
        return HistoryPage(
            records=[api_record(row) for row in rows], next_cursor=encode_cursor(rows[-1]["id"]) if more else None
        )

    @router.get(
        "/v1/lines/{line}/history.csv",
        response_class=StreamingResponse,
        summary="A line's predictions as CSV (same filters as /history; newest first)",
    )
    async def history_csv(
        self,
        line: str,
        sensor_id: str | None = Query(None, max_length=200),
        since: datetime | None = SINCE,
        until: datetime | None = UNTIL,
        decision: str | None = Query(None, max_length=64),
        labelled: bool | None = None,
    ) -> StreamingResponse:
        entry = await self.lines.get(line)
        query = self._query(entry.line, sensor_id, since, until, decision, labelled)
        first = await self._history(lambda r: r.page.remote(query, None, MAX_PAGE))  # errors before the 200
        cap = self.args.history.export_max_rows

        async def chunks() -> AsyncIterator[str]:
            rows, sent = first, 0
            while True:
                buffer = io.StringIO()
                writer = csv.writer(buffer)
                if sent == 0:
                    writer.writerow(CSV_COLUMNS)
                rows = rows[: cap - sent]
                writer.writerows(csv_values(row) for row in rows)
                sent += len(rows)
                yield buffer.getvalue()
                if len(rows) < MAX_PAGE or sent >= cap:
                    return
                rows = await self._history(partial(_next_page, query=query, after=rows[-1]["id"]))

        name = f"{entry.line}-history.csv"
        return StreamingResponse(
            chunks(), media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    @router.get(
        "/prediction_history",
        response_model=list[dict[str, Any]],
        summary="Every line's predictions, newest first (timestamp, sensor_id, prediction, confidence, severity)",
    )
    async def prediction_history(
        self, response: Response, limit: int = LIMIT, cursor: str | None = CURSOR
    ) -> list[dict[str, Any]]:
        check_every_line("GET /prediction_history")
        after = _after(cursor)
        rows = await self._history(lambda r: r.page.remote(HistoryQuery(), after, limit))
        if len(rows) == limit:
            next_cursor = encode_cursor(rows[-1]["id"])
            response.headers["X-Next-Cursor"] = next_cursor
            response.headers["Link"] = f'</prediction_history?limit={limit}&cursor={next_cursor}>; rel="next"'
        return [plain_record(row) for row in rows]

    async def _find(self, prediction_id: str) -> dict[str, Any]:
        if not is_id(prediction_id):
            raise APIError(422, f"{prediction_id[:40]!r} is not a prediction id (26 characters, as answers give them)")
        if self.outbox is not None:
            await self.outbox.flush()  # a prediction this replica just gave is written first
        for _ in range(6):
            row = await self._history(lambda r: r.get.remote(prediction_id))
            if row is not None:
                check_line(row["line"])
                return dict(row)
            if time.time() - id_time(prediction_id) > 5:  # not one still on its way from another replica
                break
            await asyncio.sleep(0.3)
        raise APIError(404, f"no prediction with id {prediction_id!r}")

    @router.get("/v1/predictions/{prediction_id}", summary="One recorded prediction with its feedback")
    async def prediction(self, prediction_id: str) -> dict[str, Any]:
        return api_record(await self._find(prediction_id))

    @router.post(
        "/v1/predictions/{prediction_id}/feedback",
        response_model=FeedbackRecorded,
        summary="An operator's verdict on a prediction: ok / ng, or the true class",
    )
    async def feedback(self, prediction_id: str, body: Feedback) -> FeedbackRecorded:
        row = await self._find(prediction_id)
        entry = await self.lines.get(row["line"])
        allowed = feedback_labels(entry)
        if body.label not in allowed:
            raise APIError(422, f"label {body.label!r} is not one of line {entry.line!r}'s labels: {list(allowed)}")
        updated = await self._history(lambda r: r.feedback.remote(prediction_id, body.label, body.operator, body.note))
        if updated is None:
            raise APIError(404, f"no prediction with id {prediction_id!r}")
        return FeedbackRecorded(
            prediction_id=prediction_id,
            line=row["line"],
            decision=row["decision"],
            label=body.label,
            agrees=row["decision"] == body.label,
        )

    @router.get("/v1/lines/{line}/stats", summary="Counts, anomaly rate, latency, and miss / over-detection rates")
    async def stats(self, line: str, window: str = WINDOW) -> dict[str, Any]:
        entry = await self.lines.get(line)
        since = _since(window)
        result: dict[str, Any] = await self._history(lambda r: r.stats.remote(entry.line, entry.version, since))
        return {"window": window, **result}

    async def _histogram(self, line: str, window: str) -> dict[str, Any]:
        entry = await self.lines.get(line)
        since = _since(window)
        result: dict[str, Any] = await self._history(lambda r: r.histogram.remote(entry.line, entry.version, since))
        return {"window": window, **result}

    @router.get("/v1/lines/{line}/histogram", summary="Score histogram by the operators' labels, with the threshold")
    async def histogram(self, line: str, window: str = WINDOW) -> dict[str, Any]:
        return await self._histogram(line, window)

    @router.get(
        "/v1/lines/{line}/histogram.png",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
        summary="The score histogram as a picture",
    )
    async def histogram_png(self, line: str, window: str = WINDOW) -> Response:
        h = await self._histogram(line, window)
        title = f"{h['line']} {h['version']}: last {window}, {h['n']} parts"
        png = await asyncio.to_thread(binned_histogram, h["edges"], h["counts"], h["threshold"], title, h["score"])
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @router.get(
        "/v1/lines/{line}/threshold/suggestion",
        summary="The threshold that meets a target miss or over-detection rate on the operators' feedback",
    )
    async def threshold_suggestion(
        self,
        line: str,
        target_miss_rate: float | None = Query(None, ge=0, lt=1),
        target_over_detection_rate: float | None = Query(None, ge=0, lt=1),
        window: str = Query("30d", max_length=16),
    ) -> dict[str, Any]:
        if (target_miss_rate is None) == (target_over_detection_rate is None):
            raise APIError(422, "give exactly one of target_miss_rate and target_over_detection_rate (e.g. 0.01)")
        entry = await self.lines.get(line)
        since = _since(window)
        result: dict[str, Any] = await self._history(
            lambda r: r.suggestion.remote(
                entry.line, entry.version, since, target_miss_rate, target_over_detection_rate
            )
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
        self,
        line: str,
        threshold: float | None = Query(None, allow_inf_nan=False, description="default: the current threshold"),
        window: str = Query("30d", max_length=16, description="feedback this far back"),
    ) -> dict[str, Any]:
        entry = await self.lines.get(line)
        since = _since(window)
        result: dict[str, Any] = await self._history(
            lambda r: r.rates.remote(entry.line, entry.version, since, threshold)
        )
        return {"window": window, **result}

    @router.get(
        "/v1/lines/{line}/drift", summary="Recent scores and inputs against the calibration: ok / warning / drift"
    )
    async def drift(self, line: str) -> JSONResponse:
        entry = await self.lines.get(line)
        result = await self._history(lambda r: r.drift.remote(entry.line, entry.version))
        return JSONResponse(result)
