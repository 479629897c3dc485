"""Operations through real HTTP on the session's service (a real SQLite file, a real Recorder): every
answer recorded under its id, history pages and CSV, feedback and the rates it changes, histograms, the
threshold suggestion, drift with its webhook, a Recorder restart, and the Prometheus metrics."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import ray
from PIL import Image

from lineguard.training.sensor_data import read_table
from tests.integration.conftest import CLASSIFIER_LINE, SENSOR_LINE, Service


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not met within {timeout} s")


def images(service: Service, kind: str) -> list[Path]:
    return sorted((service.data / "test" / kind).glob("*.png"))


def post_image(client: httpx.Client, line: str, path: Path, sensor_id: str = "cam-7") -> dict[str, Any]:
    files = {"file": (path.name, path.read_bytes(), "image/png")}
    response = client.post(f"/v1/lines/{line}/predict", files=files, data={"sensor_id": sensor_id})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def recorded(client: httpx.Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The records of ``ids``, once every one of them is in the history."""

    def found() -> dict[str, dict[str, Any]] | None:
        out = {}
        for prediction_id in ids:
            response = client.get(f"/v1/predictions/{prediction_id}")
            if response.status_code != 200:
                return None
            out[prediction_id] = response.json()
        return out

    result: dict[str, dict[str, Any]] = wait_for(found, 60, f"{len(ids)} predictions recorded")
    return result


def test_answers_are_recorded_and_read_back(service: Service) -> None:
    line = "press-b"
    paths = images(service, "good")[:3]
    with service.client() as client:
        answers = [post_image(client, line, p, sensor_id=f"cam-{i % 2}") for i, p in enumerate(paths)]
        ids = [a["prediction_id"] for a in answers]
        records = recorded(client, ids)
        for answer, path in zip(answers, paths, strict=True):
            record = records[answer["prediction_id"]]
            assert record["score"] == pytest.approx(answer["anomaly_score"])
            assert record["decision"] == ("ng" if answer["is_anomaly"] else "ok")
            assert record["model_version"] == answer["model_version"] and record["source"] == path.name
            assert record["digest"] == hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
            assert 0 < record["input_stat"] < 1 and record["latency_ms"] > 0 and record["feedback"] is None

        page = client.get(f"/v1/lines/{line}/history", params={"sensor_id": "cam-0"}).json()
        assert {r["id"] for r in page["records"]} >= {ids[0], ids[2]} and ids[1] not in {
            r["id"] for r in page["records"]
        }
        walked, cursor = [], None
        while True:  # cursor pagination, two at a time, newest first
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            body = client.get(f"/v1/lines/{line}/history", params=params).json()
            walked += [r["id"] for r in body["records"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert walked == sorted(walked, reverse=True) and set(ids) <= set(walked)

        export = client.get(f"/v1/lines/{line}/history.csv")
        assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(export.text)))
        assert [r["id"] for r in table] == walked and table[0]["line"] == line

        plain = client.get("/prediction_history", params={"limit": 2})
        assert plain.status_code == 200 and len(plain.json()) == 2 and "x-next-cursor" in plain.headers
        assert set(plain.json()[0]) >= {"timestamp", "sensor_id", "prediction", "confidence", "score", "severity"}

        for params in ({"limit": 5000}, {"cursor": "garbage!"}, {"since": "yesterday"}, {"limit": 0}):
            bad = client.get(f"/v1/lines/{line}/history", params=params)
            assert bad.status_code == 422, (params, bad.text)
        bad = client.get(f"/v1/lines/{line}/history", params={"since": "2030-01-02T00:00:00", "until": "2030-01-01"})
        assert bad.status_code == 422 and "after" in bad.json()["detail"]
        assert client.get("/v1/lines/no-such-line/history").status_code == 404


def test_feedback_changes_the_rates_and_feeds_the_suggestion(service: Service) -> None:
    line = "press-c"
    good, bad = images(service, "good")[:4], [p for kind in ("scratch", "spot") for p in images(service, kind)[:2]]
    with service.client() as client:
        answers = [(post_image(client, line, p, sensor_id="fb"), label) for p in good for label in ["ok"]]
        answers += [(post_image(client, line, p, sensor_id="fb"), "ng") for p in bad]
        before = client.get(f"/v1/lines/{line}/stats", params={"window": "1h"}).json()
        for answer, label in answers:
            response = client.post(f"/v1/predictions/{answer['prediction_id']}/feedback", json={"label": label})
            assert response.status_code == 200, response.text
            assert response.json()["agrees"] == (
                (answer["is_anomaly"] and label == "ng") or (not answer["is_anomaly"] and label == "ok")
            )
        stats = client.get(f"/v1/lines/{line}/stats", params={"window": "1h"}).json()
        flagged = np.array([a["is_anomaly"] for a, _ in answers])
        defective = np.array([label == "ng" for _, label in answers])
        c = stats["confusion"]
        assert c["true_positive"] - before["confusion"]["true_positive"] == int(np.sum(flagged & defective))
        assert c["false_negative"] - before["confusion"]["false_negative"] == int(np.sum(~flagged & defective))
        assert c["false_positive"] - before["confusion"]["false_positive"] == int(np.sum(flagged & ~defective))
        assert stats["labelled"] - before["labelled"] == len(answers)
        assert stats["predictions"] >= len(answers) and stats["latency_ms"]["p50"] > 0

        # bad feedback: unknown id, malformed id, a label the line does not have
        unknown = client.post("/v1/predictions/" + "0" * 26 + "/feedback", json={"label": "ok"})
        assert unknown.status_code == 404
        assert client.post("/v1/predictions/nope/feedback", json={"label": "ok"}).status_code == 422
        wrong = client.post(f"/v1/predictions/{answers[0][0]['prediction_id']}/feedback", json={"label": "maybe"})
        assert wrong.status_code == 422 and "'ok', 'ng'" in wrong.json()["detail"]
        assert client.get(f"/v1/lines/{line}/stats", params={"window": "1 year"}).status_code == 422

        hist = client.get(f"/v1/lines/{line}/histogram", params={"window": "1h"}).json()
        assert sum(hist["counts"]["defective"]) >= len(bad) and hist["threshold"] == answers[0][0]["threshold"]
        png = client.get(f"/v1/lines/{line}/histogram.png", params={"window": "1h"})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (700, 400)

        suggestion = client.get(f"/v1/lines/{line}/threshold/suggestion", params={"target_miss_rate": 0.0}).json()
        defect_scores = [a["anomaly_score"] for a, label in answers if label == "ng"]
        assert suggestion["threshold"] < min(defect_scores) and suggestion["miss_rate"] == 0.0
        assert client.get(f"/v1/lines/{line}/threshold/suggestion").status_code == 422
        # the rates that threshold would give, on the fit's held-out good parts and on the feedback
        rates = client.get(f"/v1/lines/{line}/threshold/rates", params={"threshold": suggestion["threshold"]}).json()
        assert rates["feedback"]["miss_rate"] == 0.0 == suggestion["miss_rate"]
        assert rates["feedback"]["over_detection_rate"] == pytest.approx(suggestion["over_detection_rate"])
        assert rates["feedback"]["n"] == suggestion["n_defective"] + suggestion["n_good"]
        card = service.store.read_card(line)
        assert card.calibration.normal is not None
        assert rates["calibration"]["good"] == card.calibration.normal.n and rates["calibration"]["defective"] == 0
        assert rates["combined"]["n"] == rates["calibration"]["n"] + rates["feedback"]["n"]
        assert rates["range"]["min"] < min(rates["threshold"], rates["current_threshold"]) < rates["range"]["max"]
        now = client.get(f"/v1/lines/{line}/threshold/rates").json()
        assert now["threshold"] == now["current_threshold"] == answers[0][0]["threshold"]
        bad_threshold = client.get(f"/v1/lines/{line}/threshold/rates", params={"threshold": "nan"})
        assert bad_threshold.status_code == 422
        applied = client.put(suggestion["apply"]["path"], json=suggestion["apply"]["body"])
        assert applied.status_code == 200 and applied.json()["threshold"] == pytest.approx(suggestion["threshold"])
        after = wait_for(
            lambda: (b := post_image(client, line, bad[0])) and b["threshold"] != answers[0][0]["threshold"] and b, 10
        )
        assert after["is_anomaly"]


def test_classifier_feedback_takes_its_classes(service: Service) -> None:
    path = sorted((service.class_data / "scratch").glob("*.png"))[0]
    with service.client() as client:
        answer = post_image(client, CLASSIFIER_LINE, path)
        pid = answer["prediction_id"]
        wrong = client.post(f"/v1/predictions/{pid}/feedback", json={"label": "ng"})
        assert wrong.status_code == 422 and "scratch" in wrong.json()["detail"]
        right = client.post(f"/v1/predictions/{pid}/feedback", json={"label": "scratch", "operator": "ana"})
        assert right.status_code == 200 and right.json()["agrees"] == (answer["prediction"] == "scratch")
        stats = client.get(f"/v1/lines/{CLASSIFIER_LINE}/stats").json()
        assert stats["classes"]["matrix"]["scratch"][answer["prediction"]] >= 1
        record = client.get(f"/v1/predictions/{pid}").json()
        assert record["feedback"]["label"] == "scratch" and record["feedback"]["by"] == "ana"
        assert (
            record["score"] == pytest.approx(answer["defect_confidence"]) and record["decision"] == answer["prediction"]
        )


def test_drift_fires_on_a_shifted_stream_and_not_on_a_normal_one(service: Service) -> None:
    table = read_table(service.sensor_data)
    # the machine's normal readings in random order: a window of consecutive ones covers part of its load
    # cycle only, which is a real shift of the inputs (and is reported as one)
    normal = np.random.default_rng(3).permutation(table.values[table.labels == 0])
    path = f"/v1/lines/{SENSOR_LINE}/predict"
    with service.client() as client:
        body = client.post(path, json={"values": normal[:300].tolist(), "sensor_id": "drift-test"}).json()
        recorded(client, body["prediction_ids"][-1:])
        quiet = client.get(f"/v1/lines/{SENSOR_LINE}/drift").json()
        assert quiet["status"] == "ok", quiet
        assert quiet["measures"]["score"]["n_recent"] == 300 and "input" in quiet["measures"]
        shifted = normal[300:600] * 1.3 + normal.std(0)
        before = len(service.webhook.received)  # events of earlier tests (their anomalous readings) aside
        body = client.post(path, json={"values": shifted.tolist(), "sensor_id": "drift-test"}).json()
        recorded(client, body["prediction_ids"][-1:])
        loud = client.get(f"/v1/lines/{SENSOR_LINE}/drift").json()
        assert loud["status"] == "drift", loud
        assert loud["measures"]["score"]["psi"] > 0.25 and loud["measures"]["input"]["status"] == "drift"
    event = wait_for(
        lambda: [e for e in service.webhook.received[before:] if e["line"] == SENSOR_LINE and e["status"] == "drift"],
        30,
        "the drift webhook",
    )[0]
    assert event["event"] == "drift" and event["measures"]["score"]["psi"] > 0.25


def test_a_recorder_restart_loses_nothing(service: Service) -> None:
    table = read_table(service.sensor_data)
    named = ray.util.list_named_actors(all_namespaces=True)
    recorders = [a for a in named if "#Recorder#" in a["name"]]
    assert recorders, f"no Recorder replica among {named}"
    ray.kill(ray.get_actor(recorders[0]["name"], namespace=recorders[0]["namespace"]), no_restart=True)
    ids = []
    with service.client() as client:
        for i in range(10):  # answered while the Recorder is away
            response = client.post(f"/v1/lines/{SENSOR_LINE}/predict", json={"values": table.values[i].tolist()})
            assert response.status_code == 200, response.text
            ids.append(response.json()["prediction_id"])
        assert len(recorded(client, ids)) == 10
        health = client.get("/healthz").json()
        assert health["history"]["outbox"]["dropped"] == 0 and health["history"]["reachable"]


def test_prometheus_metrics_beside_rays(service: Service) -> None:
    port = os.environ["LINEGUARD_TEST_METRICS_PORT"]
    with service.client() as client:
        post_image(client, "press-a", images(service, "good")[0])

    def scrape() -> str | None:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        wanted = ("ray_lineguard_requests_total{", 'line="press-a"', "ray_lineguard_model_info", "ray_serve_")
        return text if all(w in text for w in wanted) else None

    text = wait_for(scrape, 90, "LineGuard metrics on Ray's export port")
    assert "ray_lineguard_request_latency_ms_bucket" in text and "ray_lineguard_predictions_total" in text
