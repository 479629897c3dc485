"""Image-anomaly benchmark: fit time, scoring time and AUROC of every head, beside anomalib, in one run.

    python -m benchmarks.image_anomaly --data DATASETS/magnetic_tile [--anomalib] [--seeds 0,1,2]

For each LineGuard head it runs the real fit (``lineguard fit``'s code path, evaluation included), then
times single images through the in-process pipeline, interleaving "backbone alone" and "backbone +
head" per image so that machine noise hits both alike. With ``--anomalib`` (the ``bench`` extra) it
runs anomalib 2.7's PaDiM and PatchCore on the same tensors, weights and metrics.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import anomalib_baseline
from benchmarks.timing import summary, time_call
from lineguard.models.tensors import load_file
from lineguard.registry.image_models import load_image_model
from lineguard.registry.store import ModelStore
from lineguard.training.data import discover, read_mask
from lineguard.training.fit_image import fit_image_line
from lineguard.training.options import FitOptions


def bench_head(
    head: str,
    data: Path,
    seeds: list[int],
    timing_images: int,
    store: ModelStore,
    workers: int,
    head_params: dict[str, Any],
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        options = FitOptions(head=head, head_params=head_params, seed=seed, progress=False, workers=workers)
        started = time.perf_counter()
        report = fit_image_line(f"bench-{head}", data, options, store)
        wall = time.perf_counter() - started
        metrics = report.evaluation
        runs.append(
            {
                "seed": seed,
                "fit_s": round(wall - report.timings.get("evaluate", 0.0), 2),
                "fit_and_evaluate_s": round(wall, 2),
                "image_auroc": metrics.image_auroc if metrics else None,
                "pixel_auroc": metrics.pixel_auroc if metrics else None,
                "miss_rate": metrics.miss_rate if metrics else None,
                "over_detection_rate": metrics.over_detection_rate if metrics else None,
            }
        )
    result: dict[str, Any] = {"head": head, "runs": runs}
    for key in ("fit_s", "image_auroc", "pixel_auroc"):
        values: list[float] = [r[key] for r in runs if r[key] is not None]
        result[key] = round(statistics.fmean(values), 4) if values else None
        if len(values) > 1:
            result[key + "_sd"] = round(statistics.stdev(values), 4)
    result.update(time_scoring(store, f"bench-{head}", data, timing_images))
    return result


def time_scoring(store: ModelStore, line: str, data: Path, count: int) -> dict[str, Any]:
    """Per-image times: preprocessing, backbone alone, backbone + head (batch 1 and 16), interleaved."""
    _, model = load_image_model(store, line)
    samples = discover(data).test or discover(data).train
    paths = [s.path for s in samples[:: max(1, len(samples) // count)]][:count]
    preprocess_ms, tensors = [], []
    for path in paths:
        start = time.perf_counter()
        tensors.append(load_file(path, model.preprocess))
        preprocess_ms.append((time.perf_counter() - start) * 1000)
    batch = torch.stack(tensors)
    extractor, scorer = model.extractor, model.scorer
    for i in range(3):  # warm-up
        scorer.predict(extractor.extract(batch[i : i + 1]))
    backbone, full, head_only = [], [], []

    def score(x: torch.Tensor) -> object:
        return scorer.predict(extractor.extract(x))

    for i in range(len(batch)):
        x = batch[i : i + 1]
        backbone.append(time_call(partial(extractor.extract, x)))
        full.append(time_call(partial(score, x)))
        head_only.append(time_call(partial(scorer.predict, extractor.extract(x))))
    batch16 = [
        time_call(lambda: scorer.predict(extractor.extract(batch[:16]))) / 16 for _ in range(max(2, count // 16))
    ]
    ratio = statistics.median(full) / statistics.median(backbone)
    return {
        "preprocess_ms": summary(preprocess_ms),
        "backbone_batch1_ms": summary(backbone),
        "head_batch1_ms": summary(head_only),
        "batch1_ms": summary(full),
        "batch16_ms_per_image": summary(batch16),
        "score_over_backbone": round(ratio, 3),
        "precision": str(extractor.dtype).removeprefix("torch."),
    }


def bench_anomalib(data: Path, patchcore_images: int, coreset_ratio: float, timing_images: int) -> list[dict[str, Any]]:
    from lineguard.models.backbone import DEFAULT_BACKBONE, DEFAULT_LAYERS, FeatureExtractor
    from lineguard.models.preprocess import PreprocessConfig

    extractor = FeatureExtractor(DEFAULT_BACKBONE, DEFAULT_LAYERS, "auto", "cpu", "fp32")
    config = PreprocessConfig(256, extractor.mean, extractor.std)
    dataset = discover(data)
    train = torch.stack([load_file(s.path, config) for s in dataset.train])
    test = torch.stack([load_file(s.path, config) for s in dataset.test])
    labels = np.array([s.label for s in dataset.test])
    masks = [read_mask(s.mask, 256) if (s.label == 0 or s.mask) else None for s in dataset.test]  # None: no mask
    subset = train[np.random.default_rng(0).permutation(len(train))[:patchcore_images]]
    return [
        anomalib_baseline.run(
            "padim",
            train,
            test,
            labels,
            masks,
            DEFAULT_BACKBONE,
            list(DEFAULT_LAYERS),
            timing_images=timing_images,
        ),
        anomalib_baseline.run(
            "patchcore",
            subset,
            test,
            labels,
            masks,
            DEFAULT_BACKBONE,
            list(DEFAULT_LAYERS),
            coreset_ratio,
            timing_images,
        ),
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    def f(value: Any, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    print(
        f"\n{'model':<44}{'fit s':>8}{'img AUROC':>15}{'pix AUROC':>11}"
        f"{'b1 ms':>8}{'b16 ms/img':>12}{'bb ms':>8}{'ratio':>7}"
    )
    for r in rows:
        sd = f"±{r['image_auroc_sd']:.3f}" if "image_auroc_sd" in r else ""
        print(
            f"{r['head']:<44}{f(r.get('fit_s'), 1):>8}{f(r.get('image_auroc')) + sd:>15}{f(r.get('pixel_auroc')):>11}"
            f"{f(r['batch1_ms']['p50'], 1):>8}{f(r['batch16_ms_per_image']['p50'], 1):>12}"
            f"{f(r.get('backbone_batch1_ms', {}).get('p50'), 1):>8}{f(r.get('score_over_backbone'), 2):>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder in the MVTec layout")
    parser.add_argument("--heads", default="patchcore,padim,mean")
    parser.add_argument("--head-params", default="{}", help="JSON of head parameters, e.g. '{\"bank_size\": 8192}'")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; AUROC is averaged over them")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--workers", type=int, default=0, help="0: in-process fit; N: Ray Data actor pool")
    parser.add_argument("--timing-images", type=int, default=48)
    parser.add_argument("--anomalib", action="store_true", help="also run anomalib 2.7 (needs the bench extra)")
    parser.add_argument(
        "--anomalib-patchcore-images",
        type=int,
        default=200,
        help="train images for anomalib PatchCore (its greedy coreset takes hours on all of them)",
    )
    parser.add_argument("--anomalib-coreset", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"{args.data} is not a folder (an MVTec-layout data set: see the README, 'Benchmarks')")
    torch.set_num_threads(args.threads)
    if args.workers:
        import ray

        ray.init(address="local", include_dashboard=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="lineguard-bench-") as tmp:
        store = ModelStore(tmp)
        for head in [h.strip() for h in args.heads.split(",") if h.strip()]:
            params = json.loads(args.head_params) if head == "patchcore" else {}
            rows.append(bench_head(head, args.data, seeds, args.timing_images, store, args.workers, params))
            print_table(rows[-1:])
    if args.anomalib:
        if anomalib_baseline.available():
            rows += bench_anomalib(args.data, args.anomalib_patchcore_images, args.anomalib_coreset, args.timing_images)
        else:
            print("anomalib is not installed: pip install -e '.[bench]'")
    print(f"\n{args.data} | torch threads {args.threads} | {torch.__version__}")
    print_table(rows)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
