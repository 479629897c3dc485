"""``lineguard export LINE --format onnx|openvino --out DIR | --to-store``: a line as a bundle for the edge
runtime (``lineguard-edge``), its parity with the service measured and stored in it (training/export.py).
``--to-store`` keeps it beside the version, where the service hands it out (``GET /v1/lines/{line}/bundle``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lineguard.cli.common import store_of
from lineguard.training.options import EXPORT_FORMATS, ExportSettings

if TYPE_CHECKING:
    from lineguard.training.export import ExportReport


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = commands.add_parser(
        "export",
        help="write a line as a bundle for the edge runtime (ONNX or OpenVINO), checked against the service",
        description="Write a stored version of a line as a self-contained bundle (graph, spec, card, manifest "
        "with checksums) that `lineguard-edge` scores without torch or Ray. The line's own images or rows "
        "are scored by the bundle and by the service's model; the export fails when they disagree.",
    )
    export.add_argument("line")
    export.add_argument("--version", default=None, help="a stored version (default: the one in service)")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="the bundle's runtime (default: onnx)")
    where = export.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="a new (or empty) folder for the bundle")
    where.add_argument("--to-store", action="store_true", help="beside the version in the store, where the service "
                       "hands it out at GET /v1/lines/LINE/bundle?format=FORMAT")  # fmt: skip
    export.add_argument("--data", type=Path, default=None, help="images or CSV for the parity check (default: "
                        "the folder the line was fitted on, from its card)")  # fmt: skip
    defaults = ExportSettings()
    export.add_argument("--parity-items", type=int, default=defaults.parity_items,
                        help=f"images (or a quarter of the rows) checked, evenly spread; 0 = all "
                        f"(default: {defaults.parity_items})")  # fmt: skip
    export.add_argument("--tolerance", type=float, default=defaults.tolerance,
                        help=f"largest relative score difference (default: {defaults.tolerance:g})")  # fmt: skip
    export.add_argument("--int8", action="store_true", help="quantize the backbone to INT8 with NNCF (OpenVINO, "
                        "image-anomaly lines), calibrated on the line's normal images; its image and pixel AUROC "
                        "against fp32 go into the manifest when --data has labelled test images")  # fmt: skip
    export.add_argument("--calibration-items", type=int, default=defaults.calibration_items,
                        help=f"--int8: normal images to calibrate on ({defaults.calibration_items})")  # fmt: skip
    export.add_argument("--int8-decisions", type=float, default=defaults.int8_decisions,
                        help="--int8: largest share of the parity items whose decision may change "
                        f"(default: {defaults.int8_decisions:g})")  # fmt: skip
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = ExportSettings(
        args.format, args.version, args.data, args.parity_items, args.tolerance,
        args.int8, args.calibration_items, args.int8_decisions,
    )  # fmt: skip
    from lineguard.training.export import export_line, export_to_store  # torch: imported when an export runs

    store = store_of(args)
    report = (
        export_to_store(store, args.line, settings)
        if args.to_store
        else export_line(store, args.line, args.out, settings)
    )
    print_report(report)
    if not args.to_store:
        print(f"score it without torch: lineguard-edge predict {report.bundle} IMAGE... (pip install ./edge)")
    return 0


def print_report(report: ExportReport) -> None:
    parity = report.parity
    fmt = report.bundle_format
    print(f"exported {report.card.line} {report.card.version} ({report.card.kind}) as {fmt} to {report.bundle}")
    held = f"tolerance {parity.tolerance:g}" if parity.scores_checked else "INT8: not held to a tolerance"
    allowed = f" (at most {parity.allowed_decisions})" if parity.allowed_decisions else ""
    print(
        f"parity on {parity.items} items against {parity.reference}: largest {parity.measure} difference "
        f"{parity.max_difference:.2e} ({held}), decisions differ: {parity.decisions_differ}{allowed}"
    )
    served = parity.service_default
    if served:
        key = "max_abs_difference" if parity.measure == "absolute" else "max_relative_difference"
        print(
            f"against the service's default precision here: largest {parity.measure} difference "
            f"{served[key]:.2e}, decisions differ: {served['decisions_differ']}"
        )
    if report.accuracy:
        a = report.accuracy
        print(
            f"INT8 against fp32 on {a['test_images']} labelled test images: image AUROC {a['image_auroc']['int8']} "
            f"vs {a['image_auroc']['fp32']}, pixel AUROC {a['pixel_auroc']['int8']} vs {a['pixel_auroc']['fp32']}"
        )
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
