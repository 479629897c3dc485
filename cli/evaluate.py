"""``lineguard evaluate`` and ``lineguard predict``: a stored line in this process, on labelled data (the
metrics and report files) or on new parts (one JSON answer per part or reading)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lineguard.cli.common import add_address, cluster_size, runtime_defaults, store_of
from lineguard.cli.flags import add_options, build
from lineguard.errors import ConfigError
from lineguard.training.kinds import EvaluateRequest, PredictRequest, adapter
from lineguard.training.options import RuntimeSettings
from lineguard.training.report import format_evaluation


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = commands.add_parser("evaluate", help="metrics, histogram and overlays of a line on labelled data")
    ev.add_argument("--line", required=True)
    ev.add_argument("--data", required=True, type=Path, help="labelled images (MVTec layout, class folders) or a CSV")
    ev.add_argument("--version", default=None, help="the version to evaluate (default: the one in service)")
    ev.add_argument("--out", type=Path, default=None, help="output folder (default ./lineguard-eval/<line>-<version>)")
    add_address(ev)
    add_options(ev, EvaluateRequest, runtime_defaults())
    ev.set_defaults(func=run_evaluate)

    pr = commands.add_parser("predict", help="score images, or sensor readings, in this process (no server)")
    pr.add_argument("--line", required=True)
    pr.add_argument("--version", default=None)
    pr.add_argument("inputs", nargs="*", type=Path, help="image files, or CSV/Parquet files for a sensor line")
    pr.add_argument(
        "--values", action="append", default=[], help="a sensor reading: comma-separated numbers (repeatable)"
    )
    pr.add_argument("--heatmap", type=Path, default=None, help="image-anomaly lines: write the overlay PNG here")
    add_options(pr, RuntimeSettings, runtime_defaults())
    pr.set_defaults(func=run_predict)


def run_evaluate(args: argparse.Namespace) -> int:
    store = store_of(args)
    card = store.read_card(args.line, args.version)
    request = build(EvaluateRequest, args, runtime_defaults())
    workers = cluster_size(args)
    if request.workers is None and workers is not None:
        request.workers = workers
    out = args.out or Path("lineguard-eval") / f"{card.line}-{card.version}"
    report = adapter(card.kind).evaluate(store, card, args.data, out, request)
    print(f"line {card.line} {card.version} on {report.evaluated}")
    if report.skipped:
        print("\n  ".join([f"skipped {len(report.skipped)} unreadable file(s):", *report.skipped[:20]]))
    print(format_evaluation(report.metrics, card.kind))
    print("wrote " + ", ".join(str(p) for p in report.written[:3]) + (" ..." if len(report.written) > 3 else ""))
    return 0


def _reading(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError as err:
        raise ConfigError(f"--values expects comma-separated numbers, got {text!r}") from err


def run_predict(args: argparse.Namespace) -> int:
    store = store_of(args)
    card = store.read_card(args.line, args.version)
    runtime = build(RuntimeSettings, args, runtime_defaults()).runtime()
    predictor = adapter(card.kind).load(store, card, runtime)
    request = PredictRequest(list(args.inputs), [_reading(v) for v in args.values], args.heatmap)
    failures = 0
    for answer in predictor.answers(request):
        print(json.dumps(answer))
        failures += "error" in answer
    return 1 if failures else 0
