"""``lineguard cluster render``: the KubeRay ``RayService`` manifest, generated from ``serve_config.yaml``.

One source of truth: the Serve application (deployments, autoscaling, user_config, args) is the
root ``serve_config.yaml``; this module only adds what differs on a Kubernetes cluster, all of it
visible in :class:`ClusterOptions` (image, model store URI, node groups, the Backbone on GPU workers),
and wraps the result in a ``ray.io/v1`` ``RayService`` with a head group, a CPU worker group and a
GPU worker group. ``cluster/rayservice.yaml`` is this function's output with the defaults; a test
renders it again and fails when the two disagree.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from lineguard.deployments import config_file
from lineguard.deployments.config_file import APP_NAME, read

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "cluster" / "rayservice.yaml"
DOCKERFILE = ROOT / "cluster" / "Dockerfile"
# the launcher's settings that must be in the environment of `ray start` on every node (the proxy
# reads them when it starts, before any application's runtime_env applies)
NODE_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


HISTORY_URL_ENV = "LINEGUARD_HISTORY_URL"


def ray_version() -> str:
    """The Ray version the project pins (pyproject.toml), which the image tag must match."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"ray\[[^\]]*\]==([0-9.]+)"', text)
    if match:
        return match.group(1)
    try:  # an installed package without its source tree
        return version("ray")
    except PackageNotFoundError as err:
        raise RuntimeError("cannot tell which Ray version LineGuard pins") from err


@dataclass
class ClusterOptions:
    name: str = "lineguard"
    namespace: str = "lineguard"
    image: str = "registry.example.com/lineguard:0.1.0"  # CHANGE: where `docker push` put the image
    store: str = "s3://my-bucket/lineguard-store"  # CHANGE: the model store every node reads
    cpu_workers: tuple[int, int] = (1, 4)  # min, max
    gpu_workers: tuple[int, int] = (0, 2)
    backbone_gpus: float = 1.0  # per Backbone replica; 0.5 packs two replicas on one GPU
    backbone_batch: int = 64  # images per forward pass on a GPU (batching pays there)
    extra_env: dict[str, str] = field(default_factory=dict)
    # CHANGE: the Secret (name, key) holding the history database URL, postgresql+psycopg://user:pw@host/db
    history_secret: tuple[str, str] = ("lineguard-history", "url")
    # CHANGE: the Redis that keeps the GCS's state (head-node fault tolerance; "" for none), and the Secret
    # (name, key) with its password
    redis_address: str = "redis.lineguard.svc:6379"
    redis_secret: tuple[str, str] = ("lineguard-redis", "password")


def serve_config_for_cluster(serve_config: dict[str, Any], options: ClusterOptions) -> dict[str, Any]:
    """``serve_config.yaml`` with the cluster's store, and the Backbone on GPU workers."""
    config = copy.deepcopy(serve_config)
    config["http_options"] = {**config.get("http_options", {}), "host": "0.0.0.0", "port": 8000}
    app = next(a for a in config["applications"] if a["name"] == APP_NAME)
    args = {**app.get("args", {}), "store": options.store}
    # the history is in PostgreSQL on a cluster; its URL (with a password) comes from a Secret
    args["history"] = {**(args.get("history") or {}), "url": f"env:{HISTORY_URL_ENV}"}
    app["args"] = args
    config_file.with_stream_shards(app)  # an entry per StreamShard: Serve applies options by name
    for deployment in app["deployments"]:
        if deployment["name"].startswith("Backbone") and options.backbone_gpus > 0:
            deployment.setdefault("ray_actor_options", {})["num_gpus"] = options.backbone_gpus
            tuning = deployment.setdefault("user_config", {})
            tuning.update(max_batch_size=options.backbone_batch, batch_wait_timeout_s=0.005)
    return config


def _container(options: ClusterOptions, cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    env = {**NODE_ENV, "LINEGUARD_STORE": options.store, **options.extra_env}
    return {
        "name": "ray",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": k, "value": v} for k, v in env.items()]
        + [
            {
                "name": HISTORY_URL_ENV,
                "valueFrom": {"secretKeyRef": {"name": options.history_secret[0], "key": options.history_secret[1]}},
            }
        ],
        # requests = limits: Ray sizes its CPU and memory resources from the container's limits
        "resources": {"requests": dict(limits), "limits": dict(limits)},
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}},
    }


def render(serve_config_path: Path | str | None = None, options: ClusterOptions | None = None) -> str:
    """The RayService manifest as YAML text, with comments on what a reader must change."""
    options = options or ClusterOptions()
    serve_config = serve_config_for_cluster(read(serve_config_path or ROOT / "serve_config.yaml"), options)
    head = _container(options, "2", "8Gi")
    head["ports"] = [
        {"containerPort": 6379, "name": "gcs"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"},
        {"containerPort": 8000, "name": "serve"},
    ]
    cpu_worker = _container(options, "4", "16Gi")
    gpu_worker = _container(options, "8", "32Gi", gpus=1)
    manifest = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": options.name, "namespace": options.namespace},
        "spec": {
            "serveConfigV2": yaml.dump(serve_config, Dumper=_PlainDumper, sort_keys=False, width=1000),
            "rayClusterConfig": {
                "rayVersion": ray_version(),
                **_fault_tolerance(options),
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 300},
                "headGroupSpec": {
                    # the head runs Serve's controller and a proxy, no replicas (num-cpus 0)
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": {"metadata": {"labels": _labels(options)}, "spec": {"containers": [head]}},
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "cpu-workers",
                        "replicas": options.cpu_workers[0],
                        "minReplicas": options.cpu_workers[0],
                        "maxReplicas": options.cpu_workers[1],
                        "rayStartParams": {},
                        "template": {"metadata": {"labels": _labels(options)}, "spec": {"containers": [cpu_worker]}},
                    },
                    {
                        "groupName": "gpu-workers",
                        "replicas": options.gpu_workers[0],
                        "minReplicas": options.gpu_workers[0],
                        "maxReplicas": options.gpu_workers[1],
                        "rayStartParams": {"num-gpus": "1"},
                        "template": {
                            "metadata": {"labels": _labels(options)},
                            "spec": {
                                "containers": [gpu_worker],
                                "tolerations": [
                                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                                ],
                            },
                        },
                    },
                ],
            },
        },
    }
    documents = [manifest] + [_disruption_budget(options, group) for group in WORKER_GROUPS]
    return HEADER + yaml.dump_all(documents, Dumper=_BlockDumper, sort_keys=False, width=1000)


WORKER_GROUPS = ("cpu-workers", "gpu-workers")


def _fault_tolerance(options: ClusterOptions) -> dict[str, Any]:
    """GCS fault tolerance: the head's GCS keeps its tables in Redis, so a restarted head pod takes the
    cluster and the Serve application back as they were, while the workers' replicas keep answering."""
    if not options.redis_address:
        return {}
    name, key = options.redis_secret
    password = {"valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
    return {"gcsFaultToleranceOptions": {"redisAddress": options.redis_address, "redisPassword": password}}


INSTANCE_LABEL = "app.kubernetes.io/instance"  # on every pod of the RayService (KubeRay's own name its RayCluster)


def _labels(options: ClusterOptions) -> dict[str, str]:
    return {INSTANCE_LABEL: options.name}


def _disruption_budget(options: ClusterOptions, group: str) -> dict[str, Any]:
    """At most one pod of a worker group evicted at a time (a node drain, an upgrade): Serve moves its
    replicas to the others meanwhile. The head has none: it is one pod, and a drain must be able to move it
    (GCS fault tolerance keeps the cluster's state while it restarts)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{options.name}-{group}", "namespace": options.namespace},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {INSTANCE_LABEL: options.name, "ray.io/group": group}},
        },
    }


class _PlainDumper(yaml.SafeDumper):
    """Every value written out where it stands: serve_config.yaml's anchors become copies, not aliases."""

    def ignore_aliases(self, data: object) -> bool:
        return True


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as readable ``|`` blocks instead of one quoted line."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _string)


HEADER = r"""# GENERATED by `lineguard cluster render` from ../serve_config.yaml: do not edit by hand; change
# serve_config.yaml (or the options of cluster/render.py) and render again. A test fails when
# this file and serve_config.yaml disagree.
#
# What a reader must change (flags of `lineguard cluster render`):
#   --image   spec.*.containers[].image: the image built from cluster/Dockerfile and pushed
#   --store   the model store every node reads (s3://, gs://); LINEGUARD_STORE and the app's args.store
#   --namespace / --name, and the CPU, memory and GPU sizes of the groups below for your nodes.
# Object-store credentials: give the pods an IAM role (IRSA on EKS, Workload Identity on GKE) or add
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from a Secret to the containers' env.
# The prediction history is a PostgreSQL database; create its Secret before applying this file:
#   kubectl -n lineguard create secret generic lineguard-history \
#     --from-literal=url=postgresql+psycopg://lineguard:PASSWORD@postgres.lineguard.svc:5432/lineguard
# Head-node fault tolerance: the GCS keeps its state in a Redis (gcsFaultToleranceOptions, --redis); when
# the head pod restarts, the workers' replicas go on answering and the new head takes the cluster and the
# application back (tests/integration/test_gcs_fault.py kills the GCS under load to show it). Its password:
#   kubectl -n lineguard create secret generic lineguard-redis --from-literal=password=REDIS_PASSWORD
#
# The Backbone asks for num_gpus, so Serve places it on the gpu-workers group (which the autoscaler
# starts from 0 when it is needed); everything else runs on cpu-workers. The head runs no replicas.
"""  # raw: the backslash that continues the kubectl command must stay in the text


def check_image_tag(dockerfile: Path = DOCKERFILE) -> str:
    """The ``rayproject/ray`` tag of the Dockerfile; raises when it is not the pinned Ray version."""
    match = re.search(r"^ARG RAY_IMAGE=rayproject/ray:(\S+)", dockerfile.read_text(), re.MULTILINE)
    if not match:
        raise ValueError(f"{dockerfile} has no `ARG RAY_IMAGE=rayproject/ray:<tag>` line")
    tag = match.group(1)
    if not tag.startswith(ray_version() + "-"):
        raise ValueError(f"{dockerfile} builds on rayproject/ray:{tag}, but LineGuard pins ray=={ray_version()}")
    return tag
