"""StreamShard deployments: the sensor streams' windows and alarms, each stream in exactly one place.

A window head scores a reading from the stream's earlier readings, and an alarm counts a stream's readings:
both need every reading of a stream to meet the same state, in order. With several ingress replicas and
several SensorScorer replicas, Serve routes a request to any replica (multiplexing prefers, but does not
promise, the replica that holds the model). So the state is not kept "where every replica finds it" (a
store round trip on every reading, and a race between two replicas updating one window): each stream
is **routed to one place**. The application binds ``streams.shards`` StreamShard deployments of one
replica each (``StreamShard``, ``StreamShard2``, ...); an ingress picks the shard from a stable hash of
``line`` and ``stream`` (CRC-32, the same in every process and after every restart), so every replica of
the ingress sends a stream to the same shard, which scores its readings one request after another.

A shard scores with NumPy as the SensorScorer does (models cached per version, LRU), so a streamed reading
makes one hop, as a plain one does. A shard that restarts has lost its streams' windows: each starts
afresh, as a new stream. More shards spread the load; the number of shards is fixed by the config, since
changing it moves streams (each moved stream starts afresh once).
"""

from __future__ import annotations

import time
import zlib
from collections import OrderedDict
from typing import Any

import numpy as np
from ray import serve

from lineguard.deployments.config import StreamArgs
from lineguard.deployments.messages import ItemError, StreamScores
from lineguard.errors import LineGuardError
from lineguard.models.alarm import AlarmRule
from lineguard.models.sensor_model import SensorModel
from lineguard.models.streams import StreamBook
from lineguard.registry.card import ModelCard
from lineguard.registry.names import parse_model_id
from lineguard.registry.sensor_models import sensor_model
from lineguard.registry.store import ModelStore


def shard_of(line: str, stream: str, shards: int) -> int:
    """The shard that owns ``stream`` of ``line``: stable across processes (not Python's salted ``hash``)."""
    return zlib.crc32(f"{line}\0{stream}".encode()) % shards


def shard_name(index: int) -> str:
    return "StreamShard" if index == 0 else f"StreamShard{index + 1}"


def alarm_rule(card: ModelCard, threshold: float) -> AlarmRule:
    """The line's alarm rule at ``threshold`` (a card without one: every reading over the threshold alarms)."""
    if card.alarm is None:
        return AlarmRule()
    clear = None if card.alarm.clear_ratio >= 1 else card.alarm.clear_ratio * threshold
    return AlarmRule(card.alarm.k, card.alarm.n, clear, card.alarm.min_duration)


@serve.deployment
class StreamShard:
    def __init__(self, store: str, args: dict[str, Any]) -> None:
        self.store = ModelStore(store)
        self.args = StreamArgs(**args)
        self.book = StreamBook(self.args.idle_s, self.args.max_streams)
        self.models: OrderedDict[str, tuple[SensorModel, AlarmRule]] = OrderedDict()

    def _model(self, model_id: str) -> tuple[SensorModel, AlarmRule]:
        cached = self.models.get(model_id)
        if cached is None:
            line, version = parse_model_id(model_id)
            card = self.store.read_card(line, version)
            model = sensor_model(self.store, card)
            cached = self.models[model_id] = (model, alarm_rule(card, model.threshold.value))
            while len(self.models) > self.args.max_models:
                self.models.popitem(last=False)
        self.models.move_to_end(model_id)
        return cached

    async def score_many(
        self, items: list[tuple[str, str | None, np.ndarray, list[float] | None]]
    ) -> list[StreamScores | ItemError]:
        """A micro-batch of an ingress's requests for this shard, in order: ``(model_id, stream, values,
        timestamps)`` each."""
        return [self._score(*item) for item in items]

    def _score(
        self, model_id: str, stream: str | None, values: np.ndarray, timestamps: list[float] | None
    ) -> StreamScores | ItemError:
        try:
            model, rule = self._model(model_id)
        except Exception as err:  # a missing, corrupt or mismatched version: the request gets a clear 503
            return ItemError(503, f"the model {model_id} cannot be loaded: {type(err).__name__}: {err}", 1)
        line, _ = parse_model_id(model_id)
        # synchronous: the replica's event loop runs one request's update of the book at a time, so a stream's
        # readings meet its state one request after another
        started = time.perf_counter()
        try:
            answer = self.book.score(line, stream, model, rule, values, timestamps)
        except LineGuardError as err:
            return ItemError.of(err)
        spent = (time.perf_counter() - started) * 1000
        return StreamScores(
            answer.out, model.threshold.value, answer.alarm, answer.events, model.window, spent,
            answer.state.seen, answer.state.since,
        )  # fmt: skip

    def stats(self) -> dict[str, int]:
        return {"streams": len(self.book), "bytes": self.book.nbytes(), "forgotten": self.book.forgotten}

    def ping(self) -> str:
        return "ok"
