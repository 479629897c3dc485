"""The served application over real HTTP: answers, batches, heatmaps, live changes, LRU, concurrency."""

from __future__ import annotations

import asyncio
import base64
import io
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from lineguard.history.ids import is_id
from lineguard.training.fit_image import fit_image_line
from lineguard.training.options import FitOptions
from tests.integration.conftest import CLASSIFIER_LINE, LINES, MAX_IMAGE_BYTES, SENSOR_LINE, Service
from tests.support import bmp_frame, png_header_only

# the service's backbone runs OpenVINO fp32 and the in-process model torch's auto, bf16 on CPUs with native
# bf16: on magnetic_tile torch bf16's scores differ from fp32 by up to 1.8% (OpenVINO fp32: 3e-5)
BF16 = 0.05


def images(service: Service, kind: str = "good", count: int = 4) -> list[Path]:
    return sorted((service.data / "test" / kind).glob("*.png"))[:count]


def post(client: httpx.Client, line: str, path: Path, **params: str) -> httpx.Response:
    return client.post(
        f"/v1/lines/{line}/predict", params=params, files={"file": (path.name, path.read_bytes(), "image/png")}
    )


def expected(service: Service, line: str, path: Path) -> float:
    return service.model(line).predict_bytes([path.read_bytes()])[0].anomaly_score


def test_health_docs_and_lines(service: Service) -> None:
    with service.client() as client:
        health = client.get("/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["deployments"] == {
            "Preprocessor": "ok",
            "Scorer": "ok",
            "SensorScorer": "ok",
            "StreamShard": "ok",
            "StreamShard2": "ok",
            "Recorder": "ok",
            "Backbone": "ok",
        }
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/v1/lines/{line}/predict", "/v1/lines/{line}/predict/batch", "/predict", "/healthz"} <= set(paths)
        assert "multipart/form-data" in paths["/v1/lines/{line}/predict"]["post"]["requestBody"]["content"]
        lines = client.get("/v1/lines").json()
        names = [entry["line"] for entry in lines]  # sorted; other modules may add lines (spindle-pca)
        assert names == sorted(names) and set(names) >= {*LINES, SENSOR_LINE, CLASSIFIER_LINE}
        detail = client.get("/v1/lines/press-b").json()
        assert detail["kind"] == "image-anomaly" and detail["head_params"]["bank_size"] == 768
        assert detail["versions"][0] == "v1" and detail["image_size"] == 128


def test_predict_matches_the_in_process_model(service: Service) -> None:
    with service.client() as client:
        for kind in ("good", "scratch", "spot"):
            path = images(service, kind, 1)[0]
            response = post(client, "press-a", path)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["line"] == "press-a" and body["model_version"].startswith("v")
            assert body["anomaly_score"] == pytest.approx(expected(service, "press-a", path), rel=BF16)
            assert body["is_anomaly"] == (kind != "good")
            assert body["inference_time_ms"] > 0 and "heatmap_png" not in body
            assert "backbone;dur=" in response.headers["server-timing"]


def test_backbone_runs_on_openvino_in_fp32_by_default(service: Service) -> None:
    """serve_config.yaml's runtime: auto is OpenVINO fp32 on a CPU replica (fp32's decisions); its answers are
    the in-process torch model's (above) and an exported bundle's (below)."""
    from ray import serve

    described = serve.get_deployment_handle("Backbone", "lineguard").describe.remote().result(timeout_s=30)
    assert described == {"runtime": "openvino", "precision": "fp32"}


def test_the_service_hands_out_a_versions_bundle(service: Service, tmp_path: Path) -> None:
    """A camera PC pulls the line's bundle from the service (``lineguard export --to-store`` or ``fit --export``
    put it beside the version) and scores a part as the service does."""
    import lineguard_edge
    from lineguard.training.export import export_to_store
    from lineguard.training.options import ExportSettings

    line = "press-c"
    with service.client() as client:
        missing = client.get(f"/v1/lines/{line}/bundle", params={"format": "onnx"})
        assert missing.status_code == 404 and "lineguard export press-c" in missing.json()["detail"]
        export_to_store(service.store, line, ExportSettings(format="onnx", parity_items=8))
        assert client.get(f"/v1/lines/{line}").json()["bundles"] == ["onnx"]
        pulled = client.get(f"/v1/lines/{line}/bundle")
        assert pulled.status_code == 200 and pulled.headers["content-type"] == "application/x-tar"
        version = service.store.current_version(line)
        assert f'filename="{line}-{version}-onnx.tar"' in pulled.headers["content-disposition"]
        with tarfile.open(fileobj=io.BytesIO(pulled.content)) as tar:
            tar.extractall(tmp_path, filter="data")
        model = lineguard_edge.load(tmp_path / f"{line}-{version}-onnx")
        for kind in ("good", "scratch"):
            path = images(service, kind, 1)[0]
            served = post(client, line, path).json()
            edge = model.predict(path.read_bytes())
            assert edge["anomaly_score"] == pytest.approx(served["anomaly_score"], rel=BF16)
            assert edge["is_anomaly"] == served["is_anomaly"] == (kind != "good")
        wrong = client.get(f"/v1/lines/{line}/bundle", params={"format": "tflite"})
        assert wrong.status_code == 422 and "format" in wrong.text
        absent = client.get(f"/v1/lines/{line}/bundle", params={"format": "openvino"})
        assert absent.status_code == 404 and "(it has onnx)" in absent.json()["detail"]


def test_heatmap_overlay(service: Service) -> None:
    with service.client() as client:
        path = images(service, "scratch", 1)[0]
        body = post(client, "press-a", path, heatmap="true").json()
    overlay = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
    assert overlay.format == "PNG" and overlay.size == (128, 128)
    rgb = np.asarray(overlay.convert("RGB"), dtype=int)
    assert int((rgb[..., 0] - rgb[..., 2]).max()) > 100  # red where the scratch is


def test_batch_answers_in_order_and_isolates_bad_items(service: Service) -> None:
    good, bad = images(service, "good", 2), images(service, "dent", 2)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in (good[0], bad[0])]
    files.insert(1, ("files", ("broken.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")))
    files.append(("files", (good[1].name, good[1].read_bytes(), "image/png")))
    with service.client() as client:
        response = client.post("/v1/lines/press-b/predict/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert results[1]["error"]["status"] == 422
    assert results[1]["error"]["detail"].startswith(("truncated", "not an image"))
    assert results[0]["prediction"]["is_anomaly"] is False and results[2]["prediction"]["is_anomaly"] is True
    assert results[3]["filename"] == good[1].name
    assert results[2]["prediction"]["anomaly_score"] == pytest.approx(expected(service, "press-b", bad[0]), rel=BF16)


def test_threshold_change_is_live_and_stored(service: Service) -> None:
    path = images(service, "good", 1)[0]
    with service.client() as client:
        before = post(client, "press-c", path).json()
        assert before["is_anomaly"] is False
        changed = client.put("/v1/lines/press-c/threshold", json={"threshold": 0.0, "note": "trial"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["previous_version"] == before["model_version"]
        after = before  # every ingress replica answers with the new version within line_cache_ttl_s (1 s)
        deadline = time.monotonic() + 5
        while after["model_version"] != changed.json()["version"] and time.monotonic() < deadline:
            after = post(client, "press-c", path).json()
        assert after["model_version"] == changed.json()["version"] != before["model_version"]
        assert after["threshold"] == 0.0 and after["is_anomaly"] is True
        assert after["anomaly_score"] == pytest.approx(before["anomaly_score"], rel=1e-4)
        assert service.store.read_card("press-c").note == "trial"  # survives restarts: it is in the store
        restore = client.put("/v1/lines/press-c/threshold", json={"threshold": before["threshold"]})
        assert restore.status_code == 200
        for bad in ({"threshold": "high"}, {"threshold": None}, {}, {"threshold": 1.0, "extra": 1}):
            assert client.put("/v1/lines/press-c/threshold", json=bad).status_code == 422
        assert (
            client.put(
                "/v1/lines/press-c/threshold",
                content=b'{"threshold": NaN}',
                headers={"content-type": "application/json"},
            ).status_code
            == 422
        )


def test_new_version_is_picked_up_without_restart(service: Service, synthetic_line: Path) -> None:
    path = images(service, "spot", 1)[0]
    with service.client() as client:
        before = post(client, "press-b", path).json()
        options = FitOptions(image_size=128, head_params={"bank_size": 256}, seed=9, evaluate=False, progress=False)
        new = fit_image_line("press-b", synthetic_line, options, service.store).card
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = post(client, "press-b", path).json()
            if after["model_version"] == new.version:
                break
            time.sleep(0.3)
        assert after["model_version"] == new.version != before["model_version"]
        assert after["anomaly_score"] != before["anomaly_score"]
        assert after["anomaly_score"] == pytest.approx(expected(service, "press-b", path), rel=BF16)


def test_three_lines_through_an_lru_of_two(service: Service) -> None:
    path = images(service, "dent", 1)[0]
    truth = {line: expected(service, line, path) for line in LINES}
    with service.client() as client:
        for _ in range(3):
            for line in LINES:  # round-robin: every request evicts another line's model
                body = post(client, line, path).json()
                assert body["anomaly_score"] == pytest.approx(truth[line], rel=BF16), line
    assert len({round(v, 3) for v in truth.values()}) == 3  # the lines really differ


def test_thirty_two_concurrent_requests(service: Service) -> None:
    paths = images(service, "good", 4) + images(service, "scratch", 4)
    jobs = [(LINES[i % 3], paths[i % len(paths)]) for i in range(32)]
    truth = {(line, p): expected(service, line, p) for line, p in set(jobs)}

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=service.url, timeout=120) as client:
            return await asyncio.gather(
                *(
                    client.post(f"/v1/lines/{line}/predict", files={"file": (p.name, p.read_bytes(), "image/png")})
                    for line, p in jobs
                )
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 32
    for (line, p), response in zip(jobs, responses, strict=True):
        assert response.json()["anomaly_score"] == pytest.approx(truth[(line, p)], rel=BF16)


def test_plain_predict_endpoint_uses_the_default_line(service: Service) -> None:
    path = images(service, "scratch", 1)[0]
    with service.client() as client:
        body = client.post("/predict", files={"file": (path.name, path.read_bytes(), "image/png")}).json()
    assert set(body) == {"anomaly_score", "threshold", "is_anomaly", "line", "model_version", "prediction_id"}
    assert is_id(body["prediction_id"])  # for the operator's feedback
    assert body["line"] == "press-a" and body["is_anomaly"] is True


def test_bad_requests_get_named_4xx_errors(service: Service, synthetic_line: Path) -> None:
    good = images(service, "good", 1)[0].read_bytes()
    big = io.BytesIO(bmp_frame(MAX_IMAGE_BYTES + 4 * 1024 * 1024))
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        (
            "POST",
            "/v1/lines/press-a/predict",
            {"files": {"file": ("x.txt", b"hello, not an image", "text/plain")}},
            422,
            "not an image",
        ),
        (
            "POST",
            "/v1/lines/press-a/predict",
            {"files": {"file": ("t.png", good[: len(good) // 2], "image/png")}},
            422,
            "truncated",
        ),
        ("POST", "/v1/lines/press-a/predict", {"files": {"file": ("z.png", b"", "image/png")}}, 422, "empty file"),
        (
            "POST",
            "/v1/lines/press-a/predict",
            {"files": {"file": ("bomb.png", png_header_only(60_000, 60_000), "image/png")}},
            413,
            "over the limit",
        ),
        (
            "POST",
            "/v1/lines/press-a/predict",
            {"files": {"file": ("big.bmp", big.getvalue(), "image/bmp")}},
            413,
            f"limit of {MAX_IMAGE_BYTES}",
        ),
        (
            "POST",
            "/v1/lines/press-a/predict",
            {"files": {"image": ("a.png", good, "image/png")}},
            422,
            "no file field named 'file'",
        ),
        ("POST", "/v1/lines/press-a/predict", {"json": {"values": [1, 2]}}, 422, "image line"),
        ("POST", "/v1/lines/press-a/predict", {"data": {"file": "text"}}, 415, "multipart/form-data"),
        (
            "POST",
            "/v1/lines/no-such-line/predict",
            {"files": {"file": ("a.png", good, "image/png")}},
            404,
            "GET /v1/lines",
        ),
        (
            "POST",
            "/v1/lines/bad%20name/predict",
            {"files": {"file": ("a.png", good, "image/png")}},
            422,
            "invalid line name",
        ),
        ("GET", "/v1/lines/no-such-line", {}, 404, "unknown line"),
        ("PUT", "/v1/lines/no-such-line/threshold", {"json": {"threshold": 1.0}}, 404, "unknown line"),
        (
            "POST",
            "/v1/lines/press-a/predict/batch",
            {"files": [("files", ("a.png", good, "image/png"))] * 33},
            413,
            "over the limit of 32",
        ),
    ]
    with service.client() as client:
        for method, url, kwargs, status, words in cases:
            response = client.request(method, url, **kwargs)
            assert response.status_code == status, (url, kwargs.keys(), response.text)
            assert words in response.text, (url, response.text)
        assert client.get("/healthz").status_code == 200  # still healthy after all of them


def test_line_on_a_backbone_the_service_does_not_run(service: Service, synthetic_line: Path) -> None:
    options = FitOptions(image_size=96, head_params={"bank_size": 128}, evaluate=False, progress=False)
    fit_image_line("press-other", synthetic_line, options, service.store)
    with service.client() as client:
        response = post(client, "press-other", images(service, "good", 1)[0])
    assert response.status_code == 409 and "serve_config.yaml" in response.json()["detail"]


RAYS_OWN_REFUSAL = "Request dropped due to backpressure"


def test_overload_gets_503_with_retry_after_and_service_recovers(service: Service) -> None:
    """A second application with tiny queues: excess requests are refused, never lost in a 5xx crash."""
    from ray import serve

    from lineguard.deployments import config_file
    from lineguard.deployments.app import bind_graph

    app = config_file.application(config_file.read())
    args = config_file.app_args(
        app,
        store=str(service.store.root),
        backbones=[{"name": "tf_efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "image_size": 128}],
        history={"enabled": False},  # the session's app records; this one is about queues
    )
    options = config_file.deployment_options(
        app,
        Ingress={
            "num_replicas": 1,
            "max_ongoing_requests": 64,
            "max_queued_requests": 2,
            "user_config": {"batch_max_size": 1, "max_in_flight": 2},
        },
        Backbone={"num_replicas": 1, "max_ongoing_requests": 1, "max_queued_requests": 1},
    )
    serve.run(bind_graph(args, options), name="tight", route_prefix="/tight")
    path = images(service, "good", 1)[0]
    try:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=service.url, timeout=120) as client:
                return await asyncio.gather(
                    *(
                        client.post("/tight/v1/lines/press-a/predict", files={"file": (path.name, path.read_bytes())})
                        for _ in range(40)
                    )
                )

        responses = asyncio.run(burst())
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0, codes
        ours = 0
        for r in responses:
            if r.status_code == 503:  # every refusal says when to come back
                assert r.headers.get("retry-after") == "1", r.headers
                if r.text == RAYS_OWN_REFUSAL:  # Ray's queue in front of a replica, plain text (README: limits)
                    continue
                assert "at capacity" in r.json()["detail"], r.text
                ours += 1
        assert ours > 0, [r.text for r in responses]  # the ingress's own JSON 503s answer the burst
        with service.client() as client:
            after = client.post("/tight/v1/lines/press-a/predict", files={"file": (path.name, path.read_bytes())})
            assert after.status_code == 200
    finally:
        serve.delete("tight")
