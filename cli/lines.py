"""The store's lines and versions: ``lineguard lines``, ``versions``, ``promote``, ``threshold`` and
``severity`` and ``alarm`` (the last three store a new version, in service at once)."""

from __future__ import annotations

import argparse

from lineguard.cli.common import store_of
from lineguard.cli.flags import float_pairs
from lineguard.errors import ConfigError
from lineguard.registry.revisions import set_alarm, set_severity, set_threshold


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser("lines", help="lines in the store").set_defaults(func=run_lines)
    versions = commands.add_parser("versions", help="versions of a line (* marks the one in service)")
    versions.add_argument("line")
    versions.set_defaults(func=run_versions)
    promote = commands.add_parser("promote", help="put a stored version of a line in service (roll back or forward)")
    promote.add_argument("line")
    promote.add_argument("version")
    promote.set_defaults(func=run_promote)
    threshold = commands.add_parser("threshold", help="change a line's threshold (stored as a new version)")
    threshold.add_argument("line")
    threshold.add_argument("value", type=float, help="classifier lines: the defect confidence, between 0 and 1")
    threshold.add_argument("--note", default=None)
    threshold.set_defaults(func=run_threshold)
    severity = commands.add_parser("severity", help="change a classifier line's severity rules (a new version)")
    severity.add_argument("line")
    severity.add_argument(
        "rules", nargs="+", type=float_pairs, metavar="LEVEL=CONFIDENCE", help="e.g. high=0.9 low=0.6"
    )
    severity.add_argument("--note", default=None)
    severity.set_defaults(func=run_severity)
    alarm = commands.add_parser("alarm", help="change a sensor line's alarm rule (stored as a new version)")
    alarm.add_argument("line")
    alarm.add_argument("--k", type=int, help="an alarm starts when k of the last n readings are over the threshold")
    alarm.add_argument("--n", type=int, help="the readings k of n counts over")
    alarm.add_argument("--clear", type=float, dest="clear_ratio", help="hysteresis: bad above this x threshold")
    alarm.add_argument("--min-duration", type=int, help="an alarm lasts at least this many readings")
    alarm.add_argument("--note", default=None)
    alarm.set_defaults(func=run_alarm)


def run_lines(args: argparse.Namespace) -> int:
    store = store_of(args)
    lines = store.lines()
    if not lines:
        print(f"no lines in {store.uri}: fit one with `lineguard fit image --line NAME --data DIR`")
        return 0
    print(f"{'line':<24}{'kind':<18}{'version':<9}{'head':<12}{'threshold':>11}{'AUROC':>9}  created")
    for line in lines:
        card = store.read_card(line)
        auroc = card.metrics.image_auroc if card.metrics else None
        head = card.head.kind if card.head else "-"
        shown = "-" if auroc is None else f"{auroc:.4f}"
        print(
            f"{line:<24}{card.kind:<18}{card.version:<9}{head:<12}{card.threshold.value:>11.4f}{shown:>9}"
            f"  {card.created_at:%Y-%m-%d %H:%M}"
        )
    return 0


def run_versions(args: argparse.Namespace) -> int:
    store = store_of(args)
    current = store.current_version(args.line)
    print(f"{'version':<9}{'created':<18}{'parent':<8}{'threshold':>11}  note")
    for version in store.versions(args.line):
        card = store.read_card(args.line, version)
        marker = "*" if version == current else " "
        print(
            f"{marker}{version:<8}{card.created_at:%Y-%m-%d %H:%M}  {card.parent or '-':<8}"
            f"{card.threshold.value:>11.4f}  {card.note or ''}"
        )
    return 0


def run_promote(args: argparse.Namespace) -> int:
    store_of(args).promote(args.line, args.version)
    print(f"line {args.line}: {args.version} is in service")
    return 0


def run_threshold(args: argparse.Namespace) -> int:
    card = set_threshold(store_of(args), args.line, args.value, note=args.note)
    print(f"line {args.line}: threshold {args.value} stored as {card.version} (in service)")
    return 0


def run_alarm(args: argparse.Namespace) -> int:
    names = ("k", "n", "clear_ratio", "min_duration")
    changes = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if not changes:
        raise ConfigError("give at least one of --k, --n, --clear, --min-duration")
    card = set_alarm(store_of(args), args.line, changes, note=args.note)
    assert card.alarm is not None
    print(f"line {args.line}: alarm {card.alarm.model_dump()} stored as {card.version} (in service)")
    return 0


def run_severity(args: argparse.Namespace) -> int:
    rules = {name: value for pairs in args.rules for name, value in pairs}
    card = set_severity(store_of(args), args.line, rules, note=args.note)
    assert card.classifier is not None
    print(f"line {args.line}: severity {card.classifier.severity} stored as {card.version} (in service)")
    return 0
