"""``lineguard fit image|sensor|classifier``: fit a line of that kind and store a new version.

One sub-command per kind, each with the flags of its options dataclass (:mod:`lineguard.training.options`)
and one summary printer for all of them (:func:`lineguard.training.report.fit_summary`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lineguard.cli.common import add_address, cluster_size, runtime_defaults, store_of
from lineguard.cli.flags import add_options, build
from lineguard.errors import ExportError
from lineguard.registry.card import ModelCard
from lineguard.registry.store import ModelStore
from lineguard.training.kinds import ADAPTERS, KindAdapter
from lineguard.training.options import EXPORT_FORMATS, ExportSettings
from lineguard.training.report import fit_summary


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fit = commands.add_parser(
        "fit",
        help="fit a line on its data and store a new version",
        description="Fit a line and store a new, immutable version (in service unless --no-promote).",
    )
    kinds = fit.add_subparsers(dest="kind", required=True, metavar="KIND", title="kinds of line")
    for adapter in ADAPTERS.values():
        parser = kinds.add_parser(adapter.kind.short, help=adapter.summary, description=f"Fit {adapter.summary}.")
        parser.add_argument("--line", required=True, help="line name: 1-64 letters, digits, '-' or '_'")
        parser.add_argument("--data", required=True, type=Path, help=adapter.data_help)
        parser.add_argument("--json", action="store_true", help="print the stored model card as JSON")
        parser.add_argument(
            "--export",
            type=export_formats,
            default=(),
            metavar="FORMATS",
            help="then export the new version for the edge runtime: onnx, openvino or onnx,openvino, kept in the "
            "store (the service hands it out at GET /v1/lines/LINE/bundle)",
        )
        add_address(parser)
        add_options(parser, adapter.options, runtime_defaults())
        parser.set_defaults(func=run, adapter=adapter)


def spelling_hint(argv: Sequence[str]) -> str | None:
    """The fix for ``lineguard fit --line ...`` and ``fit --kind sensor ...`` (the kind came first before)."""
    words = list(argv)
    while (words and words[0] in ("-v", "--verbose", "--store")) or (words and words[0].startswith("--store=")):
        words = words[2:] if words[0] == "--store" else words[1:]  # lineguard's own options come first
    if not words or words[0] != "fit":
        return None
    rest = words[1:]
    if not rest or not rest[0].startswith("-") or rest[0] in ("-h", "--help"):
        return None
    kind = "image"
    if "--kind" in rest and rest.index("--kind") + 1 < len(rest):
        given = rest[rest.index("--kind") + 1]
        kind = next((a.kind.short for a in ADAPTERS.values() if given in (a.kind.short, a.kind.value)), kind)
    kinds = "|".join(a.kind.short for a in ADAPTERS.values())
    return f"say what to fit first: lineguard fit {kinds} --line NAME --data PATH (here: lineguard fit {kind} ...)"


def export_formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if not formats or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(EXPORT_FORMATS)}, comma-separated")
    return formats


def run(args: argparse.Namespace) -> int:
    adapter: KindAdapter[Any] = args.adapter
    options: Any = build(adapter.options, args, runtime_defaults())
    options.validate()  # every option, before Ray starts or any data is read
    workers = cluster_size(args)
    if workers is not None:
        options = adapter.with_workers(options, workers)
    store = store_of(args)
    report = adapter.fit(args.line, args.data, options, store)
    print(report.card.model_dump_json(indent=2) if args.json else fit_summary(report, store.uri))
    for fmt in args.export:
        export(store, report.card, fmt)
    return 0


def export(store: ModelStore, card: ModelCard, fmt: str) -> None:
    """The fitted version's bundle in ``fmt``, into the store beside it; a failed parity check fails the
    command (the version itself stays stored)."""
    from lineguard.cli.export import print_report
    from lineguard.training.export import export_to_store  # torch: imported when an export runs

    try:
        print_report(export_to_store(store, card.line, ExportSettings(format=fmt, version=card.version)))
    except ExportError as err:
        raise ExportError(
            f"{card.line} {card.version} is fitted and stored, but its {fmt} export failed: {err}"
        ) from err
