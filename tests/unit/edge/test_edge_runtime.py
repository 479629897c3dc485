"""The edge runtime without torch: a sensor bundle written by hand (tests/edge_bundles.py), scored through
the Python API, the CLI and the HTTP server over a real socket, and the local history read back. The bundles
``lineguard export`` writes from fitted lines: tests/integration/test_export.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

import lineguard_edge
from lineguard_edge.errors import FeatureMismatchError
from lineguard_edge.history import LocalHistory
from lineguard_edge.readings import Readings
from lineguard_edge.server import EdgeService, Limits, make_server, serve_in_thread
from tests.edge_bundles import write_bundle


@pytest.fixture
def sensor_bundle(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "spindle")


def test_a_reading_is_scored_with_the_services_fields(sensor_bundle: Path) -> None:
    model = lineguard_edge.load(sensor_bundle)
    normal = model.predict([20.0, 5.0, 1.0], sensor_id="m-1")
    assert normal["status"] == "normal" and normal["score"] == 0.0 and normal["sensor_id"] == "m-1"
    hot = model.predict({"temp": 32.0, "pressure": 5.0, "current": 1.1})  # z = 6, 0, 1: mean error 37/3
    assert hot["is_anomaly"] and hot["score"] == pytest.approx(37 / 3)
    assert hot["normalized_score"] == pytest.approx((37 / 3 - 1) / 8)
    assert [f["feature"] for f in hot["top_features"]] == ["temp", "current"]
    assert hot["top_features"][0] == {"feature": "temp", "share": round(36 / 37, 4), "value": 32.0, "expected": 20.0}
    with pytest.raises(FeatureMismatchError):
        model.predict_readings(Readings(np.zeros((1, 2)), single=True, sensor_id=None))


def test_importing_and_running_the_edge_runtime_loads_neither_torch_nor_ray(sensor_bundle: Path) -> None:
    code = (
        "import sys, lineguard_edge\n"
        f"answer = lineguard_edge.load({str(sensor_bundle)!r}).predict([20.0, 5.0, 1.0])\n"
        "tops = ('torch', 'ray', 'timm', 'torchvision', 'lineguard')\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in tops)\n"
        "print(answer['status'], heavy)\n"
    )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["normal", "[]"], done.stdout + done.stderr


def test_the_cli_prints_json_lines_and_refuses_with_the_services_codes(sensor_bundle: Path, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "lineguard_edge.cli", "predict", str(sensor_bundle)]
    done = subprocess.run([*cli, "--values", "20,5,1", "--values", "32,5,1.1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["status"] for line in done.stdout.splitlines()] == ["normal", "anomaly"]
    short = subprocess.run([*cli, "--values", "1,2"], capture_output=True, text=True)
    assert short.returncode == 3 and "line 'spindle' expects 3 values, got 2" in short.stderr
    (tmp_path / "empty").mkdir()
    missing = subprocess.run(
        [sys.executable, "-m", "lineguard_edge.cli", "predict", str(tmp_path / "empty"), "--values", "1,2,3"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 6 and "manifest.json: missing" in missing.stderr


@pytest.fixture
def edge_url(tmp_path: Path) -> Iterator[tuple[str, LocalHistory]]:
    models = {"spindle": lineguard_edge.load(write_bundle(tmp_path / "a"))}
    history = LocalHistory(tmp_path / "history.sqlite")
    server = make_server(EdgeService(models, history), port=0)
    serve_in_thread(server)
    try:
        yield f"http://127.0.0.1:{server.server_port}", history
    finally:
        server.shutdown()
        server.server_close()
        history.close()


def test_the_http_server_answers_records_and_refuses_as_the_service(edge_url: tuple[str, LocalHistory]) -> None:
    url, history = edge_url
    with httpx.Client(base_url=url, timeout=10) as client:
        one = client.post("/v1/lines/spindle/predict", json={"values": [32.0, 5.0, 1.1], "sensor_id": "m-2"})
        assert one.status_code == 200 and one.json()["status"] == "anomaly" and one.json()["sensor_id"] == "m-2"
        assert "prediction_ids" not in one.json() and len(one.json()["prediction_id"]) == 26
        batch = client.post("/v1/lines/spindle/predict", json={"values": [[20, 5, 1], [20, 5, 1.6]]})
        assert batch.json()["count"] == 2 and batch.json()["status"] == ["normal", "anomaly"]
        plain = client.post("/anomaly", json={"values": [20, 5, 1]})
        assert plain.json()["status"] == "normal" and set(plain.json()) == {"score", "status", "prediction_id"}
        rows = client.get("/prediction_history", params={"limit": 3}).json()
        assert [r["prediction"] for r in rows] == ["ok", "ng", "ok"]  # newest first
        assert rows[0]["id"] == plain.json()["prediction_id"] and history.count() == 4
        older = client.get("/prediction_history", params={"limit": 3, "cursor": rows[-1]["id"]}).json()
        assert [r["sensor_id"] for r in older] == ["m-2"]
        refusals = [
            (client.post("/v1/lines/press/predict", json={"values": [1, 2, 3]}), (404, "unknown line 'press'")),
            (client.post("/v1/lines/spindle/predict", json={"values": [1, 2]}), (422, "expects 3 values, got 2")),
            (client.post("/v1/lines/spindle/predict", content=b'{"values": [NaN, 1, 2]}',
                        headers={"content-type": "application/json"}), (422, "not valid JSON")),
            (client.post("/v1/lines/spindle/predict", content=b"1,2,3",
                        headers={"content-type": "text/csv"}), (415, "send JSON")),
            (client.post("/v1/lines/spindle/predict", json={"values": [1e39, 1, 2]}), (422, "too large")),
            (client.get("/v1/lines/spindle/predict"), (405, "use POST")),
            (client.get("/nowhere"), (404, "no route /nowhere")),
            (client.post("/predict", files={"file": ("a.png", b"x")}), (409, "no default image line")),
            (client.get("/prediction_history", params={"limit": 0}), (422, "limit must be between 1 and 1000")),
            (client.get("/prediction_history", params={"cursor": "nope"}), (422, "not the id of a recorded")),
        ]  # fmt: skip
        for answer, (status, text) in refusals:
            assert answer.status_code == status and text in answer.json()["detail"], answer.text
        health = client.get("/healthz").json()
        assert health["lines"]["spindle"] == {"kind": "sensor-anomaly", "version": "v3", "runtime": "onnx"}
        assert health["history_rows"] == 4  # refused requests are not recorded


def test_a_body_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    models = {"spindle": lineguard_edge.load(write_bundle(tmp_path / "a"))}
    server = make_server(EdgeService(models, LocalHistory(), Limits(max_request_bytes=1000)), port=0)
    serve_in_thread(server)
    try:
        answer = httpx.post(f"http://127.0.0.1:{server.server_port}/anomaly", content=b"x" * 5000, timeout=10)
        assert answer.status_code == 413 and "over the limit of 1000" in answer.json()["detail"]
    finally:
        server.shutdown()
        server.server_close()
