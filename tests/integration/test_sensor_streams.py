"""Sensor streams through real HTTP on two ingress replicas: each stream's readings, interleaved with many
others and sent one at a time or in batches, score exactly as its series scored offline; alarms start and
are recorded; bad stream input is refused by name."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest
from ray import serve

from lineguard.deployments.streams import alarm_rule
from lineguard.models.alarm import run
from lineguard.registry.sensor_models import sensor_model
from lineguard.training.fit_sensor import fit_sensor_line
from lineguard.training.options import SensorFitOptions
from lineguard.training.sensor_data import read_table
from tests.integration.conftest import Service

LINE = "spindle-pca"
PREDICT = f"/v1/lines/{LINE}/predict"


@pytest.fixture(scope="module")
def pca_line(service: Service) -> str:
    options = SensorFitOptions(head="pca", window="8", lags=2, alarm_k=2, alarm_n=3)
    fit_sensor_line(LINE, service.sensor_data, options, service.store)
    return LINE


def test_interleaved_streams_score_as_their_series_offline(service: Service, pca_line: str) -> None:
    status = serve.status().applications["lineguard"].deployments
    running = {getattr(state, "value", state): n for state, n in status["Ingress"].replica_states.items()}
    assert running.get("RUNNING") == 2  # the proxy spreads the requests over both
    assert {"StreamShard", "StreamShard2"} <= set(status)
    table = read_table(service.sensor_data)
    model = sensor_model(service.store, service.store.read_card(LINE))
    assert model.window == 8
    streams = {f"press-{i}": table.values[i * 60 : i * 60 + 60].astype(np.float64) for i in range(16)}
    sizes = [1, 1, 3, 1, 5]

    async def send(client: httpx.AsyncClient, name: str, values: np.ndarray) -> tuple[list[float], list[bool]]:
        scores: list[float] = []
        alarms: list[bool] = []
        start, step = 0, 0
        while start < len(values):
            part = values[start : start + sizes[step % len(sizes)]]
            body = {"values": part[0].tolist() if len(part) == 1 else part.tolist(), "stream": name}
            response = await client.post(PREDICT, json=body)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["stream"] == name and answer["window"] == 8
            if len(part) == 1:
                scores.append(answer["score"])
                alarms.append(answer["alarm"]["active"])
            else:
                scores += answer["scores"]
                alarms += answer["alarm"]
            start += len(part)
            step += 1
        return scores, alarms

    async def main() -> list[tuple[list[float], list[bool]]]:
        async with httpx.AsyncClient(base_url=service.url, timeout=60) as client:
            return await asyncio.gather(*(send(client, k, v) for k, v in streams.items()))

    results = asyncio.run(main())
    threshold = model.threshold.value
    card = service.store.read_card(LINE)
    assert card.alarm is not None
    for (name, values), (scores, alarms) in zip(streams.items(), results, strict=True):
        offline = model.predict(values).scores
        np.testing.assert_allclose(scores, offline, rtol=1e-6, err_msg=name)
        np.testing.assert_array_equal(alarms, run(alarm_rule(card, threshold), offline, threshold)[0], err_msg=name)


def test_stream_refusals_name_the_stream(service: Service, pca_line: str) -> None:
    table = read_table(service.sensor_data)
    reading = table.values[0].tolist()
    with service.client() as client:
        short = client.post(PREDICT, json={"values": [reading, reading]})
        assert short.status_code == 422 and "has 2 and needs 8" in short.json()["detail"]
        wrong = client.post(PREDICT, json={"values": reading[:5], "stream": "lathe-9"})
        assert wrong.status_code == 422 and "stream 'lathe-9'" in wrong.json()["detail"]
        now = time.time()
        assert client.post(PREDICT, json={"values": reading, "stream": "lathe-9", "timestamp": now}).status_code == 200
        late = client.post(PREDICT, json={"values": reading, "stream": "lathe-9", "timestamp": now - 60})
        assert late.status_code == 422, late.text
        assert "stream 'lathe-9'" in late.json()["detail"] and "not later than" in late.json()["detail"]
        batch = client.post(PREDICT, json={"values": table.values[:20].tolist()})  # no stream: a series of its own
        assert batch.status_code == 200 and batch.json()["count"] == 20 and "alarm" in batch.json()
