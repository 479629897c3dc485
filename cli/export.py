"""``lineguard export LINE --format onnx|openvino --out DIR``: a line as a bundle for the edge runtime
(``lineguard-edge``), its parity with the service measured and stored in it (training/export.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lineguard.cli.common import store_of
from lineguard.training.options import EXPORT_FORMATS, ExportSettings


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
    export.add_argument("--out", type=Path, required=True, help="a new (or empty) folder for the bundle")
    export.add_argument("--data", type=Path, default=None, help="images or CSV for the parity check (default: "
                        "the folder the line was fitted on, from its card)")  # fmt: skip
    defaults = ExportSettings()
    export.add_argument("--parity-items", type=int, default=defaults.parity_items,
                        help=f"images (or a quarter of the rows) checked, evenly spread; 0 = all "
                        f"(default: {defaults.parity_items})")  # fmt: skip
    export.add_argument("--tolerance", type=float, default=defaults.tolerance,
                        help=f"largest relative score difference (default: {defaults.tolerance:g})")  # fmt: skip
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = ExportSettings(args.format, args.version, args.data, args.parity_items, args.tolerance)
    from lineguard.training.export import export_line  # torch: imported when an export runs

    report = export_line(store_of(args), args.line, args.out, settings)
    parity = report.parity
    print(f"exported {report.card.line} {report.card.version} ({report.card.kind}) as {args.format} to {report.bundle}")
    print(
        f"parity on {parity.items} items against {parity.reference}: largest {parity.measure} difference "
        f"{parity.max_difference:.2e} (tolerance {parity.tolerance:g}), decisions differ: {parity.decisions_differ}"
    )
    served = parity.service_default
    if served:
        key = "max_abs_difference" if parity.measure == "absolute" else "max_relative_difference"
        print(
            f"against the service's default precision here: largest {parity.measure} difference "
            f"{served[key]:.2e}, decisions differ: {served['decisions_differ']}"
        )
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
    print(f"score it without torch: lineguard-edge predict {report.bundle} IMAGE... (pip install ./edge)")
    return 0
