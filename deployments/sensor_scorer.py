"""SensorScorer deployment: sensor lines' AutoEncoders, multiplexed by ``line@version`` and batched.

Concurrent requests for one line are scored in one forward pass (``@serve.batch``, sized in readings,
not requests; Serve splits batches by multiplexed model id, so a batch holds one line). A model is a
few kilobytes, so a replica keeps many (LRU of ``max_models``). Scoring is NumPy
(:class:`lineguard.models.sensor_model.SensorModel`): this replica never imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from ray import serve

from lineguard.deployments.config import SensorScorerTuning, tune_batching
from lineguard.deployments.messages import ItemError, VectorScores
from lineguard.models.sensor_model import SensorModel
from lineguard.registry.names import parse_model_id
from lineguard.registry.sensor_models import sensor_model
from lineguard.registry.store import ModelStore

DEFAULTS = SensorScorerTuning()  # the decorator's batching and the constructor's, until a user_config arrives


def _rows(requests: list[np.ndarray]) -> int:
    return sum(len(r) for r in requests)


@serve.deployment
class SensorScorer:
    def __init__(self, store: str) -> None:
        self.store = ModelStore(store)
        self.tuning: SensorScorerTuning | None = None
        self.reconfigure({})

    def _loader(self, max_models: int) -> Callable[[str], Awaitable[SensorModel]]:
        async def load(model_id: str) -> SensorModel:
            line, version = parse_model_id(model_id)
            return sensor_model(self.store, self.store.read_card(line, version))

        return serve.multiplexed(max_num_models_per_replica=max_models)(load)  # type: ignore[no-any-return]

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        tuning = SensorScorerTuning(**user_config)
        if self.tuning is None or tuning.max_models != self.tuning.max_models:
            self._get_model = self._loader(tuning.max_models)
        tune_batching(self.__call__, tuning.max_batch_rows, tuning.batch_wait_timeout_s)
        self.tuning = tuning

    @serve.batch(
        max_batch_size=DEFAULTS.max_batch_rows, batch_wait_timeout_s=DEFAULTS.batch_wait_timeout_s, batch_size_fn=_rows
    )
    async def __call__(self, requests: list[np.ndarray]) -> list[VectorScores | ItemError]:
        """Each request is ``(k, n)`` float32 readings of the line named by the multiplexed model id."""
        model_id = serve.get_multiplexed_model_id()
        try:
            model = await self._get_model(model_id)
        except Exception as err:  # a missing, corrupt or mismatched version: the request gets a clear 503
            error = ItemError(503, f"the model {model_id} cannot be loaded: {type(err).__name__}: {err}", 1)
            return [error for _ in requests]
        started = time.perf_counter()
        if model.window > 1:  # a window head: each request is a series of its own (streams go to the shards)
            outs = [model.predict(r) for r in requests]
            spent = (time.perf_counter() - started) * 1000
            return [VectorScores(out, model.threshold.value, spent) for out in outs]
        out = model.predict(np.concatenate(requests) if len(requests) > 1 else requests[0])
        spent = (time.perf_counter() - started) * 1000
        results: list[VectorScores | ItemError] = []
        start = 0
        for request in requests:
            part = slice(start, start + len(request))
            start += len(request)
            results.append(VectorScores(out.rows(part), model.threshold.value, spent))
        return results

    def ping(self) -> str:
        return "ok"
