"""Shared fixtures: small real data (a generated line, the shared data sets), a temporary model store."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lineguard.registry.store import ModelStore
from lineguard.training.synthetic import write_line

SHARED = Path(os.environ.get("LINEGUARD_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


def shared_dataset(name: str) -> Path:
    """Path of a shared data set, or skip the test saying where it was looked for."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"data set {name} not found at {path} (set LINEGUARD_DATASETS to the folder holding it)")
    return path


@pytest.fixture(scope="session")
def synthetic_line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MVTec-layout line: 24 good training parts, 8 good and 3x4 defective test parts, with masks."""
    return write_line(
        tmp_path_factory.mktemp("data") / "surface",
        seed=3,
        size=128,
        n_train=24,
        n_test_good=8,
        n_per_defect=4,
    )


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One real Ray for the whole test session, with the serving settings that ship (HAProxy, gRPC)."""
    import ray

    os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    os.environ.setdefault("RAY_SERVE_USE_GRPC_BY_DEFAULT", "1")
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    # logical CPUs: room for the Serve replicas and a Ray Data actor pool side by side
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    metrics_port = port.getsockname()[1]
    port.close()
    os.environ["LINEGUARD_TEST_METRICS_PORT"] = str(metrics_port)  # Prometheus export of Ray's metrics agent
    ray.init(
        address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, _metrics_export_port=metrics_port
    )
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
