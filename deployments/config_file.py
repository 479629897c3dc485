"""Reading ``serve_config.yaml``: validated with Ray's own schema, turned into app args and options.

``serve run`` / ``serve deploy`` read the file themselves; this module lets the tests, the
benchmarks and ``lineguard demo`` deploy exactly the same settings through ``serve.run``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from ray.serve.schema import ServeDeploySchema

from lineguard.deployments.config import AppArgs, StreamArgs

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "serve_config.yaml"
APP_NAME = "lineguard"
# fields of a deployment entry that map one-to-one onto Deployment.options()
_OPTION_FIELDS = (
    "num_replicas",
    "autoscaling_config",
    "max_ongoing_requests",
    "max_queued_requests",
    "backpressure_config",
    "logging_config",
    "ray_actor_options",
    "user_config",
    "graceful_shutdown_wait_loop_s",
    "graceful_shutdown_timeout_s",
    "health_check_period_s",
    "health_check_timeout_s",
)


def read(path: Path | str = DEFAULT_CONFIG) -> dict[str, Any]:
    """The YAML as a dict, after validation by ``ray.serve.schema.ServeDeploySchema``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"serve config {path} does not exist: run from the repository root or pass --config")
    raw = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(raw)
    return dict(raw)


def application(config: dict[str, Any], name: str = APP_NAME) -> dict[str, Any]:
    for app in config.get("applications", []):
        if app.get("name") == name:
            return dict(app)
    raise ValueError(f"serve config has no application named {name!r}")


def app_args(app: dict[str, Any], **overrides: Any) -> AppArgs:
    """The application's ``args`` validated as :class:`AppArgs`, with ``overrides`` applied."""
    return AppArgs(**{**(app.get("args") or {}), **{k: v for k, v in overrides.items() if v is not None}})


def with_stream_shards(app: dict[str, Any]) -> dict[str, Any]:
    """``app`` with a deployment entry for each of its ``streams.shards`` StreamShards: the file lists one,
    ``StreamShard``, and each further shard (``StreamShard2``, ...) gets a copy of it unless the file gives
    its own. Serve applies a config file's options by deployment name, so a shard without an entry would
    run with Serve's defaults (a whole CPU: on a 2-core machine it never starts)."""
    shards = int(((app.get("args") or {}).get("streams") or {}).get("shards", StreamArgs().shards))
    deployments = app.setdefault("deployments", [])
    names = {entry["name"] for entry in deployments}
    first = next((entry for entry in deployments if entry["name"] == "StreamShard"), None)
    if first is None:
        return app
    for index in range(2, shards + 1):
        if f"StreamShard{index}" not in names:
            deployments.append({**copy.deepcopy(first), "name": f"StreamShard{index}"})
    return app


def deployment_options(app: dict[str, Any], **changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{deployment name: .options() kwargs}``; ``changes`` update single deployments' entries."""
    options: dict[str, dict[str, Any]] = {}
    for entry in with_stream_shards(copy.deepcopy(app)).get("deployments", []):
        name = entry["name"]
        options[name] = {k: entry[k] for k in _OPTION_FIELDS if k in entry}
    for name, change in changes.items():
        merged = options.setdefault(name, {})
        for key, value in change.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        if "num_replicas" in change:
            merged.pop("autoscaling_config", None)
    return options


def env_vars(app: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in ((app.get("runtime_env") or {}).get("env_vars") or {}).items()}
