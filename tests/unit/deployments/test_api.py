"""The HTTP API without Ray: the real routers, middleware, dependencies, pipelines, Recorder and store,
with fake scoring replicas behind fake handles (FastAPI's TestClient, real HTTP semantics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lineguard.deployments.api import create_api
from lineguard.deployments.keys import KeyRing
from lineguard.deployments.services import Services
from lineguard.registry.answers import SensorBatchPrediction, SensorPrediction
from lineguard.training.synthetic_sensor import FEATURES
from tests.support import (
    BRIGHT,
    CLASSIFIER_LINE,
    DARK,
    IMAGE_LINE,
    OTHER_BACKBONE_LINE,
    SENSOR_LINE,
    FakeHandle,
    Pinger,
    fake_services,
    grey_png,
)


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
    services, scorer = fake_services(tmp_path)
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
    answer = client.post(f"/v1/lines/{IMAGE_LINE}/predict", files={"file": ("a.png", grey_png(160))}).json()
    assert answer["model_version"] == "v2"


def test_keys_close_the_service_and_limit_lines(tmp_path: Path) -> None:
    services, _ = fake_services(tmp_path)
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
        client.post(f"/v1/lines/{IMAGE_LINE}/predict", files={"file": (f"{i}.png", grey_png(30 * i))}).json()[
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
