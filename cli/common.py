"""What the commands share: the model store they work on, the environment's defaults, and the Ray
cluster a command attaches to with ``--address``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from lineguard.cli.settings import get_settings
from lineguard.registry.store import ModelStore


def store_of(args: argparse.Namespace) -> ModelStore:
    """``--store``, else ``$LINEGUARD_STORE``, else ``./lineguard-store``."""
    return ModelStore(args.store or get_settings().store)


def runtime_defaults() -> dict[str, Any]:
    """The defaults the environment gives ``--device``, ``--precision`` and ``--weights``."""
    return get_settings().runtime_defaults()


def add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=None,
        help="a Ray cluster to run on ('auto' or ray://host:10001; default $RAY_ADDRESS): unset worker counts "
        "are then sized from it",
    )


def cluster_size(args: argparse.Namespace) -> int | None:
    """The workers a fit or an evaluation uses on the cluster it attaches to; None when it runs here."""
    from lineguard.training.runtime import cluster_workers, ensure_ray

    address = args.address or os.environ.get("RAY_ADDRESS")
    return cluster_workers(ensure_ray(address)) if address else None
