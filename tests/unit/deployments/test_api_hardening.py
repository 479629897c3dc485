"""The HTTP API against what a careless or hostile client sends, without Ray: spreadsheet formulas and
control characters in stored text, clients that leave or trickle, too many uploads at once, the audit trail
of verdicts, and heatmaps that never decode the full-size original in the ingress."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import logging
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lineguard.deployments.api import create_api
from lineguard.deployments.keys import KeyRing
from lineguard.deployments.services import Services
from tests.support import BRIGHT, DARK, IMAGE_LINE, SENSOR_LINE, FakeHandle, fake_services, grey_png


def test_the_csv_export_never_hands_a_spreadsheet_a_formula(api: tuple[TestClient, Services, FakeHandle]) -> None:
    client, _, _ = api
    formula = "=cmd|' /C calc'!A0"
    answer = client.post(
        f"/v1/lines/{IMAGE_LINE}/predict", files={"file": ("+SUM(A1).png", DARK)}, data={"sensor_id": formula}
    )
    assert answer.status_code == 200, answer.text
    prediction = answer.json()["prediction_id"]
    note = client.post(f"/v1/predictions/{prediction}/feedback", json={"label": "ok", "note": "@SUM(1+1)"})
    assert note.status_code == 200
    rows = list(csv.DictReader(io.StringIO(client.get(f"/v1/lines/{IMAGE_LINE}/history.csv").text)))
    (row,) = rows
    assert row["sensor_id"] == "'" + formula and row["source"] == "'+SUM(A1).png"
    assert row["label_note"] == "'@SUM(1+1)" and float(row["score"]) >= 0  # numbers stay numbers
    assert client.get(f"/v1/predictions/{prediction}").json()["sensor_id"] == formula  # stored as sent


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"files": {"file": ("p.png", DARK)}, "data": {"sensor_id": "cam\x00\x1b[31m"}},
        {"json": {"values": [1.0] * 12, "sensor_id": "cam\x1b[31m"}},
    ],
    ids=["form", "json"],
)
def test_control_characters_in_a_sensor_id_are_refused(
    api: tuple[TestClient, Services, FakeHandle], request_kwargs: dict[str, Any]
) -> None:
    client, _, _ = api
    line = SENSOR_LINE if "json" in request_kwargs else IMAGE_LINE
    answer = client.post(f"/v1/lines/{line}/predict", **request_kwargs)
    assert answer.status_code == 422 and "sensor_id contains the control character U+" in answer.json()["detail"]


def test_a_file_name_with_control_characters_is_escaped_not_refused(
    api: tuple[TestClient, Services, FakeHandle],
) -> None:
    client, _, _ = api
    answer = client.post(f"/v1/lines/{IMAGE_LINE}/predict", files={"file": ("a\x1b[2Jb.png", DARK)})
    assert answer.status_code == 200
    stored = client.get(f"/v1/predictions/{answer.json()['prediction_id']}").json()
    assert stored["source"] == "a\\x1b[2Jb.png"


def test_a_verdict_with_control_characters_is_refused(api: tuple[TestClient, Services, FakeHandle]) -> None:
    client, _, _ = api
    prediction = client.post(f"/v1/lines/{IMAGE_LINE}/predict", files={"file": ("p.png", DARK)}).json()
    url = f"/v1/predictions/{prediction['prediction_id']}/feedback"
    refused = client.post(url, json={"label": "ok", "operator": "ana\x1b[31m"})
    assert refused.status_code == 422 and "U+001B" in refused.text
    assert client.post(url, json={"label": "ok", "note": "two\nlines"}).status_code == 200


def test_a_client_that_goes_away_is_not_a_server_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    services, _ = fake_services(tmp_path)
    app = create_api(services)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}  # the client left before sending its body

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": f"/v1/lines/{IMAGE_LINE}/predict", "raw_path": b"", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"multipart/form-data; boundary=xyz"), (b"content-length", b"100000")],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
    assert "Traceback" not in caplog.text


def test_every_verdict_is_kept_with_the_key_it_came_with(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    services, _ = fake_services(tmp_path)
    ring = KeyRing(services.store)
    camera = ring.create("camera")[0]
    lead_key, lead = ring.create("lead", "admin")
    night_key, night = ring.create("night-shift", "admin")
    with TestClient(create_api(services)) as client, caplog.at_level(logging.INFO, logger="ray.serve"):
        part = client.post(
            f"/v1/lines/{IMAGE_LINE}/predict", files={"file": ("p.png", BRIGHT)}, headers={"X-API-Key": camera}
        )
        prediction = part.json()["prediction_id"]
        url = f"/v1/predictions/{prediction}/feedback"
        first = client.post(url, json={"label": "ng", "operator": "ana"}, headers={"X-API-Key": lead_key})
        second = client.post(url, json={"label": "ok", "note": "re-inspected"}, headers={"X-API-Key": night_key})
        assert first.status_code == second.status_code == 200
        record = client.get(f"/v1/predictions/{prediction}", headers={"X-API-Key": camera}).json()["feedback"]
        assert record["label"] == "ok" and record["key"] == night.id and record["by"] == "night-shift"
        trail = client.get(f"/v1/predictions/{prediction}/verdicts", headers={"X-API-Key": camera}).json()
        assert [(v["label"], v["by"], v["key"]) for v in trail] == [
            ("ng", "ana", lead.id),
            ("ok", "night-shift", night.id),
        ]
        assert trail[1]["note"] == "re-inspected"
    assert f"key {lead.id} (lead) POST {url} 200" in caplog.text  # the access line names the key


MULTIPART_HEAD = (
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="part.png"\r\nContent-Type: image/png\r\n\r\n'
)


@pytest.mark.parametrize(
    ("line", "content_type", "first"),
    [
        (SENSOR_LINE, b"application/json", b"{"),
        (IMAGE_LINE, b"multipart/form-data; boundary=b", MULTIPART_HEAD),  # once a 422 "malformed multipart body"
    ],
    ids=["json", "multipart"],
)
def test_a_body_that_trickles_in_gets_a_408_in_json(
    tmp_path: Path, line: str, content_type: bytes, first: bytes
) -> None:
    # 300 clients sending a byte a second once held every ingress slot, even GET /v1/lines's
    services, _ = fake_services(tmp_path, body_timeout_s=0.5)
    app = create_api(services)
    sent: list[dict[str, Any]] = []
    chunks = iter([first])

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.2)
        return {"type": "http.request", "body": next(chunks, b"x"), "more_body": True}  # a byte now and then

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": f"/v1/lines/{line}/predict", "raw_path": b"", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", content_type)],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    assert sent[0]["status"] == 408, sent
    assert "body_timeout_s" in json.loads(sent[1]["body"])["detail"]


def test_beyond_max_in_flight_an_upload_gets_a_json_503_and_reads_still_pass() -> None:
    from lineguard.deployments.api.security import AdmissionMiddleware

    release = asyncio.Event()

    async def slow_route(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["method"] == "POST":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    admission = AdmissionMiddleware(slow_route, limit=lambda: 2)

    async def call(method: str) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        await admission({"type": "http", "method": method, "path": "/v1/lines/a/predict"}, None, send)
        return sent

    async def crowd() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[list[dict[str, Any]]]]:
        held = [asyncio.ensure_future(call("POST")) for _ in range(2)]
        await asyncio.sleep(0.05)
        refused, read = await call("POST"), await call("GET")
        release.set()
        return refused, read, list(await asyncio.gather(*held))

    refused, read, held = asyncio.run(crowd())
    assert refused[0]["status"] == 503 and (b"retry-after", b"1") in refused[0]["headers"]
    assert "at capacity (2 requests in flight" in json.loads(refused[1]["body"])["detail"]
    assert read[0]["status"] == 200 and [h[0]["status"] for h in held] == [200, 200]
    assert admission.in_flight == 0


def test_a_heatmap_is_drawn_without_decoding_the_original_in_the_ingress(
    api: tuple[TestClient, Services, FakeHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the ingress decoded every full-size original again to draw its heatmap (a 40 MP frame: 120 MB it kept)
    from lineguard.deployments.api import predict

    def never(*_: Any) -> None:
        raise AssertionError("the ingress decoded the original image")

    monkeypatch.setattr(predict, "open_image", never)
    client, _, _ = api
    answer = client.post(f"/v1/lines/{IMAGE_LINE}/predict?heatmap=true", files={"file": ("p.png", grey_png(200, 300))})
    assert answer.status_code == 200, answer.text
    drawn = Image.open(io.BytesIO(base64.b64decode(answer.json()["heatmap_png"])))
    assert drawn.size == (64, 64)  # over the resized input the Scorer sent back
    plain = client.post(f"/v1/lines/{IMAGE_LINE}/predict", files={"file": ("p.png", grey_png(200, 300))})
    assert plain.status_code == 200 and "heatmap_png" not in plain.json()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--b\r\n"),  # no boundary
        ("multipart/form-data; boundary=b", b"--b\r\nno colon in this header line\r\n\r\nxx\r\n--b--\r\n"),
    ],
    ids=["no-boundary", "bad-part-header"],
)
def test_a_malformed_multipart_body_is_a_422_that_says_so(
    api: tuple[TestClient, Services, FakeHandle], content_type: str, body: bytes
) -> None:
    client, _, _ = api
    answer = client.post(f"/v1/lines/{IMAGE_LINE}/predict", content=body, headers={"content-type": content_type})
    assert answer.status_code == 422 and "multipart" in answer.json()["detail"], answer.text
