"""``lineguard demo``: the main job, offline: make a synthetic line, fit it, evaluate it, score parts."""

from __future__ import annotations

import json
from pathlib import Path

from training.evaluate import format_table
from training.fit_image import FitOptions, fit_image_line
from training.line_model import load_image_model
from training.store import ModelStore
from training.synthetic import write_line

DEMO_LINE = "demo-surface"


def run_demo(folder: Path, store_uri: str | None = None) -> int:
    data = folder / "data" / "surface"
    if not (data / "train" / "good").is_dir():
        print(f"writing a synthetic line (brushed metal; scratches, spots, dents) to {data}")
        write_line(data)
    store = ModelStore(store_uri or folder / "store")
    print(f"fitting line {DEMO_LINE!r} on {data} (PatchCore on tf_efficientnet_lite0, offline ImageNet weights)")
    report = fit_image_line(DEMO_LINE, data, FitOptions(), store)
    card = report.card
    print(f"stored {card.version} in {store.uri} in {report.timings['total']:.1f} s")
    if report.evaluation is not None:
        print(format_table(report.evaluation.metrics))
    _, model = load_image_model(store, DEMO_LINE)
    samples = [data / "test" / "good" / "000.png", data / "test" / "scratch" / "000.png"]
    for path in samples:
        prediction = model.predict_bytes([path.read_bytes()])[0]
        print(json.dumps({"file": str(path), **prediction.to_dict()}))
    print(f"\nnext: lineguard --store {store.uri} predict --line {DEMO_LINE} --heatmap heat.png {samples[1]}")
    return 0
