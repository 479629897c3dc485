"""The memory allocator and the threads under the networks, side by side in one run:

    python -m benchmarks.allocator [--seconds 8] [--size 256]

Each setting runs in a fresh process (the allocator is chosen when a process starts): glibc's defaults;
glibc with its mmap and trim thresholds raised (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``:
large buffers stay in the heap instead of going back to the kernel after every layer); jemalloc preloaded
from Debian's ``libjemalloc2``; and OpenMP's passive waiting (``OMP_WAIT_POLICY=PASSIVE``). In each, the
backbone (tf_efficientnet_lite0, two feature stages, the service's default) runs at batch 16 through
torch at the service's default precision, torch fp32 and ONNX Runtime, and the process reports ms per
image, the share of its CPU time spent in the kernel and the minor page faults per image.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.edge import cpu_flags

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
BIG = "10000000000"
SETTINGS: dict[str, dict[str, str]] = {
    "glibc defaults": {},
    "glibc, thresholds raised": {"MALLOC_MMAP_THRESHOLD_": BIG, "MALLOC_TRIM_THRESHOLD_": BIG},
    "jemalloc": {"LD_PRELOAD": str(JEMALLOC)},
    "glibc, OMP passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}

CHILD = """
import json, resource, sys, time
import numpy as np
import torch
from lineguard.models.backbone import FeatureExtractor

size, seconds, onnx_path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
batch = torch.randn(16, 3, size, size)
out = {}

def measure(name, run):
    run()
    before, start, n = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        run()
        n += 1
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    out[name] = {"ms_per_image": round(wall / n / 16 * 1000, 2), "kernel_share": round(system / (user + system), 3),
                 "faults_per_image": round((after.ru_minflt - before.ru_minflt) / n / 16)}

for precision in ("auto", "fp32"):
    extractor = FeatureExtractor(precision=precision, device="cpu")
    measure(f"torch {precision}", lambda: extractor.extract(batch))
import onnxruntime as ort
session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
array = batch.numpy()
measure("onnxruntime fp32", lambda: session.run(None, {"images": array}))
print(json.dumps(out))
"""


def export_backbone(path: Path, size: int) -> None:
    import torch

    from lineguard.models.backbone import FeatureExtractor

    net = FeatureExtractor(precision="fp32", device="cpu").model.eval()
    with torch.no_grad():
        torch.onnx.export(
            net, (torch.randn(2, 3, size, size),), str(path), input_names=["images"], dynamic_axes={"images": {0: "b"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip


def run_setting(env: dict[str, str], size: int, seconds: float, onnx: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(size), str(seconds), str(onnx)],
        env={**os.environ, **env}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="per path and setting")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_flags()}", flush=True)
    settings = {k: v for k, v in SETTINGS.items() if "LD_PRELOAD" not in v or JEMALLOC.exists()}
    with tempfile.TemporaryDirectory(prefix="lineguard-bench-alloc-") as scratch:
        onnx = Path(scratch) / "backbone.onnx"
        export_backbone(onnx, args.size)
        results = {name: run_setting(env, args.size, args.seconds, onnx) for name, env in settings.items()}
    print(json.dumps(results))
    print("\nbackbone at batch 16: ms per image / kernel share of CPU time / minor faults per image")
    for name, paths in results.items():
        cells = "   ".join(
            f"{path}: {r['ms_per_image']:.1f} ms, {r['kernel_share']:.0%}, {r['faults_per_image']}"
            for path, r in paths.items()
        )
        print(f"  {name:<26}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
