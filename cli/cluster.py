"""``lineguard cluster render``: the KubeRay RayService manifest from ``serve_config.yaml``."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from lineguard.cluster.render import MANIFEST, ClusterOptions, render


def add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = commands.add_parser("cluster", help="Kubernetes: render the KubeRay RayService from serve_config.yaml")
    actions = cluster.add_subparsers(dest="cluster_command", required=True)
    r = actions.add_parser("render", help="write cluster/rayservice.yaml (or --out) from serve_config.yaml")
    r.add_argument("--config", type=Path, default=None, help="serve config (default: the repository's)")
    r.add_argument("--out", type=Path, default=None, help="default cluster/rayservice.yaml; '-' = stdout")
    r.add_argument("--image", default=None, help="the LineGuard image built from cluster/Dockerfile")
    r.add_argument("--store", dest="cluster_store", default=None, help="model store URI every node reads (s3://...)")
    r.add_argument("--name", default=None)
    r.add_argument("--namespace", default=None)
    r.add_argument("--backbone-gpus", type=float, default=None, help="GPUs per Backbone replica (0 = CPU)")
    r.add_argument("--redis", default=None, help="host:port of the Redis that keeps the GCS's state ('' for none)")
    r.set_defaults(func=run_render)


def run_render(args: argparse.Namespace) -> int:
    changes = {k: getattr(args, k) for k in ("image", "name", "namespace") if getattr(args, k)}
    if args.cluster_store:
        changes["store"] = args.cluster_store
    if args.backbone_gpus is not None:
        changes["backbone_gpus"] = args.backbone_gpus
    if args.redis is not None:
        changes["redis_address"] = args.redis
    text = render(args.config, replace(ClusterOptions(), **changes))
    if str(args.out) == "-":
        print(text, end="")
        return 0
    out = args.out or MANIFEST
    out.write_text(text)
    print(f"wrote {out}: kubectl apply -f {out}")
    return 0
