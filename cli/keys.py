"""``lineguard keys create|list|revoke``: the service's API keys (in the model store, read by every ingress
replica within ``security.keys_refresh_s``)."""

from __future__ import annotations

import argparse
import sys

from lineguard.cli.common import store_of
from lineguard.deployments.keys import SCOPES, KeyRing


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys", help="API keys of the service (when any exists, every route but /healthz needs one)"
    )
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="make a key and print it once (only its SHA-256 is stored)")
    create.add_argument("--name", required=True, help="who or what uses it, e.g. 'line 3 camera PC'")
    create.add_argument(
        "--scope", choices=SCOPES, default="predict",
        help="predict: score and read history; admin: also thresholds, severity rules and feedback",
    )  # fmt: skip
    create.add_argument("--line", action="append", default=None, help="limit the key to this line (repeatable)")
    create.set_defaults(func=run_create)
    actions.add_parser("list", help="keys with their scope, lines and state").set_defaults(func=run_list)
    revoke = actions.add_parser("revoke", help="revoke a key by its id (refused within security.keys_refresh_s)")
    revoke.add_argument("id")
    revoke.set_defaults(func=run_revoke)


def run_create(args: argparse.Namespace) -> int:
    key, record = KeyRing(store_of(args)).create(args.name, args.scope, args.line)
    lines = ", ".join(record.lines) if record.lines else "every line"
    print(key)
    print(f"key {record.id} ({record.name}): scope {record.scope}, {lines}. Keep it now: it is not shown again.",
          file=sys.stderr)  # fmt: skip
    return 0


def run_list(args: argparse.Namespace) -> int:
    records = KeyRing(store_of(args)).records()
    if not records:
        print("no API keys: the service runs open. `lineguard keys create --name NAME` makes one")
        return 0
    print(f"{'id':<10}{'name':<28}{'scope':<9}{'lines':<24}{'created':<18}state")
    for r in records:
        lines = ",".join(r.lines) if r.lines else "*"
        state = "active" if r.active else f"revoked {r.revoked_at:%Y-%m-%d %H:%M}"
        print(f"{r.id:<10}{r.name[:27]:<28}{r.scope:<9}{lines[:23]:<24}{r.created_at:%Y-%m-%d %H:%M}  {state}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    record = KeyRing(store_of(args)).revoke(args.id)
    print(f"key {record.id} ({record.name}) revoked")
    return 0
