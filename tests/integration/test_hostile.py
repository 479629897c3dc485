"""Hostile input: malformed requests of every kind get a 4xx JSON error that names the problem, never a
5xx, and the service stays healthy; then a property-based run of the OpenAPI schema finds no 5xx."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis import GenerationMode

from tests.integration.conftest import MAX_IMAGE_BYTES, MAX_REQUEST_BYTES, SENSOR_LINE, Service
from tests.support import bmp_frame, png_header_only, tiff_pages

PREDICT = "/v1/lines/press-a/predict"
SENSOR = f"/v1/lines/{SENSOR_LINE}/predict"


@dataclass(frozen=True)
class Context:
    good: bytes  # a real PNG of the line
    n: int  # values in a reading of the sensor line
    reading: list[float]


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    url: str
    request: Callable[[Context], dict[str, Any]]  # httpx keyword arguments
    status: int
    words: str  # what the error must say


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@cache
def over_limit() -> bytes:
    return bmp_frame(MAX_IMAGE_BYTES + 4 * 1024 * 1024)


def gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "GIF")
    return out.getvalue()


def upload(data: bytes, name: str = "part.png", kind: str = "image/png") -> dict[str, Any]:
    return {"files": {"file": (name, data, kind)}}


def raw(body: bytes, content_type: str) -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": content_type}}


def sensor(body: str | bytes) -> dict[str, Any]:
    return raw(body.encode() if isinstance(body, str) else body, "application/json")


def nested(depth: int) -> str:
    return '{"values": ' + "[" * depth + "]" * depth + "}"


CASES = [
    # --- images -------------------------------------------------------------------------------------
    Case("truncated png", "POST", PREDICT, lambda c: upload(c.good[: len(c.good) // 2]), 422, "truncated"),
    Case("png header, html body", "POST", PREDICT, lambda c: upload(c.good[:40] + b"<html><script>"), 422, "image"),
    Case("gif-javascript polyglot", "POST", PREDICT, lambda c: upload(b"GIF89a/*\x00\x00*/=alert(1);"), 422, "image"),
    Case(
        "svg with a script", "POST", PREDICT, lambda c: upload(b"<svg onload=alert(1)>", "a.svg"), 422, "not an image"
    ),
    Case("zip named png", "POST", PREDICT, lambda c: upload(b"PK\x03\x04" + b"\x00" * 100), 422, "not an image"),
    Case("unsupported gif", "POST", PREDICT, lambda c: upload(gif(), "a.gif", "image/gif"), 422, "unsupported image"),
    Case("zero-byte file", "POST", PREDICT, lambda c: upload(b""), 422, "empty file"),
    Case("pixel bomb header", "POST", PREDICT, lambda c: upload(png_header_only(60_000, 60_000)), 413, "pixels"),
    Case("zero-width png", "POST", PREDICT, lambda c: upload(png_header_only(0, 10)), 422, "image"),
    Case("file over the limit", "POST", PREDICT, lambda c: upload(over_limit()), 413, f"{MAX_IMAGE_BYTES}"),
    Case("body over the limit", "POST", PREDICT, lambda c: upload(b"\x00" * (MAX_REQUEST_BYTES + 1)), 413, "limit"),
    Case("text/plain body", "POST", PREDICT, lambda c: raw(b"hello", "text/plain"), 415, "multipart/form-data"),
    Case("xml body", "POST", PREDICT, lambda c: raw(b"<a/>", "application/xml"), 415, "multipart/form-data"),
    Case("no content type", "POST", PREDICT, lambda c: {"content": c.good}, 422, "multipart/form-data"),
    Case("json to an image line", "POST", PREDICT, lambda c: {"json": {"values": [1]}}, 422, "image line"),
    Case("form without a file", "POST", PREDICT, lambda c: {"data": {"x": "1"}}, 415, "multipart/form-data"),
    Case(
        "wrong file field",
        "POST",
        PREDICT,
        lambda c: {"files": {"image": ("a.png", c.good, "image/png")}},
        422,
        "no file field named 'file'",
    ),
    Case(
        "file field as text",
        "POST",
        PREDICT,
        lambda c: {"files": {"file": (None, "just text")}},
        422,
        "must be a file upload",
    ),
    Case(
        "multipart without boundary",
        "POST",
        PREDICT,
        lambda c: raw(b"--x\r\n\r\n", "multipart/form-data"),
        422,
        "multipart",
    ),
    Case(
        "two files on a single predict",
        "POST",
        PREDICT,
        lambda c: {"files": [("file", ("a.png", c.good, "image/png"))] * 2},
        413,
        "over the limit of 1",
    ),
    Case(
        "batch over the limit",
        "POST",
        f"{PREDICT}/batch",
        lambda c: {"files": [("files", ("a.png", c.good, "image/png"))] * 33},
        413,
        "over the limit of 32",
    ),
    Case("heatmap not a bool", "POST", f"{PREDICT}?heatmap=maybe", lambda c: upload(c.good), 422, "heatmap"),
    Case(
        "sensor_id too long",
        "POST",
        PREDICT,
        lambda c: {"files": {"file": ("a.png", c.good, "image/png")}, "data": {"sensor_id": "c" * 300}},
        422,
        "sensor_id",
    ),
    Case(
        "sensor_id with control characters",
        "POST",
        PREDICT,
        lambda c: {"files": {"file": ("a.png", c.good, "image/png")}, "data": {"sensor_id": "cam\x00\x1b[31m"}},
        422,
        "control character U+0000",
    ),
    Case(
        "tiff whose only page has no size",
        "POST",
        PREDICT,
        lambda c: upload(tiff_pages(1, broken_last=True), "a.tif", "image/tiff"),
        422,
        "not an image",
    ),
    Case(
        "tiff cut inside its first page",
        "POST",
        PREDICT,
        lambda c: upload(tiff_pages(3)[:40], "a.tif", "image/tiff"),
        422,
        "not an image",
    ),
    Case(
        "heatmap on a classifier",
        "POST",
        "/v1/lines/sorter-1/predict?heatmap=true",
        lambda c: upload(c.good),
        422,
        "classifier",
    ),
    Case("image to a sensor line", "POST", SENSOR, lambda c: upload(c.good), 415, "sensor line"),
    # --- sensor readings ----------------------------------------------------------------------------
    Case("NaN", "POST", SENSOR, lambda c: sensor('{"values": [NaN' + ", 1" * (c.n - 1) + "]}"), 422, "NaN"),
    Case("Infinity", "POST", SENSOR, lambda c: sensor('{"values": [Infinity' + ", 1" * (c.n - 1) + "]}"), 422, "NaN"),
    Case("1e999", "POST", SENSOR, lambda c: sensor('{"values": [1e999' + ", 1" * (c.n - 1) + "]}"), 422, "JSON"),
    Case(
        "huge integer",
        "POST",
        SENSOR,
        lambda c: sensor('{"values": [' + "9" * 400 + ", 1" * (c.n - 1) + "]}"),
        422,
        "JSON",
    ),
    Case("short reading", "POST", SENSOR, lambda c: {"json": {"values": c.reading[:-1]}}, 422, "expects"),
    Case("string value", "POST", SENSOR, lambda c: {"json": {"values": ["a", *c.reading[1:]]}}, 422, "JSON string"),
    Case("boolean value", "POST", SENSOR, lambda c: {"json": {"values": [True, *c.reading[1:]]}}, 422, "boolean"),
    Case("null value", "POST", SENSOR, lambda c: {"json": {"values": [None, *c.reading[1:]]}}, 422, "null"),
    Case("deeply nested json", "POST", SENSOR, lambda c: sensor(nested(100_000)), 422, "JSON"),
    Case(
        "json over the limit",
        "POST",
        SENSOR,
        lambda c: sensor(b"[" + b"1," * (MAX_REQUEST_BYTES // 2) + b"1]"),
        413,
        "limit",
    ),
    Case(
        "too many readings", "POST", SENSOR, lambda c: {"json": {"values": [c.reading] * 10_001}}, 422, "over the limit"
    ),
    Case("unknown field", "POST", SENSOR, lambda c: {"json": {"values": c.reading, "x": 1}}, 422, "unknown field"),
    Case(
        "values and features",
        "POST",
        SENSOR,
        lambda c: {"json": {"values": c.reading, "features": {}}},
        422,
        "exactly one",
    ),
    Case("missing feature", "POST", SENSOR, lambda c: {"json": {"features": {"nope": 1}}}, 422, "missing feature"),
    Case("empty body", "POST", SENSOR, lambda c: sensor(b""), 422, "empty body"),
    Case(
        "json sensor_id with an escape sequence",
        "POST",
        SENSOR,
        lambda c: {"json": {"values": c.reading, "sensor_id": "cam\x1b[2J"}},
        422,
        "control character U+001B",
    ),
    Case("top-level array", "POST", SENSOR, lambda c: {"json": [c.reading]}, 422, "JSON object"),
    Case("invalid utf-8", "POST", SENSOR, lambda c: sensor(b'{"values": ["\xff\xfe"]}'), 422, "JSON"),
    Case("text to a sensor line", "POST", SENSOR, lambda c: raw(b"1,2,3", "text/csv"), 415, "send JSON"),
    Case("empty values", "POST", SENSOR, lambda c: {"json": {"values": []}}, 422, "non-empty"),
    # --- line names and routes ----------------------------------------------------------------------
    Case("path traversal", "POST", "/v1/lines/..%2F..%2Fetc/predict", lambda c: upload(c.good), 404, "Not Found"),
    Case("hidden-file line", "GET", "/v1/lines/.keys", lambda c: {}, 422, "invalid line name"),
    Case("encoded dot-dot", "GET", "/v1/lines/%2e%2e%5cetc/history", lambda c: {}, 422, "invalid line name"),
    Case(
        "unicode line",
        "POST",
        "/v1/lines/pr%C3%ABss-%CE%B1/predict",
        lambda c: upload(c.good),
        422,
        "invalid line name",
    ),
    Case("null byte line", "GET", "/v1/lines/press%00a", lambda c: {}, 422, "invalid line name"),
    Case("65-character line", "GET", "/v1/lines/" + "a" * 65, lambda c: {}, 422, "invalid line name"),
    Case("unknown line", "POST", "/v1/lines/no-such-line/predict", lambda c: upload(c.good), 404, "GET /v1/lines"),
    Case("wrong method", "DELETE", "/v1/lines/press-a", lambda c: {}, 405, "Method Not Allowed"),
    Case("unknown route", "GET", "/v1/secrets", lambda c: {}, 404, "Not Found"),
    # --- thresholds, feedback, history --------------------------------------------------------------
    Case("NaN threshold", "PUT", "/v1/lines/press-a/threshold", lambda c: sensor('{"threshold": NaN}'), 422, "finite"),
    Case(
        "string threshold",
        "PUT",
        "/v1/lines/press-a/threshold",
        lambda c: {"json": {"threshold": "high"}},
        422,
        "threshold",
    ),
    Case("missing threshold", "PUT", "/v1/lines/press-a/threshold", lambda c: {"json": {}}, 422, "threshold"),
    Case(
        "extra field", "PUT", "/v1/lines/press-a/threshold", lambda c: {"json": {"threshold": 1, "x": 2}}, 422, "extra"
    ),
    Case("malformed json body", "PUT", "/v1/lines/press-a/threshold", lambda c: sensor("{"), 422, "JSON"),
    Case(
        "feedback bad id",
        "POST",
        "/v1/predictions/..%2Fx/feedback",
        lambda c: {"json": {"label": "ok"}},
        404,
        "Not Found",
    ),
    Case(
        "feedback short id",
        "POST",
        "/v1/predictions/abc/feedback",
        lambda c: {"json": {"label": "ok"}},
        422,
        "not a prediction id",
    ),
    Case(
        "feedback unknown id",
        "POST",
        "/v1/predictions/01ARZ3NDEKTSV4RRFFQ69G5FAV/feedback",
        lambda c: {"json": {"label": "ok"}},
        404,
        "no prediction",
    ),
    Case("history bad cursor", "GET", "/v1/lines/press-a/history?cursor=!!", lambda c: {}, 422, "cursor"),
    Case("history limit 0", "GET", "/v1/lines/press-a/history?limit=0", lambda c: {}, 422, "limit"),
    Case("history bad since", "GET", "/v1/lines/press-a/history?since=yesterday", lambda c: {}, 422, "since"),
    Case("stats bad window", "GET", "/v1/lines/press-a/stats?window=forever", lambda c: {}, 422, "window"),
]


@pytest.fixture(scope="module")
def context(service: Service) -> Context:
    good = sorted((service.data / "test" / "good").glob("*.png"))[0].read_bytes()
    with service.client() as client:
        features = client.get(f"/v1/lines/{SENSOR_LINE}").json()["features"]
    return Context(good, len(features), [0.5] * len(features))


def test_at_least_forty_hostile_cases() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_request_gets_a_named_4xx(service: Service, context: Context, case: Case) -> None:
    with service.client() as client:
        response = client.request(case.method, case.url, **case.request(context))
        assert response.status_code == case.status, response.text[:500]
        assert response.headers["content-type"].startswith("application/json"), response.headers
        detail = json.dumps(response.json()["detail"])
        assert case.words.lower() in detail.lower(), detail[:500]


def test_still_healthy_after_the_hostile_requests(service: Service) -> None:
    with service.client() as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        good = sorted((service.data / "test" / "good").glob("*.png"))[0]
        answer = client.post(PREDICT, files={"file": (good.name, good.read_bytes(), "image/png")})
        assert answer.status_code == 200


def test_openapi_schema_fuzzed_without_server_errors(service: Service) -> None:
    """Every operation of the published schema, with valid and invalid data generated from it (schemathesis
    strategies driven by hypothesis): no answer is a 5xx."""
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    unsatisfiable: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                response = case.call(base_url=service.url, timeout=60)
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    errors.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
                    )

            try:
                call()
            except Unsatisfiable:  # no invalid data exists for an operation without inputs
                assert mode is GenerationMode.NEGATIVE, operation.label
                unsatisfiable.append(operation.label)
    print(f"{len(operations)} operations, {sum(statuses.values())} calls, statuses {dict(sorted(statuses.items()))}")
    print(f"no invalid input possible for {unsatisfiable}")
    assert len(operations) >= 19
    assert not errors, errors[:10]
    assert all(400 <= code < 500 or code < 300 for code in statuses)
