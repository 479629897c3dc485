"""``lineguard``: fit, evaluate, inspect and serve lines from the command line.

    lineguard fit image|sensor|classifier --line NAME --data PATH [options of that kind]
    lineguard evaluate --line NAME --data PATH          lineguard predict --line NAME FILE... | --values 1.0,...
    lineguard lines | versions NAME | promote NAME VERSION | threshold NAME VALUE | severity NAME high=0.9 ...
    lineguard keys create|list|revoke                    lineguard serve | cluster render | demo

Every error LineGuard raises on purpose is printed as ``error: ...`` and exits with the code of the one
table in :mod:`lineguard.errors` (2 configuration, 3 data, 4 feature mismatch or not fitted, 5 not found,
6 store, 7 unavailable); anything else is a bug and prints its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lineguard.cli import cluster, demo, evaluate, export, fit, keys, lines, serve
from lineguard.errors import LineGuardError, outcome
from lineguard.models.memory import keep_large_buffers

COMMANDS = (fit, evaluate, export, lines, keys, serve, cluster, demo)  # each adds its sub-commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lineguard", description="Anomaly detection for production lines.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--store", default=None, help="model store root or URI (default: $LINEGUARD_STORE or ./lineguard-store)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    hint = fit.spelling_hint(sys.argv[1:] if argv is None else argv)
    if hint:
        print(f"usage error: {hint}", file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a usage error argparse has printed (exit code 2)
        return int(done.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    keep_large_buffers()  # fits, evaluations and exports run networks in this process (models/memory.py)
    try:
        return int(args.func(args) or 0)
    except LineGuardError as err:
        print(f"error: {err}", file=sys.stderr)
        return outcome(err).exit
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
