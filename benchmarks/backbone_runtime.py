"""The service's Backbone on each runtime, side by side in one run, on a real data set:

    python -m benchmarks.backbone_runtime --data DATASETS/magnetic_tile [--head patchcore] [--seconds 6]

It fits a line, then runs the backbone as the Backbone deployment does (uint8 images in, float16 maps out,
:func:`lineguard.models.feature_runtime.feature_runner`) on torch, ONNX Runtime and OpenVINO, in fp32 and,
on CPUs with native bf16, bf16. For each it reports:

- the backbone alone: single-image latency (p50 ms) and batch-16 throughput (images/s), the paths taking
  turns second by second (benchmarks.edge.timings);
- the line's answers on every test image as the Scorer computes them from those maps, with the line's own
  neighbour search (``search_precision: card``) and with an fp32 search: image AUROC, the largest relative
  score difference from an exported bundle's reference (torch fp32 maps, not rounded, fp32 search) and the
  decisions that differ from it.

This is what ``runtime: auto`` in serve_config.yaml was chosen by. The CPU's flags are printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from benchmarks.edge import cpu_flags, timings
from lineguard.models.device import cpu_has_native_bf16
from lineguard.models.feature_runtime import FeatureRunner, TorchFeatures, feature_runner
from lineguard.models.heads.patchcore import PatchCore
from lineguard.models.memory import keep_large_buffers
from lineguard.models.preprocess import open_image, resize
from lineguard.registry.image_models import anomaly_scorer
from lineguard.registry.store import ModelStore
from lineguard.training.data import discover
from lineguard.training.fit_image import fit_image_line
from lineguard.training.options import FitOptions


def runners(card_backbone: Any, size: int) -> dict[str, FeatureRunner]:
    configs = [("torch", "fp32"), ("onnx", "fp32"), ("openvino", "fp32")]
    if cpu_has_native_bf16():
        configs[1:1] = [("torch", "bf16")]
        configs.append(("openvino", "bf16"))
    name, layers = card_backbone.name, list(card_backbone.layers)
    return {
        f"{runtime} {precision}": feature_runner(name, layers, size, device="cpu", precision=precision, runtime=runtime)
        for runtime, precision in configs
    }


def scores(
    maps_of: Callable[[np.ndarray], list[np.ndarray]], scorer: Any, images: np.ndarray, search: str
) -> np.ndarray:
    if isinstance(scorer.head, PatchCore):
        scorer.head.use_search(search)
    out: list[float] = []
    for start in range(0, len(images), 16):
        maps = [torch.from_numpy(m).float() for m in maps_of(images[start : start + 16])]
        out.extend(d.anomaly_score for d in scorer.predict(maps))
    return np.array(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="an MVTec-layout data set with test images")
    parser.add_argument("--head", default="patchcore")
    parser.add_argument("--seconds", type=float, default=6.0, help="timing per path")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    keep_large_buffers()  # as every replica that runs a network (models/memory.py)
    print(f"CPU: {cpu_flags()}; torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory(prefix="lineguard-bench-backbone-") as scratch:
        store = ModelStore(Path(scratch) / "store")
        fit_image_line("bench", args.data, FitOptions(head=args.head, evaluate=False, progress=False), store)
        card = store.read_card("bench")
        scorer = anomaly_scorer(store, card)
    assert card.backbone is not None
    size = card.backbone.image_size
    samples = discover(args.data).test
    labels = np.array([s.label for s in samples])
    images = np.stack([np.asarray(resize(open_image(s.path.read_bytes()), size)) for s in samples])
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))  # as the Preprocessor sends them
    paths = runners(card.backbone, size)
    threshold = card.threshold.value
    exact = paths["torch fp32"]
    assert isinstance(exact, TorchFeatures)

    def unrounded(batch: np.ndarray) -> list[np.ndarray]:  # the bundle's reference: fp32 maps, not float16
        x = torch.from_numpy(batch).float().sub_(exact._mean).div_(exact._std)
        return [m.numpy() for m in exact.extractor.extract(x)]

    reference = scores(unrounded, scorer, images, "fp32")
    own = str(card.head.params.get("search_precision", "auto")) if card.head else "auto"
    answers: dict[str, dict[str, Any]] = {}
    for name, run in paths.items():
        for search in ("card", "fp32"):
            got = scores(run, scorer, images, own if search == "card" else "fp32")
            rel = np.abs(got - reference) / np.maximum(np.abs(reference), 1e-12)
            answers[f"{name}, {search} search"] = {
                "image_auroc": round(float(roc_auc_score(labels, got)), 4),
                "max_relative_difference": float(rel.max()),
                "decisions_differ": int(((got > threshold) != (reference > threshold)).sum()),
            }
    timed = timings(dict(paths), images, args.seconds)
    base = timed["torch bf16" if "torch bf16" in timed else "torch fp32"]["batch16_images_per_s"]
    print(f"\n{args.data.name}, {args.head}, {len(samples)} test images; backbone alone, then the line's answers")
    for name, t in timed.items():
        print(
            f"  {name:<15}{t['single_p50_ms']:>7.2f} ms {t['batch16_images_per_s']:>7.1f}/s "
            f"({t['batch16_images_per_s'] / base:4.2f}x)"
        )
    for name, a in answers.items():
        print(
            f"  {name:<30} AUROC {a['image_auroc']:.4f}  largest relative difference {a['max_relative_difference']:.1e}"
            f"  decisions differ {a['decisions_differ']}/{len(samples)}"
        )
    if args.out:
        args.out.write_text(json.dumps({"timings": timed, "answers": answers}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
