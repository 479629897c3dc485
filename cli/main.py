"""``lineguard``: fit, evaluate and inspect lines from the command line.

lineguard fit --line NAME --data DIR [--head patchcore|padim|mean] [--workers N] ...
lineguard fit --kind sensor --line NAME --data FILE.csv [--columns a,b,...] [--workers N]
lineguard fit --kind classifier --line NAME --data DIR [--merge NEW=a,b] [--normal-class good] [--workers N]
lineguard evaluate --line NAME --data DIR|FILE.csv [--out DIR]
lineguard predict --line NAME IMAGE... [--heatmap OUT.png]   |   FILE.csv... / --values 1.0,2.5,...
lineguard lines | versions NAME | promote NAME VERSION | threshold NAME VALUE | severity NAME high=0.9 ...
lineguard demo
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lineguard.cli.settings import get_settings
from lineguard.models.heads import HEADS, NotFittedError
from lineguard.models.scoring import AGGREGATIONS
from lineguard.registry.store import ModelStore, StoreError

log = logging.getLogger("lineguard")
KINDS = {"image": "image-anomaly", "image-anomaly": "image-anomaly", "sensor": "sensor-anomaly",
         "sensor-anomaly": "sensor-anomaly", "classifier": "image-classifier",
         "image-classifier": "image-classifier"}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, StoreError, NotFittedError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lineguard", description="Anomaly detection for production lines.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--store",
        default=None,
        help="model store root or URI (default: $LINEGUARD_STORE or ./lineguard-store)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="fit a line on normal data and store a new version")
    fit.add_argument("--line", required=True, help="line name: letters, digits, '-', '_'")
    fit.add_argument(
        "--data",
        required=True,
        type=Path,
        help="images: an MVTec-layout folder or a folder of good images; sensor: a CSV with a header, or Parquet; "
        "classifier: one folder per class",
    )
    fit.add_argument(
        "--kind",
        default="image",
        choices=sorted(KINDS),
        help="image (anomaly, default), sensor (AutoEncoder) or classifier (supervised classes)",
    )
    fit.add_argument("--head", default="patchcore", choices=sorted(HEADS))
    fit.add_argument(
        "--head-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="head parameter, e.g. bank_size=2048 (repeatable)",
    )
    fit.add_argument("--backbone", default="tf_efficientnet_lite0", help="any timm model name")
    fit.add_argument("--layers", default="blocks.2,blocks.4", help="comma-separated feature layer names")
    fit.add_argument("--image-size", type=int, default=256)
    fit.add_argument("--aggregation", default="local_global", choices=AGGREGATIONS)
    fit.add_argument("--blur-sigma", type=float, default=2.0, help="map smoothing, in feature-grid cells")
    fit.add_argument("--calibration", default="auto", choices=["auto", "holdout", "crossfit"])
    fit.add_argument("--holdout-fraction", type=float, default=0.15)
    fit.add_argument(
        "--over-detection-rate",
        type=float,
        default=0.01,
        help="target share of good parts flagged, for the threshold from normal data",
    )
    fit.add_argument(
        "--threshold-from-test",
        choices=["f1", "miss_rate", "over_detection_rate"],
        default=None,
        help="choose the threshold on the labelled test images instead (biases their metrics)",
    )
    fit.add_argument("--target", type=float, default=None, help="target rate for --threshold-from-test")
    fit.add_argument("--no-eval", action="store_true", help="skip the evaluation on test/")
    sensor = fit.add_argument_group("sensor lines (--kind sensor)")
    sensor.add_argument("--columns", default=None, help="comma-separated feature columns (default: every numeric one)")
    sensor.add_argument("--label-column", default=None, help="0/1 column marking anomalies (default: label, ...)")
    sensor.add_argument("--hidden", default=None, help="comma-separated hidden widths of the encoder (default 2n,n)")
    sensor.add_argument("--latent", type=int, default=None, help="bottleneck size (default n/3)")
    sensor.add_argument("--epochs", type=int, default=None, help="at most this many epochs (300; classifier 200)")
    sensor.add_argument(
        "--patience", type=int, default=None, help="epochs without a better held-out loss (15; classifier 20)"
    )
    sensor.add_argument(
        "--threshold-source",
        default="auto",
        choices=["auto", "normal", "labelled"],
        help="auto: labelled rows when the file has anomalies, else a percentile of held-out normal errors",
    )
    classifier = fit.add_argument_group("classifier lines (--kind classifier)")
    classifier.add_argument(
        "--merge",
        action="append",
        default=[],
        metavar="NEW=FOLDER,...",
        help="make one class of several folders, e.g. defective=crack,blowhole (repeatable)",
    )
    classifier.add_argument("--normal-class", default=None, help="the class of good parts (default: good/normal/ok)")
    classifier.add_argument(
        "--tail",
        default="frozen",
        choices=["none", "frozen", "finetune"],
        help="the backbone stages after the shared ones: skip, use frozen, or fine-tune the last one",
    )
    classifier.add_argument("--views", type=int, default=4, help="views per training image (1 = no augmentation)")
    classifier.add_argument("--augment", default="default", choices=["default", "light", "none"])
    classifier.add_argument("--val-fraction", type=float, default=0.15, help="images for early stopping + calibration")
    classifier.add_argument("--test-fraction", type=float, default=0.2, help="held-out images for the evaluation")
    classifier.add_argument(
        "--defect-threshold", type=float, default=0.5, help="defect confidence above which a part is defective"
    )
    classifier.add_argument(
        "--severity", default="high=0.9,low=0.6", help="severity levels on the defect confidence, strictest first"
    )
    fit.add_argument("--no-promote", action="store_true", help="store the version without putting it in service")
    fit.add_argument("--note", default=None)
    _add_runtime(fit)
    fit.add_argument(
        "--workers",
        default="auto",
        help="images: 0 = this process, N = a Ray Data actor pool of N (auto: 0 locally); sensor: Ray Train "
        "workers (auto: 1 locally), 0 = plain PyTorch here; with --address, auto uses the cluster",
    )
    fit.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per batch (16); sensor: rows per step (128); classifier: training batch (64)",
    )
    fit.add_argument("--address", default=None, help="Ray cluster address ('auto' or ray://...); default $RAY_ADDRESS")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--json", action="store_true", help="print the stored model card as JSON")
    fit.set_defaults(func=cmd_fit)

    ev = sub.add_parser("evaluate", help="metrics, histogram and overlays of a line on labelled images")
    ev.add_argument("--line", required=True)
    ev.add_argument("--data", required=True, type=Path, help="labelled images (MVTec layout) or a labelled CSV/Parquet")
    ev.add_argument("--version", default=None)
    ev.add_argument("--out", type=Path, default=None, help="output folder (default ./lineguard-eval/<line>-<version>)")
    ev.add_argument("--overlays", type=int, default=12, help="heatmap overlays to write")
    ev.add_argument("--workers", default="auto")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--address", default=None)
    ev.add_argument("--merge", action="append", default=[], help="classifier lines: as for fit")
    _add_runtime(ev)
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="score images, or sensor readings, without a server")
    pr.add_argument("--line", required=True)
    pr.add_argument("--version", default=None)
    pr.add_argument(
        "--heatmap",
        type=Path,
        default=None,
        help="write the overlay PNG here (one per image: OUT-<stem>.png)",
    )
    pr.add_argument("inputs", nargs="*", type=Path, help="image files, or CSV/Parquet files for a sensor line")
    pr.add_argument(
        "--values", action="append", default=[], help="sensor line: one reading as comma-separated numbers (repeatable)"
    )
    _add_runtime(pr)
    pr.set_defaults(func=cmd_predict)

    sub.add_parser("lines", help="lines in the store").set_defaults(func=cmd_lines)
    vs = sub.add_parser("versions", help="versions of a line")
    vs.add_argument("line")
    vs.set_defaults(func=cmd_versions)
    pm = sub.add_parser("promote", help="put a stored version of a line in service")
    pm.add_argument("line")
    pm.add_argument("version")
    pm.set_defaults(func=cmd_promote)
    th = sub.add_parser("threshold", help="change a line's threshold (stored as a new version)")
    th.add_argument("line")
    th.add_argument("value", type=float)
    th.add_argument("--note", default=None)
    th.set_defaults(func=cmd_threshold)
    sev = sub.add_parser("severity", help="change a classifier line's severity rules (stored as a new version)")
    sev.add_argument("line")
    sev.add_argument("rules", nargs="+", metavar="LEVEL=CONFIDENCE", help="e.g. high=0.9 low=0.6")
    sev.add_argument("--note", default=None)
    sev.set_defaults(func=cmd_severity)

    keys = sub.add_parser("keys", help="API keys of the service (when any exists, every route but /healthz needs one)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    kc = keys_sub.add_parser("create", help="make a key and print it once (only its SHA-256 is stored)")
    kc.add_argument("--name", required=True, help="who or what uses it, e.g. 'line 3 camera PC'")
    kc.add_argument(
        "--scope", choices=["predict", "admin"], default="predict",
        help="predict: score and read history; admin: also thresholds, severity rules and feedback",
    )  # fmt: skip
    kc.add_argument("--line", action="append", default=None, help="limit the key to this line (repeatable)")
    kc.set_defaults(func=cmd_keys_create)
    keys_sub.add_parser("list", help="keys with their scope, lines and state").set_defaults(func=cmd_keys_list)
    kr = keys_sub.add_parser("revoke", help="revoke a key by its id (refused within security.keys_refresh_s)")
    kr.add_argument("id")
    kr.set_defaults(func=cmd_keys_revoke)

    sv = sub.add_parser("serve", help="run the HTTP service from serve_config.yaml until Ctrl-C")
    sv.add_argument("--config", type=Path, default=Path("serve_config.yaml"))
    sv.add_argument("--host", default=None, help="override http_options.host (e.g. 127.0.0.1)")
    sv.add_argument("--port", type=int, default=None)
    sv.add_argument("--default-line", default=None, help="line answered by the plain POST /predict")
    sv.add_argument("--no-haproxy", action="store_true", help="use Serve's Python proxy instead of HAProxy")
    sv.add_argument(
        "--samples",
        action="append",
        default=None,
        metavar="FOLDER",
        help="a folder of MVTec-layout test sets the web page's simulator may read (web.sample_roots; repeatable)",
    )
    sv.set_defaults(func=cmd_serve)

    cl = sub.add_parser("cluster", help="Kubernetes: render the KubeRay RayService from serve_config.yaml")
    cl_sub = cl.add_subparsers(dest="cluster_command", required=True)
    render = cl_sub.add_parser("render", help="write cluster/rayservice.yaml (or --out) from serve_config.yaml")
    render.add_argument("--config", type=Path, default=None, help="serve config (default: the repository's)")
    render.add_argument("--out", type=Path, default=None, help="default cluster/rayservice.yaml; '-' = stdout")
    render.add_argument("--image", default=None, help="the LineGuard image built from cluster/Dockerfile")
    render.add_argument("--store", default=None, help="model store URI every node reads, e.g. s3://bucket/store")
    render.add_argument("--name", default=None)
    render.add_argument("--namespace", default=None)
    render.add_argument("--backbone-gpus", type=float, default=None, help="GPUs per Backbone replica (0 = CPU)")
    render.set_defaults(func=cmd_cluster_render)

    demo = sub.add_parser("demo", help="make a synthetic line, fit it, evaluate it, then serve it (offline)")
    demo.add_argument("--dir", type=Path, default=Path("lineguard-demo"), help="where the demo data and store go")
    demo.add_argument("--no-serve", action="store_true", help="stop after fitting and scoring a few parts")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--config", type=Path, default=Path("serve_config.yaml"))
    demo.set_defaults(func=cmd_demo)
    return parser


def _add_runtime(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default $LINEGUARD_DEVICE or auto)")
    parser.add_argument("--precision", default=None, help="auto | fp32 | bf16 | fp16")
    parser.add_argument("--weights", default=None, help="backbone weights: auto | offline | hub | none | FILE")


def _store(args: argparse.Namespace) -> ModelStore:
    return ModelStore(args.store or get_settings().store)


def _runtime(args: argparse.Namespace) -> dict[str, str]:
    settings = get_settings()
    return {
        "device": args.device or settings.device,
        "precision": args.precision or settings.precision,
        "weights": args.weights or settings.weights,
    }


def _workers(args: argparse.Namespace, local_default: int = 0) -> int:
    """Resolve ``--workers`` and start Ray when an actor pool or Ray Train is wanted."""
    address = args.address or os.environ.get("RAY_ADDRESS")
    if args.workers == "auto":
        if not address:
            if local_default:
                _init_ray(None)
            return local_default
        resources = _init_ray(address)
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        return max(1, gpus or cpus // 2)
    try:
        workers = int(args.workers)
    except ValueError as err:
        raise ValueError(f"--workers must be 'auto' or a whole number, got {args.workers!r}") from err
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    if workers:
        _init_ray(address)
    return workers


def _init_ray(address: str | None) -> dict[str, float]:
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=True)
        else:  # a private local runtime, even if a `ray start` cluster runs on this machine
            ray.init(address="local", include_dashboard=False, num_cpus=os.cpu_count())
    return dict(ray.cluster_resources())


def _head_params(pairs: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--head-param expects KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def cmd_fit(args: argparse.Namespace) -> int:
    from lineguard.training.evaluate import format_table
    from lineguard.training.fit_image import FitOptions, fit_image_line

    if KINDS[args.kind] == "sensor-anomaly":
        return _fit_sensor(args)
    if KINDS[args.kind] == "image-classifier":
        return _fit_classifier(args)
    runtime = _runtime(args)
    options = FitOptions(
        head=args.head,
        head_params=_head_params(args.head_param),
        aggregation=args.aggregation,
        blur_sigma=args.blur_sigma,
        backbone=args.backbone,
        layers=tuple(x.strip() for x in args.layers.split(",") if x.strip()),
        image_size=args.image_size,
        calibration=args.calibration,
        holdout_fraction=args.holdout_fraction,
        over_detection_rate=args.over_detection_rate,
        threshold_objective=args.threshold_from_test,
        threshold_target=args.target,
        evaluate=not args.no_eval,
        workers=_workers(args),
        batch_size=args.batch_size or 16,
        seed=args.seed,
        promote=not args.no_promote,
        note=args.note,
        device=runtime["device"],
        precision=runtime["precision"],
        weights=runtime["weights"],
    )
    report = fit_image_line(args.line, args.data, options, _store(args))
    card = report.card
    if args.json:
        print(card.model_dump_json(indent=2))
        return 0
    in_service = " (in service)" if options.promote else ""
    print(f"line {card.line}: stored {card.version}{in_service} in {_store(args).uri}")
    assert card.data is not None
    print(
        f"fitted on {card.data.n_fit} normal images, "
        f"calibrated on {card.data.n_calibration} ({card.data.calibration}); "
        f"threshold {card.threshold['value']:.4f} ({card.threshold['method']})"
    )
    if report.skipped:
        print(f"skipped {len(report.skipped)} unreadable file(s):", *report.skipped[:20], sep="\n  ")
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.timings.items()))
    if report.evaluation is not None:
        print(format_table(report.evaluation.metrics))
    return 0


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"{flag} expects comma-separated whole numbers, got {text!r}") from err


def _fit_sensor(args: argparse.Namespace) -> int:
    from lineguard.training.evaluate import format_table
    from lineguard.training.fit_sensor import SensorFitOptions, fit_sensor_line
    from lineguard.training.train_sensor import TrainOptions

    source = args.threshold_source
    if args.threshold_from_test and source == "auto":
        source = "labelled"
    options = SensorFitOptions(
        columns=[c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None,
        label_column=args.label_column,
        hidden=_int_list(args.hidden, "--hidden"),
        latent=args.latent,
        holdout_fraction=args.holdout_fraction,
        threshold_source=source,
        over_detection_rate=args.over_detection_rate,
        threshold_objective=args.threshold_from_test or "f1",
        threshold_target=args.target,
        train=TrainOptions(
            epochs=300 if args.epochs is None else args.epochs,
            patience=15 if args.patience is None else args.patience,
            batch_size=args.batch_size or 128,
            seed=args.seed,
            workers=_workers(args, local_default=1),
        ),
        seed=args.seed,
        promote=not args.no_promote,
        note=args.note,
    )
    report = fit_sensor_line(args.line, args.data, options, _store(args))
    card = report.card
    if args.json:
        print(card.model_dump_json(indent=2))
        return 0
    assert card.data is not None and card.inputs is not None
    history = card.training
    in_service = " (in service)" if options.promote else ""
    print(f"line {card.line}: stored {card.version}{in_service} in {_store(args).uri}")
    print(
        f"{card.inputs.n_features} features, trained on {card.data.n_fit} normal rows "
        f"({history.get('workers')} Ray Train worker(s), 0 = in process): {history.get('epochs_run')} epochs, "
        f"best held-out loss {history.get('best_val_loss', float('nan')):.5f} at epoch {history.get('best_epoch')}, "
        f"{history.get('seconds')} s"
    )
    print(f"threshold {card.threshold['value']:.5f} ({card.threshold['method']})")
    if report.metrics is not None:
        print(format_table(report.metrics))
    return 0


def _levels(pairs: Sequence[str], flag: str) -> dict[str, float]:
    """``["high=0.9", "low=0.6"]`` or ``["high=0.9,low=0.6"]`` -> ``{"high": 0.9, "low": 0.6}``."""
    rules: dict[str, float] = {}
    for pair in (p for text in pairs for p in text.split(",") if p.strip()):
        name, sep, raw = pair.partition("=")
        try:
            rules[name.strip()] = float(raw)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"{flag} expects LEVEL=CONFIDENCE pairs such as high=0.9, got {pair!r}")
    return rules


def _merges(pairs: Sequence[str]) -> dict[str, list[str]]:
    merge: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, folders = pair.partition("=")
        if not sep or not name.strip() or not folders.strip():
            raise ValueError(f"--merge expects NEW=FOLDER,FOLDER..., got {pair!r}")
        merge.setdefault(name.strip(), []).extend(f.strip() for f in folders.split(",") if f.strip())
    return merge


def _fit_classifier(args: argparse.Namespace) -> int:
    from lineguard.training.evaluate import format_class_table
    from lineguard.training.fit_classifier import ClassifierFitOptions, fit_classifier_line
    from lineguard.training.train_classifier import classifier_train_options

    runtime = _runtime(args)
    workers = _workers(args, local_default=1)  # Ray Train workers; the feature pass runs here locally
    address = args.address or os.environ.get("RAY_ADDRESS")
    hidden = _int_list(args.hidden, "--hidden")
    options = ClassifierFitOptions(
        merge=_merges(args.merge),
        normal_class=args.normal_class,
        tail=args.tail,
        hidden=hidden[0] if hidden else 256,
        views=args.views,
        augment=args.augment,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        threshold=args.defect_threshold,
        severity=_levels([args.severity], "--severity"),
        backbone=args.backbone,
        layers=tuple(x.strip() for x in args.layers.split(",") if x.strip()),
        image_size=args.image_size,
        workers=workers if address else 0,
        batch_size=16,
        train=classifier_train_options(
            workers=workers,
            seed=args.seed,
            **{k: v for k, v in (("epochs", args.epochs), ("patience", args.patience)) if v is not None},
            **({"batch_size": args.batch_size} if args.batch_size else {}),
        ),
        seed=args.seed,
        promote=not args.no_promote,
        note=args.note,
        weights=runtime["weights"],
        device=runtime["device"],
        precision=runtime["precision"],
    )
    report = fit_classifier_line(args.line, args.data, options, _store(args))
    card = report.card
    if args.json:
        print(card.model_dump_json(indent=2))
        return 0
    assert card.data is not None and card.classifier is not None
    info, history = card.classifier, card.training
    in_service = " (in service)" if options.promote else ""
    print(f"line {card.line}: stored {card.version}{in_service} in {_store(args).uri}")
    per_split = (card.data.model_extra or {}).get("per_split")
    print(f"classes {info.classes} (normal: {info.normal_class or 'none'}); images per split {per_split}")
    print(
        f"trained on {card.data.n_fit} views of {card.data.n_train} images ({history.get('workers')} Ray Train "
        f"worker(s), 0 = in process): {history.get('epochs_run')} epochs, best validation loss "
        f"{history.get('best_val_loss', float('nan')):.4f}, {history.get('seconds')} s; temperature "
        f"{info.temperature:.3f} (ECE {card.calibration.get('ece_before', 0):.3f} -> "
        f"{card.calibration.get('ece_after', 0):.3f} on validation)"
    )
    if report.skipped:
        print(f"skipped {len(report.skipped)} unreadable file(s):", *report.skipped[:20], sep="\n  ")
    if report.metrics is not None:
        print(format_class_table(report.metrics))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lineguard.registry.loaders import backbone_spec, scorer_from_card
    from lineguard.training.data import discover
    from lineguard.training.evaluate import RunSettings, evaluate_maps, format_table, score_samples, write_report
    from lineguard.training.features import WorkerSpec

    store = _store(args)
    card = store.read_card(args.line, args.version)
    if card.kind == "sensor-anomaly":
        return _evaluate_sensor(args, store, card)
    if card.kind == "image-classifier":
        return _evaluate_classifier(args, store)
    scorer = scorer_from_card(store, card)
    dataset = discover(args.data)
    samples = dataset.test or dataset.train
    if not dataset.test:
        print(f"note: {args.data} has no test/ folder: scoring its images as good parts (over-detection only)")
    spec = backbone_spec(card)
    runtime = _runtime(args)
    assert card.head is not None
    worker = WorkerSpec(
        mode="maps",
        backbone=spec.name,
        layers=spec.layers,
        image_size=spec.image_size,
        head_kind=card.head.kind,
        head_params=card.head.params,
        scorer_params=card.head.scorer,
        state={k: v.numpy() for k, v in scorer.fitted_state().items()},
        device=runtime["device"],
        precision=runtime["precision"],
        weights=runtime["weights"],
    )

    test = score_samples(samples, worker, RunSettings(_workers(args), args.batch_size))
    result = evaluate_maps(scorer, test, spec.image_size)
    out = args.out or Path("lineguard-eval") / f"{card.line}-{card.version}"
    write_report(result, scorer, out, spec.image_size, f"{card.line} {card.version}", args.overlays)
    print(f"line {card.line} {card.version} on {len(result.samples)} images of {args.data}")
    if test.skipped:
        print(f"skipped {len(test.skipped)} unreadable file(s):", *test.skipped[:20], sep="\n  ")
    print(format_table(result.metrics))
    print(f"wrote {out}/metrics.json, histogram.png, overlays/")
    return 0


def _evaluate_sensor(args: argparse.Namespace, store: ModelStore, card: Any) -> int:
    import numpy as np

    from lineguard.models.plots import score_histogram
    from lineguard.registry.loaders import sensor_model_from_card
    from lineguard.training.evaluate import format_table
    from lineguard.training.fit_sensor import evaluate_table
    from lineguard.training.sensor_data import read_table

    model = sensor_model_from_card(store, card)
    table = read_table(args.data, model.features)
    metrics = evaluate_table(model, table)
    out = args.out or Path("lineguard-eval") / f"{card.line}-{card.version}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "test_scores"}, indent=2))
    scored = metrics["test_scores"]  # the evaluated rows' scores: no second pass over the table
    title = f"{card.line} {card.version}"
    scores, labels = np.asarray(scored["scores"]), np.asarray(scored["labels"])
    (out / "histogram.png").write_bytes(score_histogram(scores, labels, model.threshold.value, title))
    print(f"line {card.line} {card.version} on {len(table.values)} rows of {args.data}")
    print(format_table(metrics))
    print(f"wrote {out}/metrics.json, histogram.png")
    return 0


def _evaluate_classifier(args: argparse.Namespace, store: ModelStore) -> int:
    from lineguard.registry.loaders import load_classifier
    from lineguard.training.evaluate import format_class_table
    from lineguard.training.fit_classifier import evaluate_folder

    card, extractor, classifier = load_classifier(store, args.line, args.version, **_runtime(args))
    metrics, skipped = evaluate_folder(card, extractor, classifier, args.data, _merges(args.merge), args.batch_size)
    out = args.out or Path("lineguard-eval") / f"{card.line}-{card.version}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "test_scores"}, indent=2))
    print(f"line {card.line} {card.version} on {metrics['classes']['n']} images of {args.data}")
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s):", *skipped[:20], sep="\n  ")
    print(format_class_table(metrics))
    print(f"wrote {out}/metrics.json")
    return 0


def _predict_classifier(args: argparse.Namespace, store: ModelStore) -> int:
    import torch

    from lineguard.models.preprocess import BadImageError, ImageTooLargeError, load_file
    from lineguard.registry.loaders import load_classifier, preprocess_config

    if not args.inputs or args.values or args.heatmap:
        raise ValueError(f"line {args.line} is a classifier line: give image files (no --values, no --heatmap)")
    card, extractor, classifier = load_classifier(store, args.line, args.version, **_runtime(args))
    config = preprocess_config(card)
    failures = 0
    for path in args.inputs:
        started = time.perf_counter()
        try:
            batch = torch.stack([load_file(path, config)])
        except (BadImageError, ImageTooLargeError, OSError) as err:
            print(json.dumps({"file": str(path), "error": str(err)}))
            failures += 1
            continue
        decision = classifier.predict(extractor.extract(batch))[0]
        names = classifier.classes
        answer = {
            "file": str(path),
            "line": card.line,
            "model_version": card.version,
            "prediction": names[decision.index],
            "confidence": round(decision.confidence, 6),
            "probabilities": {n: round(float(p), 6) for n, p in zip(names, decision.probabilities, strict=True)},
            "severity": decision.severity,
            "inference_time_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        print(json.dumps(answer))
    return 1 if failures else 0


def _predict_sensor(args: argparse.Namespace, store: ModelStore) -> int:
    import numpy as np

    from lineguard.registry.loaders import sensor_model_from_card
    from lineguard.training.sensor_data import read_table

    card = store.read_card(args.line, args.version)
    model = sensor_model_from_card(store, card)
    batches: list[tuple[str, np.ndarray]] = []
    for i, text in enumerate(args.values):
        try:
            reading = [float(x) for x in text.split(",")]
        except ValueError as err:
            raise ValueError(f"--values expects comma-separated numbers, got {text!r}") from err
        if len(reading) != model.n_features or not np.isfinite(reading).all():
            raise ValueError(
                f"line {card.line} expects {model.n_features} finite values ({model.features}), got {len(reading)}"
            )
        batches.append((f"--values #{i + 1}", np.array([reading], dtype=np.float32)))
    for path in args.inputs:
        batches.append((str(path), read_table(path, model.features).values))
    if not batches:
        raise ValueError("give CSV/Parquet files or --values for a sensor line")
    for source, values in batches:
        out = model.predict(values)
        for row in range(len(values)):
            top = [
                {"feature": model.features[j], "share": round(float(s), 4)}
                for j, s in zip(out.top_index[row], out.top_share[row], strict=True)
            ]
            status = "anomaly" if out.is_anomaly[row] else "normal"
            answer = {"source": source, "row": row + 1, "line": card.line, "model_version": card.version}
            answer.update(score=round(float(out.scores[row]), 6), threshold=model.threshold.value, status=status)
            print(json.dumps({**answer, "top_features": top}))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from lineguard.models.preprocess import BadImageError, ImageTooLargeError, open_image, resize
    from lineguard.models.visualize import normalise_map, overlay
    from lineguard.registry.loaders import load_image_model

    store = _store(args)
    kind = store.read_card(args.line, args.version).kind
    if kind == "sensor-anomaly":
        return _predict_sensor(args, store)
    if kind == "image-classifier":
        return _predict_classifier(args, store)
    if not args.inputs or args.values:
        raise ValueError(f"line {args.line} is an image line: give image files (not --values)")
    runtime = _runtime(args)
    card, model = load_image_model(
        store,
        args.line,
        args.version,
        weights=runtime["weights"],
        device=runtime["device"],
        precision=runtime["precision"],
    )
    failures = 0
    for path in args.inputs:
        started = time.perf_counter()
        try:
            image = open_image(path.read_bytes(), model.preprocess.max_pixels)
        except (BadImageError, ImageTooLargeError, OSError) as err:
            print(json.dumps({"file": str(path), "error": str(err)}))
            failures += 1
            continue
        prediction = model.predict_images([image], with_maps=args.heatmap is not None)[0]
        result = {
            "file": str(path),
            "line": card.line,
            "model_version": card.version,
            **prediction.to_dict(),
            "inference_time_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        if args.heatmap is not None and prediction.anomaly_map is not None:
            target = (
                args.heatmap
                if len(args.inputs) == 1
                else args.heatmap.with_name(f"{args.heatmap.stem}-{path.stem}.png")
            )
            heat = normalise_map(prediction.anomaly_map, *model.scorer.display_range())
            overlay(resize(image, model.preprocess.image_size), heat).save(target)
            result["heatmap"] = str(target)
        print(json.dumps(result))
    return 1 if failures else 0


def cmd_lines(args: argparse.Namespace) -> int:
    store = _store(args)
    lines = store.lines()
    if not lines:
        print(f"no lines in {store.uri}: fit one with `lineguard fit --line NAME --data DIR`")
        return 0
    print(f"{'line':<24}{'kind':<16}{'version':<9}{'head':<11}{'threshold':>11}{'image AUROC':>13}  created")
    for line in lines:
        card = store.read_card(line)
        auroc = (card.metrics or {}).get("image_auroc")
        head = card.head.kind if card.head else "-"
        shown = "-" if auroc is None else f"{auroc:.4f}"
        print(
            f"{line:<24}{card.kind:<16}{card.version:<9}{head:<11}{card.threshold['value']:>11.4f}{shown:>13}"
            f"  {card.created_at:%Y-%m-%d %H:%M}"
        )
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    store = _store(args)
    current = store.current_version(args.line)
    print(f"{'version':<9}{'created':<18}{'parent':<8}{'threshold':>11}  note")
    for version in store.versions(args.line):
        card = store.read_card(args.line, version)
        marker = "*" if version == current else " "
        print(
            f"{marker}{version:<8}{card.created_at:%Y-%m-%d %H:%M}  {card.parent or '-':<8}"
            f"{card.threshold['value']:>11.4f}  {card.note or ''}"
        )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    _store(args).promote(args.line, args.version)
    print(f"line {args.line}: {args.version} is in service")
    return 0


def cmd_threshold(args: argparse.Namespace) -> int:
    from lineguard.registry.revisions import set_threshold

    card = set_threshold(_store(args), args.line, args.value, note=args.note)
    print(f"line {args.line}: threshold {args.value} stored as {card.version} (in service)")
    return 0


def cmd_severity(args: argparse.Namespace) -> int:
    from lineguard.registry.revisions import set_severity

    card = set_severity(_store(args), args.line, _levels(args.rules, "severity"), note=args.note)
    assert card.classifier is not None
    print(f"line {args.line}: severity {card.classifier.severity} stored as {card.version} (in service)")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from lineguard.deployments.keys import KeyRing

    key, record = KeyRing(_store(args)).create(args.name, args.scope, args.line)
    lines = ", ".join(record.lines) if record.lines else "every line"
    print(key)
    print(f"key {record.id} ({record.name}): scope {record.scope}, {lines}. Keep it now: it is not shown again.",
          file=sys.stderr)  # fmt: skip
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from lineguard.deployments.keys import KeyRing

    records = KeyRing(_store(args)).records()
    if not records:
        print("no API keys: the service runs open. `lineguard keys create --name NAME` makes one")
        return 0
    print(f"{'id':<10}{'name':<28}{'scope':<9}{'lines':<24}{'created':<18}state")
    for r in records:
        lines = ",".join(r.lines) if r.lines else "*"
        state = "active" if r.active else f"revoked {r.revoked_at:%Y-%m-%d %H:%M}"
        print(f"{r.id:<10}{r.name[:27]:<28}{r.scope:<9}{lines[:23]:<24}{r.created_at:%Y-%m-%d %H:%M}  {state}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from lineguard.deployments.keys import KeyRing

    record = KeyRing(_store(args)).revoke(args.id)
    print(f"key {record.id} ({record.name}) revoked")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lineguard.cli import launcher as serve_launcher

    store = args.store or get_settings().store
    config = serve_launcher.prepare_config(args.config, store, args.host, args.port, args.default_line, args.samples)
    host = args.host or "127.0.0.1"
    port = args.port or 8000
    print(f"serving the lines of {store} with {args.config} (ready check: http://{host}:{port}/healthz)")
    print(f"operators' web page: http://{host}:{port}/   API docs: http://{host}:{port}/docs")
    env = serve_launcher.serve_environment(haproxy=not args.no_haproxy)
    return serve_launcher.run_foreground(
        config, env, f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/healthz"
    )


def cmd_cluster_render(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from lineguard.cluster.render import MANIFEST, ClusterOptions, render

    changes = {k: getattr(args, k) for k in ("image", "store", "name", "namespace") if getattr(args, k)}
    if args.backbone_gpus is not None:
        changes["backbone_gpus"] = args.backbone_gpus
    text = render(args.config, replace(ClusterOptions(), **changes))
    if str(args.out) == "-":
        print(text, end="")
        return 0
    out = args.out or MANIFEST
    out.write_text(text)
    print(f"wrote {out}: kubectl apply -f {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lineguard.cli.demo import run_demo

    return run_demo(args.dir, store_uri=args.store, serve=not args.no_serve, port=args.port, config=args.config)


if __name__ == "__main__":
    sys.exit(main())
