"""The ``api`` fixture: one replica's API over fake scoring replicas (:func:`tests.support.fake_services`),
served through FastAPI's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lineguard.deployments.api import create_api
from lineguard.deployments.services import Services
from tests.support import IMAGE_LINE, SENSOR_LINE, FakeHandle, fake_services


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Services, FakeHandle]]:
    services, scorer = fake_services(tmp_path, default_line=IMAGE_LINE, default_sensor_line=SENSOR_LINE)
    with TestClient(create_api(services)) as client:
        yield client, services, scorer
