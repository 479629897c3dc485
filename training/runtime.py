"""The Ray runtime a fit uses: the cluster it was pointed at (``--address``, ``RAY_ADDRESS``), or a private
local one started on first need (a Ray Data pool, Ray Train workers)."""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None) -> dict[str, float]:
    """Connect to ``address`` (a running cluster), or start a private local runtime even when a ``ray start``
    cluster runs on this machine; returns the cluster's resources. Does nothing when Ray already runs."""
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(address="local", include_dashboard=False, num_cpus=os.cpu_count())
    return dict(ray.cluster_resources())


def cluster_workers(resources: dict[str, float]) -> int:
    """How many workers a fit uses when it is sized from a cluster: one per GPU, else one per two CPUs."""
    return max(1, int(resources.get("GPU", 0)) or int(resources.get("CPU", 1)) // 2)
