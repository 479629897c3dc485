"""Sensor lines through real HTTP: single, batch and named readings, the plain /anomaly endpoint, bad input."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from lineguard.history.ids import is_id
from lineguard.registry.sensor_models import sensor_model
from lineguard.training.fit_sensor import fit_sensor_line
from lineguard.training.options import SensorFitOptions
from lineguard.training.options import SensorTrainOptions as TrainOptions
from lineguard.training.sensor_data import SensorTable, read_table
from lineguard.training.synthetic_sensor import FEATURES
from tests.integration.conftest import LINES, SENSOR_LINE, Service

PREDICT = f"/v1/lines/{SENSOR_LINE}/predict"


@pytest.fixture(scope="module")
def table(service: Service) -> SensorTable:
    return read_table(service.sensor_data)


def labels_of(table: SensorTable) -> np.ndarray:
    assert table.labels is not None  # the synthetic table is labelled
    return table.labels


def in_process(service: Service, values: np.ndarray, line: str = SENSOR_LINE) -> np.ndarray:
    model = sensor_model(service.store, service.store.read_card(line))
    return model.predict(values).scores


def test_single_reading_matches_the_in_process_model(service: Service, table: SensorTable) -> None:
    faulty = int(np.nonzero(labels_of(table))[0][0])
    with service.client() as client:
        for row in (0, faulty):
            reading = table.values[row].tolist()
            response = client.post(PREDICT, json={"values": reading, "sensor_id": "press-7"})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["score"] == pytest.approx(float(in_process(service, table.values[row : row + 1])[0]), rel=1e-5)
            assert body["status"] == ("anomaly" if body["score"] > body["threshold"] else "normal")
            assert body["is_anomaly"] == (body["status"] == "anomaly")
            assert body["sensor_id"] == "press-7" and body["model_version"] == "v1" and body["line"] == SENSOR_LINE
            top = body["top_features"]
            assert len(top) == 3 and {t["feature"] for t in top} <= set(FEATURES)
            assert top[0]["share"] >= top[1]["share"] >= top[2]["share"] > 0
            assert top[0]["value"] == pytest.approx(reading[FEATURES.index(top[0]["feature"])], rel=1e-6)
            assert "score;dur=" in response.headers["server-timing"]
        assert body["status"] == "anomaly"  # the faulty row, at the calibrated threshold


def test_batch_and_named_readings(service: Service, table: SensorTable) -> None:
    rows = table.values[:1500]  # more than one 1024-row chunk
    with service.client() as client:
        response = client.post(PREDICT, json={"values": rows.tolist()})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == 1500 and len(body["scores"]) == len(body["status"]) == len(body["top_features"]) == 1500
        np.testing.assert_allclose(body["scores"], in_process(service, rows), rtol=1e-5)
        flagged = np.array(body["status"]) == "anomaly"
        assert body["anomalies"] == int(flagged.sum())
        assert flagged[labels_of(table)[:1500] == 1].mean() > 0.8  # faults found at the calibrated threshold
        assert flagged[labels_of(table)[:1500] == 0].mean() < 0.05
        named = [dict(zip(FEATURES, map(float, row), strict=True)) for row in rows[:3]]
        one = client.post(PREDICT, json={"features": named[0]}).json()
        many = client.post(PREDICT, json={"features": named}).json()
        assert one["score"] == pytest.approx(body["scores"][0], rel=1e-5)
        np.testing.assert_allclose(many["scores"], body["scores"][:3], rtol=1e-5)


def test_plain_anomaly_endpoint(service: Service, table: SensorTable) -> None:
    with service.client() as client:
        single = client.post("/anomaly", json={"values": table.values[0].tolist()})
        assert single.status_code == 200, single.text
        assert set(single.json()) == {"score", "status", "prediction_id"}
        assert single.json()["status"] in ("normal", "anomaly") and is_id(single.json()["prediction_id"])
        batch = client.post("/anomaly", json={"values": table.values[:4].tolist()}).json()
        assert len(batch["score"]) == len(batch["status"]) == len(batch["prediction_id"]) == 4
        detail = client.get(f"/v1/lines/{SENSOR_LINE}").json()
        assert detail["kind"] == "sensor-anomaly" and detail["features"] == FEATURES


def test_concurrent_single_readings(service: Service, table: SensorTable) -> None:
    rows = table.values[:64]
    truth = in_process(service, rows)

    async def run() -> list[float]:
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
            answers = await asyncio.gather(*(client.post(PREDICT, json={"values": r.tolist()}) for r in rows))
        return [a.json()["score"] for a in answers]

    np.testing.assert_allclose(asyncio.run(run()), truth, rtol=1e-5)


def test_concurrent_readings_for_two_lines_keep_their_models(service: Service, table: SensorTable) -> None:
    """Micro-batches in the ingress mix lines; each reading must still be scored by its own line."""
    other = "spindle-2"
    if other not in service.store.lines():
        options = SensorFitOptions(threshold_source="normal", train=TrainOptions(epochs=20, workers=0, seed=5))
        fit_sensor_line(other, service.sensor_data, options, service.store)
    rows = table.values[:48]
    truth = {line: in_process(service, rows, line) for line in (SENSOR_LINE, other)}
    assert not np.allclose(truth[SENSOR_LINE], truth[other], rtol=1e-3)

    async def run() -> dict[str, list[float]]:
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
            jobs = [(line, r) for r in rows for line in (SENSOR_LINE, other)]
            answers = await asyncio.gather(
                *(client.post(f"/v1/lines/{line}/predict", json={"values": r.tolist()}) for line, r in jobs)
            )
        scores: dict[str, list[float]] = {SENSOR_LINE: [], other: []}
        for (line, _), answer in zip(jobs, answers, strict=True):
            scores[line].append(answer.json()["score"])
        return scores

    time.sleep(1.2)  # the ingress's line cache (1 s) sees the new line
    for line, scores in asyncio.run(run()).items():
        np.testing.assert_allclose(scores, truth[line], rtol=1e-5)


TWELVE = ", ".join(["1.0"] * 12)
BAD_BODIES = [
    ('{"values": [1, 2, 3]}', "expects 12 values, got 3"),
    ('{"values": [[' + TWELVE + "], [1, 2]]}", "reading 1: line 'spindle-1' expects 12 values, got 2"),
    ('{"values": [' + TWELVE.replace("1.0", "NaN", 1) + "]}", "not valid JSON"),
    ('{"values": [' + TWELVE.replace("1.0", "Infinity", 1) + "]}", "not valid JSON"),
    ('{"values": [' + TWELVE.replace("1.0", "1e999", 1) + "]}", "not valid JSON"),
    ('{"values": [' + TWELVE.replace("1.0", "1e300", 1) + "]}", "too large"),
    ('{"values": [' + TWELVE.replace("1.0", '"7"', 1) + "]}", "value 0 is a JSON string"),
    ('{"values": [' + TWELVE.replace("1.0", "true", 1) + "]}", "value 0 is a JSON boolean"),
    ('{"values": [' + TWELVE.replace("1.0", "null", 1) + "]}", "value 0 is a JSON null"),
    ('{"values": []}', "non-empty list"),
    ('{"values": [[]]}', "expects 12 values, got 0"),
    ('{"values": "1,2,3"}', "non-empty list"),
    ("{}", "exactly one of"),
    ('{"values": [1], "features": {}}', "exactly one of"),
    ('{"value": [1]}', "unknown field(s) ['value']"),
    ('{"features": {"current_1": 1.0, "bogus": 2.0}}', "unknown feature(s) ['bogus']"),
    ('{"features": [{"current_1": 1.0}]}', "reading 0: missing feature(s)"),
    ('{"features": 3}', '"features" must be'),
    ('{"values": [1.0], "sensor_id": 7}', "sensor_id"),
    ("[1, 2, 3]", "got a JSON array"),
    ("", "empty body"),
    ("{not json", "not valid JSON"),
    ("[" * 5000 + "]" * 5000, "not valid JSON"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_readings_get_a_422_that_names_the_problem(service: Service, body: str, message: str) -> None:
    with service.client() as client:
        response = client.post(PREDICT, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_wrong_kind_of_input_and_over_long_batches(service: Service) -> None:
    with service.client() as client:
        over = client.post(PREDICT, json={"values": [[0.0] * 12] * 10_001})
        assert over.status_code == 422 and "over the limit of 10000" in over.json()["detail"]
        form = client.post(PREDICT, files={"file": ("a.png", b"\x89PNG", "image/png")})
        assert form.status_code == 415 and "sensor line: send JSON" in form.json()["detail"]
        image_line = client.post(f"/v1/lines/{LINES[0]}/predict", json={"values": [1.0] * 12})
        assert image_line.status_code == 422 and "image line" in image_line.json()["detail"]
        assert client.get("/healthz").status_code == 200


def test_openapi_documents_the_sensor_body(service: Service) -> None:
    with service.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    content = paths["/v1/lines/{line}/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)
    assert "/anomaly" in paths
    json.dumps(paths)  # serialisable


def test_the_sensor_replica_runs_without_torch(service: Service, table: SensorTable) -> None:
    """Scoring is NumPy: the replica stays small (importing the CUDA build of torch costs ~550 MB)."""
    with service.client() as client:
        assert client.post(PREDICT, json={"values": table.values[0].tolist()}).status_code == 200
    replicas = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ServeReplica:lineguard:SensorScorer" in (entry / "cmdline").read_bytes():
                    replicas.append(entry)
            except OSError:
                continue
    if not replicas:
        pytest.skip("no /proc to inspect on this system")
    for replica in replicas:
        assert "libtorch" not in (replica / "maps").read_text()
