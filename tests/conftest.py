"""Fixtures every suite uses (a generated line, a temporary store, a PostgreSQL server), and the split of
the suites: everything under ``tests/integration`` is marked ``integration`` (a real Ray, real Serve, a
database server, a browser, the shared data sets), so ``pytest -m "not integration"`` is the unit run."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lineguard.registry.store import ModelStore
from lineguard.training.synthetic import write_line
from tests.postgres import PostgresServer, binaries

torch.set_num_threads(min(2, os.cpu_count() or 1))
INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The unit run does not even import the integration suites (Ray, HTTP clients, a browser driver)."""
    if config.option.markexpr == "not integration" and collection_path.is_relative_to(INTEGRATION):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)


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
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on loopback from Debian's binaries (skipped where they are missing; under CI
    that is a failure: `make test` installs them)."""
    bin_dir = binaries()
    if bin_dir is None:
        message = "PostgreSQL is not installed: `make test` installs Debian's postgresql package (as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="lineguard-pg-")), bin_dir)
    server.init()
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(RuntimeError):
            server.stop()
