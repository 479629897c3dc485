"""Classifier benchmark: the same real line fitted as a classifier and as an anomaly line, on the same
held-out images, in one run.

    python -m benchmarks.classifier --data DATASETS/magnetic_tile [--task binary|types]
                                    [--tail frozen] [--seeds 0,1,2] [--workers 0]

The MVTec-layout data set becomes a class-folder line (``binary``: good vs defective, every defect type
merged; ``types``: good and one class per defect type). The classifier is fitted on its training and
validation split (labels used) and evaluated on its held-out test split. The anomaly line (PatchCore,
the defaults of ``lineguard fit``) is fitted on the good images of the same training and validation
split (no labels, no defects) and evaluated on the same test images, with its normal-only threshold.
Per-image scoring time in process (batch 1: the shared backbone, then the head) is measured for both,
interleaved image by image so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks.datasets import DATASETS
from benchmarks.timing import summary, time_call
from lineguard.models.tensors import load_file
from lineguard.registry.image_models import load_classifier, load_image_model
from lineguard.registry.store import ModelStore
from lineguard.training.classifier_data import LabelledImage, discover_classes, stratified_split
from lineguard.training.fit_classifier import fit_classifier_line
from lineguard.training.fit_image import fit_image_line
from lineguard.training.options import ClassifierFitOptions, ClassifierTrainOptions, FitOptions

DEFECTS = ("blowhole", "break", "crack", "fray", "uneven")


def class_view(data: Path, target: Path) -> Path:
    """``<target>/<good|defect type>/`` of links to the MVTec-layout ``data`` (nothing is copied)."""
    sources = {"good": [data / "train" / "good", data / "test" / "good"]}
    sources.update({p.name: [p] for p in sorted((data / "test").iterdir()) if p.is_dir() and p.name != "good"})
    for name, folders in sources.items():
        (target / name).mkdir(parents=True)
        for folder in folders:
            for path in sorted(folder.iterdir()):
                (target / name / f"{folder.parent.name}-{path.name}").symlink_to(path.resolve())
    return target


def anomaly_view(items: list[LabelledImage], fit_rows: list[int], test_rows: list[int], target: Path) -> Path:
    """The MVTec layout of the same split: train/good = good fit images, test/<type> = the test images."""
    for rows, role in ((fit_rows, "train"), (test_rows, "test")):
        for i in rows:
            item = items[i]
            if role == "train" and item.folder != "good":
                continue
            folder = target / role / item.folder
            folder.mkdir(parents=True, exist_ok=True)
            (folder / item.path.name).symlink_to(item.path.resolve())
    return target


def run_seed(data: Path, task: str, seed: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    classes = class_view(data, tmp / f"classes-{seed}")
    merge = {"defective": list(DEFECTS)} if task == "binary" else {}
    options = ClassifierFitOptions(
        merge=merge,
        tail=args.tail,
        views=args.views,
        seed=seed,
        progress=False,
        train=ClassifierTrainOptions(workers=args.workers, seed=seed),
    )
    store = ModelStore(tmp / f"store-{seed}")
    started = time.perf_counter()
    report = fit_classifier_line("tiles-classifier", classes, options, store)
    classifier_s = time.perf_counter() - started
    assert report.evaluation is not None and report.evaluation.classes is not None
    evaluation, classes_metrics = report.evaluation, report.evaluation.classes
    # the same split, recomputed (seeded), for the anomaly line
    dataset = discover_classes(classes, merge)
    train, val, test = stratified_split(dataset.labels, options.val_fraction, options.test_fraction, seed)
    mvtec = anomaly_view(dataset.items, [*train, *val], list(test), tmp / f"anomaly-{seed}")
    started = time.perf_counter()
    anomaly = fit_image_line("tiles-anomaly", mvtec, FitOptions(seed=seed, progress=False), store)
    anomaly_s = time.perf_counter() - started
    metrics = anomaly.card.metrics
    assert metrics is not None
    return {
        "seed": seed,
        "test_images": classes_metrics.n,
        "classifier": {
            "accuracy": classes_metrics.accuracy,
            "roc_auc": classes_metrics.roc_auc,
            "defect_auroc": evaluation.image_auroc,
            "miss_rate": evaluation.miss_rate,
            "over_detection_rate": evaluation.over_detection_rate,
            "ece": classes_metrics.ece,
            "ece_before_temperature": classes_metrics.ece_before_temperature,
            "nll": classes_metrics.nll,
            "nll_before_temperature": classes_metrics.nll_before_temperature,
            "per_class_recall": {k: v.recall for k, v in classes_metrics.per_class.items()},
            "confusion_matrix": dataclasses.asdict(classes_metrics.confusion_matrix),
            "temperature": report.card.classifier.temperature if report.card.classifier else None,
            "epochs": report.card.training.epochs_run if report.card.training else None,
            "fit_s": round(classifier_s, 1),
            "timings": report.timings,
        },
        "anomaly": {
            "image_auroc": metrics.image_auroc,
            "accuracy_at_threshold": metrics.confusion.accuracy if metrics.confusion else None,
            "miss_rate": metrics.miss_rate,
            "over_detection_rate": metrics.over_detection_rate,
            "per_type_auroc": {k: v.image_auroc for k, v in metrics.per_defect_type.items()},
            "fit_s": round(anomaly_s, 1),
        },
        "timing": time_both(store, [dataset.items[i].path for i in test[: args.timing_images]]),
    }


def time_both(store: ModelStore, paths: list[Path]) -> dict[str, Any]:
    """Batch-1 scoring in process: backbone alone, + classifier head, + anomaly head; interleaved."""
    card, extractor, classifier = load_classifier(store, "tiles-classifier")
    _, anomaly = load_image_model(store, "tiles-anomaly", extractor=extractor)
    tensors = [load_file(p, anomaly.preprocess).unsqueeze(0) for p in paths]
    for x in tensors[:3]:  # warm-up
        classifier.predict(extractor.extract(x))
        anomaly.predict_batch(x)

    def classify(x: torch.Tensor) -> object:
        return classifier.predict(extractor.extract(x))

    backbone, with_classifier, with_anomaly = [], [], []
    with torch.inference_mode():
        for x in tensors:
            backbone.append(time_call(partial(extractor.extract, x)))
            with_classifier.append(time_call(partial(classify, x)))
            with_anomaly.append(time_call(partial(anomaly.predict_batch, x)))
    return {
        "backbone_ms": summary(backbone),
        "classifier_ms": summary(with_classifier),
        "anomaly_ms": summary(with_anomaly),
        "classifier_over_backbone": round(statistics.median(with_classifier) / statistics.median(backbone), 3),
        "anomaly_over_backbone": round(statistics.median(with_anomaly) / statistics.median(backbone), 3),
        "tail": card.head.params.get("tail") if card.head else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATASETS / "magnetic_tile")
    parser.add_argument("--task", choices=["binary", "types"], default="binary")
    parser.add_argument("--tail", choices=["none", "frozen", "finetune"], default="frozen")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--workers", type=int, default=0, help="Ray Train workers (0 = in process)")
    parser.add_argument("--timing-images", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    if not (args.data / "train" / "good").is_dir():
        raise SystemExit(f"{args.data} is not an MVTec-layout data set (see the README, 'Benchmarks')")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.workers:
        import ray

        ray.init(address="local", include_dashboard=False)
    runs = []
    with tempfile.TemporaryDirectory(prefix="lineguard-bench-") as folder:
        for seed in (int(s) for s in args.seeds.split(",")):
            runs.append(run_seed(args.data, args.task, seed, args, Path(folder)))
            print(json.dumps(runs[-1], indent=2))

    def mean(side: str, key: str) -> str:
        values = [r[side][key] for r in runs if r[side][key] is not None]
        sd = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        return f"{statistics.fmean(values):.4f}{sd}" if values else "n/a"

    timing = runs[-1]["timing"]
    setup = f"task {args.task}, tail {args.tail}, seeds {args.seeds}, {runs[0]['test_images']} test images"
    print(f"\n{args.data.name}, {setup}")
    print("| | ROC AUC (defect vs good) | accuracy | miss rate | over-detection rate | fit s | batch-1 ms p50 |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| classifier | {mean('classifier', 'defect_auroc')} | {mean('classifier', 'accuracy')} | "
        f"{mean('classifier', 'miss_rate')} | {mean('classifier', 'over_detection_rate')} | "
        f"{mean('classifier', 'fit_s')} | {timing['classifier_ms']['p50']} |"
    )
    print(
        f"| anomaly (PatchCore) | {mean('anomaly', 'image_auroc')} | {mean('anomaly', 'accuracy_at_threshold')} | "
        f"{mean('anomaly', 'miss_rate')} | {mean('anomaly', 'over_detection_rate')} | "
        f"{mean('anomaly', 'fit_s')} | {timing['anomaly_ms']['p50']} |"
    )
    print(f"backbone alone p50 {timing['backbone_ms']['p50']} ms")
    if args.out:
        args.out.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
