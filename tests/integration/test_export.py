"""``lineguard export`` for every kind and head, into both formats, and the edge runtime scoring the bundles:
the parity stored on export, the edge's answers against the service's own (the same fields, the same
numbers to fp32 noise, the same decisions and heatmaps), and bundles or exports that must be refused."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import lineguard_edge
from lineguard.errors import ConfigError, CorruptModelError, DataError, ExportError, ImageTooLargeError
from lineguard.models.heads.patchcore import PatchCore
from lineguard.models.spec import Runtime
from lineguard.models.tensors import load_file
from lineguard.models.visualize import normalise_map, overlay
from lineguard.registry.answers import ClassPrediction, Prediction, SensorBatchPrediction, SensorPrediction
from lineguard.registry.image_models import load_classifier, load_image_model
from lineguard.registry.sensor_models import sensor_model
from lineguard.registry.store import ModelStore
from lineguard.training.export import export_line
from lineguard.training.fit_classifier import fit_classifier_line
from lineguard.training.fit_image import fit_image_line
from lineguard.training.fit_sensor import fit_sensor_line
from lineguard.training.options import (
    ClassifierFitOptions,
    ClassifierTrainOptions,
    ExportSettings,
    FitOptions,
    SensorFitOptions,
    SensorTrainOptions,
)
from lineguard.training.sensor_data import read_table
from lineguard.training.synthetic import write_class_folders
from lineguard.training.synthetic_sensor import write_csv
from lineguard_edge.history import LocalHistory
from lineguard_edge.readings import Readings
from lineguard_edge.server import EdgeService, make_server, serve_in_thread
from tests.support import png_header_only

FP32 = Runtime(device="cpu", precision="fp32")
HEADS = {"patchcore": {"bank_size": 1024}, "padim": {}, "mean": {}}


@pytest.fixture(scope="module")
def lines(synthetic_line: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """One store with a line of each head, a classifier line and a sensor line."""
    root = tmp_path_factory.mktemp("export")
    store = ModelStore(root / "store")
    for head, params in HEADS.items():
        options = FitOptions(head=head, head_params=params, image_size=128, progress=False)
        fit_image_line(f"surface-{head}", synthetic_line, options, store)
    classes = write_class_folders(root / "parts", seed=2, size=96, n_good=30, n_per_defect=15)
    quick = ClassifierFitOptions(
        image_size=96, tail="none", views=2, progress=False, hidden=64, train=ClassifierTrainOptions(workers=0)
    )
    fit_classifier_line("sorter", classes, quick, store)
    csv = write_csv(root / "spindle.csv", rows=1500, seed=0)
    fit_sensor_line("spindle", csv, SensorFitOptions(train=SensorTrainOptions(workers=0, epochs=30)), store)
    return store


def _export(store: ModelStore, line: str, folder: Path, fmt: str, **changes: Any) -> lineguard_edge.EdgeModel:
    report = export_line(store, line, folder, replace(ExportSettings(format=fmt, parity_items=0), **changes))
    assert report.parity.passed and report.parity.decisions_differ == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["parity"]["passed"] and manifest["parity"]["items"] == report.parity.items > 0
    return lineguard_edge.load(folder)


STREAM_FIELDS = {"stream", "alarm", "alarm_events", "window"}  # the service's streams: the edge scores readings alone


def _fields(model: type[Any]) -> set[str]:
    return set(model.model_fields) - STREAM_FIELDS


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
@pytest.mark.parametrize("head", list(HEADS))
def test_anomaly_bundles_answer_as_the_service(
    lines: ModelStore, synthetic_line: Path, tmp_path: Path, head: str, fmt: str
) -> None:
    line = f"surface-{head}"
    edge = _export(lines, line, tmp_path / "bundle", fmt)
    card, model = load_image_model(lines, line, runtime=FP32)
    if isinstance(model.scorer.head, PatchCore):
        model.scorer.head.use_search("fp32")
    files = sorted((synthetic_line / "test").rglob("*.png"))
    data = [f.read_bytes() for f in files]
    served = model.predict_bytes(data, with_maps=True)
    answers = edge.predict_many(data, heatmap=True)
    assert set(answers[0]) == _fields(Prediction)  # the service's answer, field for field
    got = np.array([a["anomaly_score"] for a in answers])
    want = np.array([d.anomaly_score for d in served])
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert [a["is_anomaly"] for a in answers] == [d.is_anomaly for d in served]
    assert any(a["is_anomaly"] for a in answers) and not all(a["is_anomaly"] for a in answers)
    assert [a["threshold"] for a in answers] == [card.threshold.value] * len(files)
    # the heatmap the service draws (api/predict.py: the same overlay of the resized part) within a shade
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(answers[-1]["heatmap_png"]))), dtype=int)
    resized = Image.open(files[-1]).convert("RGB").resize((128, 128), Image.Resampling.BILINEAR)
    assert served[-1].anomaly_map is not None
    drawn = overlay(resized, normalise_map(served[-1].anomaly_map, *model.scorer.display_range()))
    assert np.abs(decoded - np.asarray(drawn, dtype=int)).max() <= 2


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_classifier_bundle_answers_as_the_service(lines: ModelStore, tmp_path: Path, fmt: str) -> None:
    edge = _export(lines, "sorter", tmp_path / "bundle", fmt)
    card, extractor, fitted = load_classifier(lines, "sorter", runtime=FP32)
    files = sorted((Path(card.data.root) if card.data else tmp_path).rglob("*.png"))[::7]
    answers = edge.predict_many([f.read_bytes() for f in files])
    assert set(answers[0]) == _fields(ClassPrediction)
    assert card.backbone is not None
    batch = torch.stack([load_file(f, card.backbone.preprocess()) for f in files])
    decided = fitted.predict(extractor.extract(batch))
    classes = fitted.classes
    assert [a["prediction"] for a in answers] == [classes[d.index] for d in decided]
    assert [a["severity"] for a in answers] == [d.severity for d in decided]
    got = np.array([[a["probabilities"][c] for c in classes] for a in answers])
    np.testing.assert_allclose(got, np.stack([d.probabilities for d in decided]), atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_sensor_bundle_answers_as_the_service(lines: ModelStore, tmp_path: Path, fmt: str) -> None:
    edge = _export(lines, "spindle", tmp_path / "bundle", fmt)
    card = lines.read_card("spindle")
    model = sensor_model(lines, card)
    assert card.data is not None
    table = read_table(card.data.root, model.features)
    want = model.predict(table.values.astype(np.float64))
    one = edge.predict(table.values[0].tolist(), sensor_id="m-7")
    assert set(one) == _fields(SensorPrediction) and one["sensor_id"] == "m-7"
    assert one["top_features"][0]["feature"] == model.features[int(want.top_index[0, 0])]
    batch = edge.predict_readings(Readings(table.values.astype(np.float64), single=False, sensor_id=None))
    assert set(batch) == _fields(SensorBatchPrediction)
    np.testing.assert_allclose(batch["scores"], want.scores, rtol=1e-4)
    assert batch["status"] == ["anomaly" if f else "normal" for f in want.is_anomaly]
    assert batch["anomalies"] == int(want.is_anomaly.sum()) > 0


def test_damaged_bundles_are_refused_naming_the_file(lines: ModelStore, tmp_path: Path) -> None:
    good = tmp_path / "good"
    _export(lines, "spindle", good, "onnx")
    cases = {
        "model.onnx": lambda p: p.write_bytes(p.read_bytes()[:-1] + b"\0"),
        "spec.json": lambda p: p.unlink(),
        "manifest.json": lambda p: p.write_text(p.read_text().replace('"format_version": 1', '"format_version": 7')),
    }
    for name, damage in cases.items():
        folder = tmp_path / name.replace(".", "-")
        shutil.copytree(good, folder)
        damage(folder / name)
        with pytest.raises(CorruptModelError, match=re.escape(str(folder / name))):
            lineguard_edge.load(folder)
    with pytest.raises(CorruptModelError, match=re.escape("manifest.json: missing")):
        lineguard_edge.load(tmp_path)


def test_bad_input_gets_the_services_errors(lines: ModelStore, tmp_path: Path) -> None:
    edge = _export(lines, "surface-mean", tmp_path / "bundle", "onnx")
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        edge.predict(png_header_only(9000, 9000))
    with pytest.raises(DataError, match="not an image"):
        edge.predict(b"not an image")
    sensor = _export(lines, "spindle", tmp_path / "sensor", "onnx")
    with pytest.raises(DataError, match="expects 12 values, got 3"):
        sensor.predict([1.0, 2.0, 3.0])


def test_exports_that_cannot_hold_are_refused(lines: ModelStore, tmp_path: Path) -> None:
    out = tmp_path / "strict"
    with pytest.raises(ExportError, match=r"largest relative difference .* \(tolerance 1e-12\).*no bundle was written"):
        export_line(lines, "surface-padim", out, ExportSettings(tolerance=1e-12, parity_items=8))
    assert not out.exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        export_line(lines, "spindle", tmp_path / "full", ExportSettings())
    with pytest.raises(ConfigError, match="unknown export format"):
        export_line(lines, "spindle", tmp_path / "tf", ExportSettings(format="tflite"))


def test_an_int8_bundle_carries_its_accuracy_cost(lines: ModelStore, synthetic_line: Path, tmp_path: Path) -> None:
    """--int8: the backbone quantized by NNCF on the line's normal images, the head left in fp32; held to its
    decisions (not to fp32's tolerance) and measured against its fp32 twin on the labelled test images."""
    settings = ExportSettings(format="openvino", data=synthetic_line, int8=True, parity_items=0)
    report = export_line(lines, "surface-patchcore", tmp_path / "int8", settings)
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["parity"]["passed"]
    assert manifest["parity"]["tolerance"] is None and manifest["parity"]["allowed_decisions"] >= 0
    assert report.parity.max_relative_difference > 1e-4  # really quantized: not fp32's numbers
    xml = (tmp_path / "int8" / "model.xml").read_text()
    assert "FakeQuantize" in xml or 'element_type="i8"' in xml
    carried = manifest["int8_threshold"]  # the threshold carried onto the INT8 scores, fitted on the line's images
    assert carried["items"] == report.parity.items and carried["correlation"] > 0.8
    spec = json.loads((tmp_path / "int8" / "spec.json").read_text())["threshold"]
    fp32 = lines.read_card("surface-patchcore").threshold.value
    assert spec["value"] == pytest.approx(carried["slope"] * fp32 + carried["intercept"])
    assert "carried to INT8 scores" in spec["method"]
    accuracy = manifest["accuracy"]
    assert accuracy == report.accuracy and accuracy["test_images"] == 20
    assert set(accuracy["image_auroc"]) == set(accuracy["pixel_auroc"]) == {"fp32", "int8"}
    assert accuracy["image_auroc"]["int8"] > 0.9 and accuracy["pixel_auroc"]["int8"] > 0.8
    model = lineguard_edge.load(tmp_path / "int8")
    good = sorted((synthetic_line / "test" / "good").glob("*.png"))[0]
    assert model.predict(good.read_bytes())["is_anomaly"] is False
    with pytest.raises(ConfigError, match=r"--int8 bundles are OpenVINO's.*--format openvino"):
        export_line(lines, "surface-patchcore", tmp_path / "onnx", ExportSettings(int8=True))
    with pytest.raises(ConfigError, match="--int8 is for image-anomaly lines; 'spindle' is a sensor"):
        export_line(lines, "spindle", tmp_path / "sensor", ExportSettings(format="openvino", int8=True))


def test_the_edge_server_takes_the_services_image_requests(
    lines: ModelStore, synthetic_line: Path, tmp_path: Path
) -> None:
    models = {
        "surface-patchcore": _export(lines, "surface-patchcore", tmp_path / "a", "onnx"),
        "sorter": _export(lines, "sorter", tmp_path / "c", "openvino"),
    }
    server = make_server(EdgeService(models, LocalHistory(), default_line="surface-patchcore"), port=0)
    serve_in_thread(server)
    part = sorted((synthetic_line / "test" / "scratch").glob("*.png"))[0]
    form = {"file": (part.name, part.read_bytes(), "image/png")}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", timeout=30) as client:
            full = client.post("/v1/lines/surface-patchcore/predict", files=form, data={"sensor_id": "cam-1"},
                               params={"heatmap": "true"})  # fmt: skip
            assert full.status_code == 200, full.text
            body = full.json()
            assert body["is_anomaly"] and body["sensor_id"] == "cam-1" and body["heatmap_png"]
            assert set(body) == _fields(Prediction)  # every field has a value here
            plain = client.post("/predict", files=form).json()
            assert set(plain) == {"anomaly_score", "threshold", "is_anomaly", "line", "model_version", "prediction_id"}
            assert plain["anomaly_score"] == pytest.approx(body["anomaly_score"], rel=1e-6)
            sorted_part = client.post("/v1/lines/sorter/predict", files=form).json()
            assert sorted_part["line"] == "sorter" and sorted_part["timestamp"].endswith("Z")
            huge = {"file": ("b.png", png_header_only(9000, 9000))}
            refusals = [
                (client.post("/predict", files={"file": ("x.png", b"not an image", "image/png")}), 422, "not an image"),
                (client.post("/predict", files=huge), 413, "over the limit"),
                (client.post("/predict", json={"values": [1]}), 422, "multipart/form-data"),
                (client.post("/predict", files={"picture": ("a.png", b"x")}), 422, "no file field named 'file'"),
                (client.post("/v1/lines/sorter/predict", files=form, params={"heatmap": "true"}), 422, "classifier"),
            ]  # fmt: skip
            for answer, status, text in refusals:
                assert answer.status_code == status and text in answer.json()["detail"], answer.text
            rows = client.get("/prediction_history").json()
            assert [r["line"] for r in rows] == ["sorter", "surface-patchcore", "surface-patchcore"]
    finally:
        server.shutdown()
        server.server_close()


def test_a_fit_exports_its_version_into_the_store(lines: ModelStore, tmp_path: Path) -> None:
    """``lineguard fit ... --export onnx,openvino`` leaves both bundles beside the new version, each with its
    parity; ``lineguard export --to-store`` replaces one; an unknown format is a usage error before any fit."""
    from lineguard.cli.main import main

    csv = write_csv(tmp_path / "spindle.csv", rows=800, seed=3)
    store = ["--store", str(lines.root)]
    fit = [*store, "fit", "sensor", "--line", "spindle-2", "--data", str(csv), "--epochs", "5", "--workers", "0"]
    assert main([*fit, "--export", "onnx,openvino"]) == 0
    version = lines.current_version("spindle-2")
    assert lines.bundle_formats("spindle-2", version) == ["onnx", "openvino"]
    for fmt in ("onnx", "openvino"):
        folder = tmp_path / fmt
        folder.mkdir()
        for name, data in lines.read_bundle("spindle-2", version, fmt).items():
            (folder / name).write_bytes(data)
        model = lineguard_edge.load(folder)
        assert model.bundle.manifest["parity"]["passed"] and model.bundle.version == version
    assert main([*store, "export", "spindle-2", "--format", "onnx", "--to-store"]) == 0
    assert main([*fit, "--export", "tflite"]) == 2
    assert lines.current_version("spindle-2") == version  # refused before fitting
