"""The HTTP ingress deployment: it holds one replica's services and serves the API over them.

Everything a request meets is elsewhere: the routes in :mod:`lineguard.deployments.api`, the trips down
the graph in :mod:`lineguard.deployments.pipeline`, the services in :mod:`lineguard.deployments.services`.
This class wires them to the handles Serve gives it, makes the micro-batching (``@serve.batch``, which
needs a replica) and applies its ``user_config``. No torch is imported on the way (a test checks).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve

from lineguard.deployments.api import create_api
from lineguard.deployments.config import SENSOR_CHUNK_ROWS, SMALL_SENSOR_REQUEST, AppArgs, IngressTuning, tune_batching
from lineguard.deployments.pipeline import micro_batched
from lineguard.deployments.services import Services
from lineguard.deployments.telemetry import IngressMetrics

SENSOR_BATCH = SENSOR_CHUNK_ROWS // SMALL_SENSOR_REQUEST  # small requests per micro-batch: one SensorScorer batch


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(
        self,
        preprocessor: Any,
        backbones: list[Any],
        scorer: Any,
        sensor_scorer: Any,
        stream_shards: list[Any],
        recorder: Any | None,
        args: dict[str, Any],
    ) -> None:
        self.services = Services.build(
            AppArgs(**args), preprocessor, backbones, scorer, sensor_scorer, recorder, IngressMetrics(), stream_shards
        )
        tuning = IngressTuning()  # the defaults; a user_config changes them through reconfigure()
        images, sensors = self.services.images, self.services.sensors
        images.batched = micro_batched(images.run, tuning.batch_max_size, tuning.batch_wait_timeout_s)
        sensors.batched = micro_batched(sensors.run, SENSOR_BATCH, tuning.batch_wait_timeout_s)
        sensors.streamed = micro_batched(sensors.run_streams, SENSOR_BATCH, tuning.batch_wait_timeout_s)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self.services)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        tuning = IngressTuning(**user_config)
        self.services.max_in_flight = tuning.max_in_flight
        tune_batching(self.services.images.batched, tuning.batch_max_size, tuning.batch_wait_timeout_s)
        tune_batching(self.services.sensors.batched, SENSOR_BATCH, tuning.batch_wait_timeout_s)
        tune_batching(self.services.sensors.streamed, SENSOR_BATCH, tuning.batch_wait_timeout_s)

    async def __del__(self) -> None:
        """Graceful shutdown: what is queued for the history is written first."""
        await self.services.close()


__all__ = ["Ingress"]
