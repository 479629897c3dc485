"""Exported bundles against the torch path, side by side in one run, on a real data set:

    python -m benchmarks.edge --data DATASETS/magnetic_tile [--heads patchcore,padim,mean] [--seconds 5]
    python -m benchmarks.edge --sensor        # a sensor line's bundle answering over the edge's HTTP server

For each head it fits the line (``lineguard fit``'s code), exports it to ONNX and OpenVINO with the parity
check run on every test image, and reports:

- parity: the largest relative score difference against torch fp32 and the decisions that differ, on
  every test image (what the bundle's manifest stores), and against the service's default precision;
- image AUROC of each path on the test images (torch with the service's default precision, torch fp32,
  each bundle);
- backbone + head in process, on decoded and resized images: single-image latency (p50 ms) and batch-16
  throughput (images/s) of torch (the service's default precision, and fp32), ONNX Runtime, OpenVINO and
  OpenVINO with an INT8 backbone (``--int8``, calibrated on the training images; ``--no-int8`` skips it);
- the INT8 bundle's accuracy cost: image and pixel AUROC against its fp32 twin on every test image;
- the peak resident memory (VmHWM) of a fresh process that loads the line and scores a batch of 16: the
  edge runtime against torch (what a Backbone + Scorer replica holds).

``--sensor`` fits the synthetic sensor line, exports it and serves the bundle with ``lineguard-edge
serve`` in its own process: single readings over HTTP from one client, p50 and p99 ms, and the
server's resident memory.

Each timing interleaves the paths round by round, so machine noise hits them alike. The CPU's flags are
printed: absolute times differ several-fold between machines, ratios much less.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import lineguard_edge
from benchmarks.timing import summary
from lineguard.models.heads.patchcore import PatchCore
from lineguard.models.preprocess import open_image, resize
from lineguard.models.spec import Runtime
from lineguard.registry.image_models import load_image_model
from lineguard.registry.store import ModelStore
from lineguard.training.data import discover
from lineguard.training.export import export_line
from lineguard.training.fit_image import fit_image_line
from lineguard.training.options import ExportSettings, FitOptions

FORMATS = ("onnx", "openvino")


def cpu_flags() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no lscpu)"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return (
        f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs, flags: {' '.join(wanted)}"
    )


def torch_path(store: ModelStore, line: str, precision: str) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 (B, S, S, 3) -> scores, through the in-process torch pipeline at ``precision``."""
    card, model = load_image_model(store, line, runtime=Runtime(device="cpu", precision=precision))
    head = model.scorer.head
    if precision == "fp32" and isinstance(head, PatchCore):
        head.use_search("fp32")
    assert card.backbone is not None
    config = card.backbone.preprocess()
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)

    def run(images: np.ndarray) -> np.ndarray:
        batch = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        return np.array([d.anomaly_score for d in model.predict_batch(batch)])

    return run


def bundle_path(folder: Path) -> Callable[[np.ndarray], np.ndarray]:
    model = lineguard_edge.load(folder)

    def run(images: np.ndarray) -> np.ndarray:
        return model.graph.run({"images": images})[0]

    return run


def timings(paths: dict[str, Callable[[np.ndarray], Any]], images: np.ndarray, seconds: float) -> dict[str, Any]:
    """p50 ms of one image and images/s at batch 16: each path runs in blocks of a second, the paths taking
    turns block by block (not call by call: a runtime's threads spin for a while after each call and
    would slow whichever path runs next)."""
    single: dict[str, list[float]] = {name: [] for name in paths}
    batched: dict[str, list[float]] = {name: [] for name in paths}
    batch = images[:16]
    for run in paths.values():  # warm-up
        run(images[:1])
        run(batch)
    for block in range(max(1, round(seconds))):
        for name, run in paths.items():
            block_end = time.perf_counter() + 1.0
            i = block
            while time.perf_counter() < block_end:
                start = time.perf_counter()
                run(images[i % len(images)][None])
                single[name].append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                run(batch)
                batched[name].append(time.perf_counter() - start)
                i += 1
    return {
        name: {
            "single_p50_ms": summary(single[name])["p50"],
            "batch16_images_per_s": round(len(batch) / float(np.median(batched[name])), 1),
        }
        for name in paths
    }


RSS_PROBE = """
import json, sys
import numpy as np
kind, where, line = sys.argv[1:4]
images = np.load(sys.argv[4])
if kind == "edge":
    import lineguard_edge
    model = lineguard_edge.load(where)
    for _ in range(3):
        model.graph.run({"images": images})
else:
    import torch
    from benchmarks.edge import torch_path
    from lineguard.registry.store import ModelStore
    run = torch_path(ModelStore(where), line, "auto")
    for _ in range(3):
        run(images)
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"max_rss_mb": int(peak.split()[1]) / 1024}))
"""


def resident_mb(kind: str, where: Path, line: str, images: np.ndarray, scratch: Path) -> float:
    np.save(scratch / "batch.npy", images)
    done = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, kind, str(where), line, str(scratch / "batch.npy")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return round(float(json.loads(done.stdout.splitlines()[-1])["max_rss_mb"]), 1)


def bench_head(head: str, data: Path, seconds: float, scratch: Path, int8: bool = True) -> dict[str, Any]:
    store = ModelStore(scratch / "store")
    line = f"bench-{head}"
    fit_image_line(line, data, FitOptions(head=head, progress=False), store)
    card = store.read_card(line)
    assert card.backbone is not None
    size = card.backbone.image_size
    samples = discover(data).test
    labels = np.array([s.label for s in samples])
    images = np.stack([np.asarray(resize(open_image(s.path.read_bytes()), size)) for s in samples])
    result: dict[str, Any] = {"head": head, "test_images": len(samples), "parity": {}, "image_auroc": {}}
    paths: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "torch (service default)": torch_path(store, line, "auto"),
        "torch fp32": torch_path(store, line, "fp32"),
    }
    for fmt in FORMATS:
        folder = scratch / f"{line}-{fmt}"
        settings = ExportSettings(format=fmt, data=data / "test", parity_items=0)
        report = export_line(store, line, folder, settings)
        result["parity"][fmt] = report.parity.to_dict()
        paths[fmt] = bundle_path(folder)
    if int8:  # calibrated on the training images; its accuracy against fp32 measured on every test image
        folder = scratch / f"{line}-int8"
        # its decisions not held (int8_decisions 0.99): the cost is measured, whatever it is
        quantized = ExportSettings(format="openvino", data=data, int8=True, int8_decisions=0.99)
        report = export_line(store, line, folder, quantized)
        result["parity"]["openvino int8"] = report.parity.to_dict()
        result["int8_accuracy"] = report.accuracy
        paths["openvino int8"] = bundle_path(folder)
    for name, run in paths.items():
        scores = np.concatenate([run(images[i : i + 16]) for i in range(0, len(images), 16)])
        result["image_auroc"][name] = round(float(roc_auc_score(labels, scores)), 4)
    result["in_process"] = timings(paths, images, seconds)
    result["resident_mb"] = {
        "edge (onnx)": resident_mb("edge", scratch / f"{line}-onnx", line, images[:16], scratch),
        "torch": resident_mb("torch", scratch / "store", line, images[:16], scratch),
    }
    return result


def bench_sensor_http(scratch: Path, requests: int) -> dict[str, Any]:
    import httpx

    from lineguard.training.fit_sensor import fit_sensor_line
    from lineguard.training.options import SensorFitOptions, SensorTrainOptions
    from lineguard.training.sensor_data import read_table
    from lineguard.training.synthetic_sensor import write_csv

    store = ModelStore(scratch / "store")
    csv = write_csv(scratch / "spindle.csv", rows=4000, seed=0)
    fit_sensor_line("spindle", csv, SensorFitOptions(train=SensorTrainOptions(workers=0, epochs=60)), store)
    export_line(store, "spindle", scratch / "spindle.bundle", ExportSettings())
    values = read_table(csv).values[:requests].astype(np.float64)
    port = 18000 + (int(time.time()) % 1000)
    command = [sys.executable, "-m", "lineguard_edge.cli", "serve", str(scratch / "spindle.bundle"),
               "--port", str(port), "--history", str(scratch / "history.sqlite")]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(300):
                try:
                    client.get("/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            latencies = []
            for row in values:
                start = time.perf_counter()
                answer = client.post("/v1/lines/spindle/predict", json={"values": row.tolist()})
                latencies.append((time.perf_counter() - start) * 1000)
                assert answer.status_code == 200, answer.text
        peak = next(line for line in Path(f"/proc/{server.pid}/status").read_text().splitlines() if "VmHWM" in line)
        return {"requests": len(latencies), **summary(latencies), "server_max_rss_mb": int(peak.split()[1]) / 1024}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="an MVTec-layout data set with test images")
    parser.add_argument("--sensor", action="store_true", help="the sensor line over the edge's HTTP server instead")
    parser.add_argument("--requests", type=int, default=2000, help="--sensor: readings sent, one per request")
    parser.add_argument("--heads", default="patchcore,padim,mean")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing per path")
    parser.add_argument("--no-int8", action="store_true", help="skip the OpenVINO INT8 bundle")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_flags()}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    if args.sensor:
        with tempfile.TemporaryDirectory(prefix="lineguard-bench-edge-") as scratch:
            print(json.dumps({"sensor_over_http": bench_sensor_http(Path(scratch), args.requests)}))
        return 0
    if args.data is None:
        parser.error("give --data (an image data set) or --sensor")
    results = []
    with tempfile.TemporaryDirectory(prefix="lineguard-bench-edge-") as scratch:
        for head in args.heads.split(","):
            folder = Path(scratch) / head
            folder.mkdir()
            result = bench_head(head, args.data, args.seconds, folder, not args.no_int8)
            results.append(result)
            print(json.dumps(result), flush=True)
    print(f"\n{args.data.name}: backbone + head in process (ms p50 one image / images per s at batch 16)")
    for result in results:
        base = result["in_process"]["torch (service default)"]["batch16_images_per_s"]
        for name, t in result["in_process"].items():
            parity = result["parity"].get(name, {})
            note = (
                f"  parity {parity['max_relative_difference']:.1e}, {parity['decisions_differ']} decisions differ"
                if parity else ""
            )  # fmt: skip
            print(
                f"  {result['head']:<10}{name:<24}{t['single_p50_ms']:>8.1f} ms {t['batch16_images_per_s']:>8.1f}/s "
                f"({t['batch16_images_per_s'] / base:4.2f}x)  AUROC {result['image_auroc'][name]:.4f}{note}"
            )
        if result.get("int8_accuracy"):
            print(f"  {result['head']:<10}INT8 against fp32: {result['int8_accuracy']}")
        print(f"  {result['head']:<10}resident memory (MB): {result['resident_mb']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
