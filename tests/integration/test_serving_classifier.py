"""A classifier line served beside anomaly lines, over real HTTP: answers, batches, live severity, errors."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from lineguard.registry.image_models import load_classifier
from tests.integration.conftest import CLASSIFIER_LINE, IMAGE_SIZE, LINES, Service

PREDICT = f"/v1/lines/{CLASSIFIER_LINE}/predict"


def image(service: Service, kind: str, index: int = 0) -> Path:
    return sorted((service.class_data / kind).glob("*.png"))[index]


def post(client: httpx.Client, path: Path, route: str = PREDICT, **data: str) -> httpx.Response:
    return client.post(route, data=data, files={"file": (path.name, path.read_bytes(), "image/png")})


def in_process(service: Service, paths: list[Path]) -> np.ndarray:
    from lineguard.models.preprocess import PreprocessConfig
    from lineguard.models.spec import Runtime
    from lineguard.models.tensors import load_file

    _, extractor, classifier = load_classifier(service.store, CLASSIFIER_LINE, runtime=Runtime(device="cpu"))
    config = PreprocessConfig(IMAGE_SIZE, extractor.mean, extractor.std)
    features = extractor.extract(torch.stack([load_file(p, config) for p in paths]))
    return np.stack([d.probabilities for d in classifier.predict(features)])


def test_answer_fields_and_agreement_with_the_in_process_model(service: Service) -> None:
    paths = [image(service, kind) for kind in ("good", "scratch", "spot", "dent")]
    truth = in_process(service, paths)
    with service.client() as client:
        for path, expected in zip(paths, truth, strict=True):
            response = post(client, path, sensor_id="camera-3")
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["line"] == CLASSIFIER_LINE and body["model_version"] == "v1"
            assert body["sensor_id"] == "camera-3" and datetime.fromisoformat(body["timestamp"]).tzinfo is not None
            assert body["inference_time_ms"] > 0 and "Server-Timing" in response.headers
            probabilities = body["probabilities"]
            assert list(probabilities) == ["dent", "good", "scratch", "spot"]
            assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
            # features travel as float16 between the deployments: the answers agree to about 1e-2
            np.testing.assert_allclose(list(probabilities.values()), expected, atol=2e-2)
            assert body["prediction"] == path.parent.name
            assert body["confidence"] == pytest.approx(probabilities[body["prediction"]], abs=1e-6)
            assert body["is_defect"] == (body["prediction"] != "good")
            assert body["defect_confidence"] == pytest.approx(1 - probabilities["good"], abs=1e-5)
            assert body["severity"] in ({"none"} if body["prediction"] == "good" else {"low", "high"})
        detail = client.get(f"/v1/lines/{CLASSIFIER_LINE}").json()
        assert detail["kind"] == "image-classifier" and detail["classes"] == ["dent", "good", "scratch", "spot"]
        assert detail["normal_class"] == "good" and detail["severity"] == {"high": 0.9, "low": 0.6}
        assert detail["image_auroc"] is not None


def test_batch_and_mixed_lines_share_the_backbone(service: Service) -> None:
    good, spot = image(service, "good", 1), image(service, "spot", 1)
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in (good, spot)]
    files.insert(1, ("files", ("broken.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")))
    with service.client() as client:
        response = client.post(f"{PREDICT}/batch", files=files)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["index"] for r in results] == [0, 1, 2]
        assert results[0]["prediction"]["prediction"] == "good" and results[2]["prediction"]["prediction"] == "spot"
        assert results[1]["error"]["status"] == 422 and "not an image" in results[1]["error"]["detail"]

    async def mixed() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
            jobs = []
            for i in range(12):
                line = CLASSIFIER_LINE if i % 2 else LINES[i % 3]
                path = spot if i % 2 else sorted((service.data / "test" / "good").glob("*.png"))[0]
                files = {"file": (path.name, path.read_bytes(), "image/png")}
                jobs.append(client.post(f"/v1/lines/{line}/predict", files=files))
            return await asyncio.gather(*jobs)

    for i, response in enumerate(asyncio.run(mixed())):  # concurrent: batched together through one Backbone
        assert response.status_code == 200, response.text
        assert ("prediction" in response.json()) == bool(i % 2)


def test_severity_and_threshold_change_live(service: Service) -> None:
    path = image(service, "scratch", 2)
    with service.client() as client:
        before = post(client, path).json()
        assert before["prediction"] == "scratch" and before["defect_confidence"] > 0.5
        rules = {"critical": 0.5, "watch": 0.2}
        changed = client.put(f"/v1/lines/{CLASSIFIER_LINE}/severity", json={"rules": rules, "note": "test"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["severity"] == rules and changed.json()["previous_severity"] == {"high": 0.9, "low": 0.6}
        time.sleep(1.2)  # the ingress re-reads a line's version after line_cache_ttl_s
        after = post(client, path).json()
        assert after["model_version"] == changed.json()["version"] != before["model_version"]
        assert after["severity"] == "critical" and after["prediction"] == before["prediction"]
        threshold = client.put(f"/v1/lines/{CLASSIFIER_LINE}/threshold", json={"threshold": 0.99})
        assert threshold.status_code == 200, threshold.text
        time.sleep(1.2)
        strict = post(client, path).json()
        assert strict["model_version"] == threshold.json()["version"]
        assert client.get(f"/v1/lines/{CLASSIFIER_LINE}").json()["threshold"] == 0.99
        defect = strict["defect_confidence"]
        if abs(defect - 0.99) > 1e-4:  # (answers are rounded to 6 digits)
            assert strict["prediction"] == ("scratch" if defect > 0.99 else "good")
            assert strict["severity"] == ("critical" if defect > 0.99 else "none")


@pytest.mark.parametrize(
    ("method", "route", "kwargs", "status", "message"),
    [
        ("post", f"{PREDICT}?heatmap=true", {"image": True}, 422, "not a heatmap"),
        ("post", PREDICT, {"json": {"values": [1.0, 2.0]}}, 422, "multipart/form-data"),
        ("put", f"/v1/lines/{CLASSIFIER_LINE}/threshold", {"json": {"threshold": 1.5}}, 422, "between 0 and 1"),
        ("put", f"/v1/lines/{CLASSIFIER_LINE}/severity", {"json": {"rules": {"a": 0.5, "b": 0.5}}}, 422, "distinct"),
        ("put", f"/v1/lines/{CLASSIFIER_LINE}/severity", {"json": {"rules": {}}}, 422, "at least 1"),
        ("put", f"/v1/lines/{LINES[0]}/severity", {"json": {"rules": {"high": 0.9}}}, 422, "image-classifier lines"),
        ("put", "/v1/lines/nope/severity", {"json": {"rules": {"high": 0.9}}}, 404, "unknown line"),
    ],
)
def test_bad_requests_get_named_4xx_errors(
    service: Service, method: str, route: str, kwargs: dict[str, object], status: int, message: str
) -> None:
    with service.client() as client:
        if kwargs.pop("image", False):
            path = image(service, "good")
            kwargs["files"] = {"file": (path.name, path.read_bytes(), "image/png")}
        response = getattr(client, method)(route, **kwargs)
        assert response.status_code == status, response.text
        assert message in response.text
