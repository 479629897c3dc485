"""The HTTP API without Ray: the real routers, middleware, dependencies, pipelines, Recorder and store,
with fake scoring replicas behind fake handles (FastAPI's TestClient, real HTTP semantics)."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import logging
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lineguard.deployments.api import create_api
from lineguard.deployments.config import AppArgs
from lineguard.deployments.keys import KeyRing
from lineguard.deployments.recorder import Recorder
from lineguard.deployments.services import Services
from lineguard.registry.answers import SensorBatchPrediction, SensorPrediction
from lineguard.registry.store import ModelStore
from lineguard.training.synthetic_sensor import FEATURES
from tests.support import (
    CLASSIFIER_LINE,
    IMAGE_LINE,
    OTHER_BACKBONE_LINE,
    SENSOR_LINE,
    FakeBackbone,
    FakeHandle,
    FakePreprocessor,
    FakeScorer,
    FakeSensorScorer,
    Pinger,
    write_service_lines,
)

RECORDER: Any = Recorder.func_or_class  # type: ignore[attr-defined]  # the class under @serve.deployment


def png(value: int, size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), value).save(buffer, format="PNG")
    return buffer.getvalue()


BRIGHT, DARK = png(230), png(30)  # the fake scorer: bright parts are anomalous


def build(tmp_path: Path, **args: Any) -> tuple[Services, FakeHandle]:
    store = ModelStore(tmp_path / "store")
    write_service_lines(store)
    app_args = AppArgs(
        store=str(store.root),
        backbones=[{"name": "tf_efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "image_size": 64}],
        history={"url": f"sqlite:///{tmp_path / 'history.db'}", "flush_interval_s": 60.0},  # reads do not wait for it
        security={"keys_refresh_s": 0.01},
        **args,
    )
    scorer = FakeHandle(FakeScorer())
    recorder = FakeHandle(RECORDER(app_args.history.model_dump(), str(store.root)))
    services = Services.build(
        app_args, FakeHandle(FakePreprocessor()), [FakeHandle(FakeBackbone())], scorer,
        FakeHandle(FakeSensorScorer(store)), recorder,
    )  # fmt: skip
    services.probes = {name: FakeHandle(Pinger()) for name in services.probes}
    return services, scorer


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Services, FakeHandle]]:
    services, scorer = build(tmp_path, default_line=IMAGE_LINE, default_sensor_line=SENSOR_LINE)
    with TestClient(create_api(services)) as client:
        yield client, services, scorer


def test_an_image_part_is_answered_timed_and_recorded(api: tuple[TestClient, Services, FakeHandle]) -> None:
    client, _, scorer = api
    answer = client.post(
        f"/v1/lines/{IMAGE_LINE}/predict", files={"file": ("a.png", BRIGHT)}, data={"sensor_id": "cam-1"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["line"] == IMAGE_LINE and body["model_version"] == "v1" and body["is_anomaly"] is True
    assert body["threshold"] == 0.5 and body["sensor_id"] == "cam-1" and len(body["prediction_id"]) == 26
    assert "backbone;dur=" in answer.headers["Server-Timing"] and "total;dur=" in answer.headers["Server-Timing"]
    assert scorer.calls == [("__call__", f"{IMAGE_LINE}@v1")]  # routed by the line's model id
    plain = client.post("/predict", files={"file": ("b.png", DARK)})  # the default line
    assert plain.status_code == 200 and plain.json()["is_anomaly"] is False and set(plain.json()) == {
        "anomaly_score", "threshold", "is_anomaly", "line", "model_version", "prediction_id"
    }  # fmt: skip
    assert "total;dur=" in plain.headers["Server-Timing"]  # the plain route kept it too (it used to drop it)
    page = client.get(f"/v1/lines/{IMAGE_LINE}/history").json()  # shows this replica's answers at once
    assert [r["source"] for r in page["records"]] == ["b.png", "a.png"]
    assert page["records"][1]["sensor_id"] == "cam-1" and page["records"][1]["decision"] == "ng"


def test_a_batch_keeps_each_items_own_error(api: tuple[TestClient, Services, FakeHandle]) -> None:
    client, _, _ = api
    files = [("files", ("1.png", BRIGHT)), ("files", ("2.png", b"not an image")), ("files", ("3.png", DARK))]
    answer = client.post(f"/v1/lines/{IMAGE_LINE}/predict/batch", files=files)
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert results[0]["prediction"]["is_anomaly"] is True and results[2]["prediction"]["is_anomaly"] is False
    assert results[1]["error"]["status"] == 422 and "not an image" in results[1]["error"]["detail"]


def test_a_classifier_line_answers_a_class(api: tuple[TestClient, Services, FakeHandle]) -> None:
    client, _, _ = api
    body = client.post(f"/v1/lines/{CLASSIFIER_LINE}/predict", files={"file": ("p.png", BRIGHT)}).json()
    assert body["prediction"] == "bad" and body["is_defect"] is True and body["severity"] == "high"
    assert set(body["probabilities"]) == {"bad", "good"} and body["defect_confidence"] > 0.5
    wrong = client.post(f"/v1/lines/{CLASSIFIER_LINE}/predict?heatmap=true", files={"file": ("p.png", BRIGHT)})
    assert wrong.status_code == 422 and "not a heatmap" in wrong.json()["detail"]


def test_sensor_answers_go_through_their_response_models(api: tuple[TestClient, Services, FakeHandle]) -> None:
    client, _, _ = api
    reading = [0.0] * len(FEATURES)
    single = client.post(f"/v1/lines/{SENSOR_LINE}/predict", json={"values": reading, "sensor_id": "m1"})
    assert single.status_code == 200
    parsed = SensorPrediction.model_validate(single.json())  # the body is exactly the documented model
    assert parsed.status in ("normal", "anomaly") and len(parsed.top_features) == 3 and parsed.sensor_id == "m1"
    assert "score;dur=" in single.headers["Server-Timing"]
    batch = client.post(f"/v1/lines/{SENSOR_LINE}/predict", json={"values": [reading, [5.0] * len(FEATURES)]})
    many = SensorBatchPrediction.model_validate(batch.json())
    assert many.count == 2 and many.prediction_ids is not None and len(many.prediction_ids) == 2
    assert many.scores[1] > many.scores[0] and many.status[1] == "anomaly"
    plain = client.post("/anomaly", json={"values": [[5.0] * len(FEATURES)] * 3}).json()
    assert plain["status"] == ["anomaly"] * 3 and len(plain["prediction_id"]) == 3
    schema = client.get("/openapi.json").json()
    documented = schema["paths"]["/v1/lines/{line}/predict"]["post"]["responses"]["200"]["content"]["application/json"]
    assert {"$ref": "#/components/schemas/SensorPrediction"} in documented["schema"]["anyOf"]
    short = client.post(f"/v1/lines/{SENSOR_LINE}/predict", json={"values": [1, 2, 3]})
    assert short.status_code == 422 and f"expects {len(FEATURES)} values" in short.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "words"),
    [
        ("get", "/v1/lines/press-9", {}, 404, "unknown line 'press-9'"),
        ("get", "/v1/lines/bad%20name", {}, 422, "invalid line name"),
        ("post", f"/v1/lines/{IMAGE_LINE}/predict", {"json": {"values": [1]}}, 422, "multipart/form-data"),
        (
            "post",
            f"/v1/lines/{IMAGE_LINE}/predict",
            {"content": b"x", "headers": {"content-type": "text/plain"}},
            415,
            "multipart",
        ),
        ("post", f"/v1/lines/{SENSOR_LINE}/predict", {"files": {"file": ("a.png", b"x")}}, 415, "send JSON"),
        (
            "post",
            f"/v1/lines/{OTHER_BACKBONE_LINE}/predict",
            {"files": {"file": ("a.png", BRIGHT)}},
            409,
            "does not run",
        ),
        ("put", f"/v1/lines/{CLASSIFIER_LINE}/threshold", {"json": {"threshold": 1.5}}, 422, "between 0 and 1"),
        ("get", f"/v1/lines/{IMAGE_LINE}/stats?window=1y", {}, 422, "not a duration"),
        ("get", f"/v1/lines/{IMAGE_LINE}/history?cursor=xyz", {}, 422, "cursor"),
        ("get", "/v1/predictions/short", {}, 422, "not a prediction id"),
        ("get", "/v1/predictions/01ARZ3NDEKTSV4RRFFQ69G5FAV", {}, 404, "no prediction with id"),
    ],
)
def test_refusals_are_json_that_names_the_problem(
    api: tuple[TestClient, Services, FakeHandle],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    words: str,
) -> None:
    client, _, _ = api
    answer = getattr(client, method)(path, **kwargs)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]


def test_a_failed_replica_fails_only_its_lines_items(tmp_path: Path) -> None:
    services, scorer = build(tmp_path)
    scorer.target.fail_for = {f"{CLASSIFIER_LINE}@v1"}
    with TestClient(create_api(services)) as client:
        broken = client.post(f"/v1/lines/{CLASSIFIER_LINE}/predict", files={"file": ("p.png", BRIGHT)})
        assert broken.status_code == 503 and broken.headers["Retry-After"] == "1"
        assert "temporarily unavailable (ConnectionError)" in broken.json()["detail"]
        fine = client.post(f"/v1/lines/{IMAGE_LINE}/predict", files={"file": ("p.png", BRIGHT)})
        assert fine.status_code == 200


def test_threshold_changes_are_new_versions_with_their_author(api: tuple[TestClient, Services, FakeHandle]) -> None:
    client, services, _ = api
    changed = client.put(f"/v1/lines/{IMAGE_LINE}/threshold", json={"threshold": 0.8, "note": "fewer alarms"})
    assert changed.status_code == 200 and changed.json() == {
        "line": IMAGE_LINE, "version": "v2", "previous_version": "v1", "threshold": 0.8, "previous_threshold": 0.5,
    }  # fmt: skip
    detail = client.get(f"/v1/lines/{IMAGE_LINE}").json()
    assert detail["version"] == "v2" and detail["parent"] == "v1" and detail["versions"] == ["v1", "v2"]
    assert services.store.read_card(IMAGE_LINE).note == "fewer alarms"
    answer = client.post(f"/v1/lines/{IMAGE_LINE}/predict", files={"file": ("a.png", png(160))}).json()
    assert answer["model_version"] == "v2"


def test_keys_close_the_service_and_limit_lines(tmp_path: Path) -> None:
    services, _ = build(tmp_path)
    ring = KeyRing(services.store)
    reader = ring.create("camera", lines=[IMAGE_LINE])[0]
    admin = ring.create("lead", "admin")[0]
    with TestClient(create_api(services)) as client:
        assert client.get("/healthz").status_code == 200  # the probes' route stays open
        closed = client.get("/v1/lines")
        assert closed.status_code == 401 and "needs an API key" in closed.json()["detail"]
        listed = client.get("/v1/lines", headers={"X-API-Key": reader}).json()
        assert [line["line"] for line in listed] == [IMAGE_LINE]  # a limited key sees its lines only
        other = client.get(f"/v1/lines/{SENSOR_LINE}", headers={"Authorization": f"Bearer {reader}"})
        assert other.status_code == 403 and "limited to lines" in other.json()["detail"]
        scoped = client.put(f"/v1/lines/{IMAGE_LINE}/threshold", json={"threshold": 0.7}, headers={"X-API-Key": reader})
        assert scoped.status_code == 403 and "needs an admin key" in scoped.json()["detail"]
        done = client.put(f"/v1/lines/{IMAGE_LINE}/threshold", json={"threshold": 0.7}, headers={"X-API-Key": admin})
        assert done.status_code == 200
        author = services.store.read_card(IMAGE_LINE).threshold.details["changed_by"]
        assert author.startswith("key ") and "(lead)" in author  # who changed it is on the version


def test_health_says_which_deployment_is_down(api: tuple[TestClient, Services, FakeHandle]) -> None:
    client, services, _ = api
    healthy = client.get("/healthz")
    assert healthy.status_code == 200 and healthy.json()["history"]["status"] == "ok"
    services.probes["Scorer"] = FakeHandle(Pinger(up=False))
    down = client.get("/healthz")
    assert down.status_code == 503 and down.json()["deployments"]["Scorer"] == "unavailable: ConnectionError"


def test_feedback_and_the_csv_export(api: tuple[TestClient, Services, FakeHandle]) -> None:
    client, services, _ = api
    ids = [
        client.post(f"/v1/lines/{IMAGE_LINE}/predict", files={"file": (f"{i}.png", png(30 * i))}).json()[
            "prediction_id"
        ]
        for i in range(1, 8)
    ]
    verdict = client.post(f"/v1/predictions/{ids[0]}/feedback", json={"label": "ng", "operator": "ana"})
    assert verdict.status_code == 200 and verdict.json()["agrees"] is False
    assert client.post(f"/v1/predictions/{ids[0]}/feedback", json={"label": "maybe"}).status_code == 422
    record = client.get(f"/v1/predictions/{ids[0]}").json()
    assert record["feedback"]["label"] == "ng" and record["feedback"]["by"] == "ana"
    assert services.history is not None
    services.history.args = services.history.args.model_copy(update={"export_max_rows": 5})
    csv = client.get(f"/v1/lines/{IMAGE_LINE}/history.csv").text.strip().splitlines()
    assert csv[0].startswith("id,timestamp,line") and len(csv) == 1 + 5  # the export's cap
    assert csv[1].split(",")[0] == ids[-1]  # newest first
    stats = client.get(f"/v1/lines/{IMAGE_LINE}/stats?window=1h").json()
    assert stats["predictions"] == 7 and stats["labelled"] == 1 and stats["confusion"]["false_negative"] == 1
    assert np.isclose(stats["anomaly_rate"], 3 / 7)  # intensities 150, 180 and 210 (of 255) are above 0.5


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
    services, _ = build(tmp_path)
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
    services, _ = build(tmp_path)
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


def test_a_body_that_trickles_in_gets_a_408_in_json(tmp_path: Path) -> None:
    # 300 clients sending a byte a second once held every ingress slot, even GET /v1/lines's
    services, _ = build(tmp_path, body_timeout_s=0.5)
    app = create_api(services)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.2)
        return {"type": "http.request", "body": b"{", "more_body": True}  # a byte, now and then, forever

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": f"/v1/lines/{SENSOR_LINE}/predict", "raw_path": b"", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    assert sent[0]["status"] == 408
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
    answer = client.post(f"/v1/lines/{IMAGE_LINE}/predict?heatmap=true", files={"file": ("p.png", png(200, 300))})
    assert answer.status_code == 200, answer.text
    drawn = Image.open(io.BytesIO(base64.b64decode(answer.json()["heatmap_png"])))
    assert drawn.size == (64, 64)  # over the resized input the Scorer sent back
    plain = client.post(f"/v1/lines/{IMAGE_LINE}/predict", files={"file": ("p.png", png(200, 300))})
    assert plain.status_code == 200 and "heatmap_png" not in plain.json()
