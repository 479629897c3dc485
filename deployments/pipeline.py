"""The ingress's trips down the deployment graph, one per micro-batch.

Images: Preprocessor -> Backbone -> Scorer, one call per hop per batch (one Scorer call per line in the
batch). The hops are chained by passing the handles' responses on, so images and features travel between
the replicas directly and only the scores come back here; Ray's per-call cost (serialisation,
scheduling) is paid once per batch instead of once per image. Sensor readings: one SensorScorer call per
line per batch; a request alone skips the batching, a large one goes in chunks.

The graph logic here is plain asyncio over handles (``handle.remote(...)``, ``handle.options(
multiplexed_model_id=...)``), so it is tested with fake handles, without Ray. The micro-batching itself
is Ray Serve's ``@serve.batch``: inside a replica the ingress replaces :attr:`ImagePipeline.batched` and
:attr:`SensorPipeline.batched` with batching wrappers of :meth:`run` (:func:`micro_batched`); outside one
each item is its own batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from lineguard.deployments.config import CONCURRENT_BATCHES, SENSOR_CHUNK_ROWS, SMALL_SENSOR_REQUEST, BackboneArgs
from lineguard.deployments.lines import LineEntry
from lineguard.deployments.messages import ItemError, Scored, StreamScores, VectorScores
from lineguard.deployments.streams import shard_of
from lineguard.errors import (
    ConfigError,
    DataError,
    FeatureMismatchError,
    ImageTooLargeError,
    LineGuardError,
    UnavailableError,
)
from lineguard.models.sensor_model import SensorScores
from lineguard.registry.kinds import LineKind

log = logging.getLogger("ray.serve")
HOP_LIMIT_ENV = "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"
HOP_OVERHEAD = 1024 * 1024  # what a call adds to its payloads (pickled arguments, framing)

Item = TypeVar("Item")
Result = TypeVar("Result")


class Handle(Protocol):
    """What the pipeline needs of a deployment handle (a Ray Serve ``DeploymentHandle``, or a fake)."""

    def remote(self, *args: Any) -> Any: ...

    def options(self, *, multiplexed_model_id: str) -> Handle: ...

    def __getattr__(self, method: str) -> Any: ...  # a deployment's other methods: handle.score_many.remote(...)


@dataclass
class ImageItem:
    entry: LineEntry
    data: bytes
    want_map: bool


def micro_batched(
    run: Callable[[list[Item]], Awaitable[list[Result]]], max_batch_size: int, wait_timeout_s: float
) -> Callable[[Item], Awaitable[Result]]:
    """``run`` behind Ray Serve's ``@serve.batch`` (call this inside a replica): concurrent calls with one
    item each are gathered into one call of ``run`` with the list."""
    from ray import serve

    decorate: Any = serve.batch(
        max_batch_size=max_batch_size, batch_wait_timeout_s=wait_timeout_s, max_concurrent_batches=CONCURRENT_BATCHES
    )
    batched: Callable[[Item], Awaitable[Result]] = decorate(run)
    return batched


def graph_error(err: BaseException) -> ItemError:
    """A failed hop, as the answer it makes. Only what can pass is a 503 with ``Retry-After`` (the service is
    at capacity, a replica went away or is restarting); an error of LineGuard's raised in a replica keeps its
    own status; a bug in a replica's code is a 500 (retrying the same request would fail the same way)."""
    from ray.exceptions import RayError, RayTaskError
    from ray.serve.exceptions import BackPressureError

    if isinstance(err, BackPressureError):
        return ItemError(503, "the service is at capacity: retry shortly", 1)
    cause = err.cause if isinstance(err, RayTaskError) else err  # raised by the code of a replica
    if isinstance(cause, LineGuardError):
        return ItemError.of(cause)
    log.exception("scoring failed", exc_info=err)
    if _message_too_large(cause):
        return ItemError(413, f"the batch is over the bytes one call between replicas may carry ({HOP_LIMIT_ENV})")
    if isinstance(err, RayTaskError) and not isinstance(cause, RayError | OSError | asyncio.CancelledError):
        return ItemError(500, f"scoring failed ({type(cause).__name__}): the service log has the details")
    return ItemError(503, f"scoring is temporarily unavailable ({type(err).__name__}): retry shortly", 1)


def _message_too_large(err: BaseException) -> bool:
    code = getattr(err, "code", None)
    return callable(code) and getattr(code(), "name", "") == "RESOURCE_EXHAUSTED"


def hop_limit_bytes(environ: Mapping[str, str] = os.environ) -> int | None:
    """The most bytes one call between replicas may carry: Ray Serve's gRPC message limit when replicas talk
    gRPC (``RAY_SERVE_USE_GRPC_BY_DEFAULT=1``; Ray's default is 4 MiB, ``serve_config.yaml`` raises it),
    ``None`` (no limit) when they pass objects through Ray's object store."""
    if environ.get("RAY_SERVE_USE_GRPC_BY_DEFAULT") != "1":
        return None
    return int(environ.get(HOP_LIMIT_ENV, 4 * 1024 * 1024))


def hop_bytes(environ: Mapping[str, str] = os.environ) -> int | None:
    """Image bytes one Preprocessor call may carry: the link's limit less what a call adds (None: no limit)."""
    limit = hop_limit_bytes(environ)
    return None if limit is None else max(1, limit - HOP_OVERHEAD)


def by_bytes(sizes: Sequence[int], limit: int) -> list[list[int]]:
    """Indices of ``sizes`` in order, cut into runs whose sum stays within ``limit`` (an item over it alone)."""
    runs: list[list[int]] = [[]]
    total = 0
    for i, size in enumerate(sizes):
        if runs[-1] and total + size > limit:
            runs.append([])
            total = 0
        runs[-1].append(i)
        total += size
    return runs


async def _within(call: Awaitable[Result], timeout_s: float) -> Result:
    try:
        return await asyncio.wait_for(call, timeout=timeout_s)
    except TimeoutError as err:
        raise UnavailableError(f"scoring took longer than {timeout_s} s: retry shortly") from err


class ImagePipeline:
    """Images of any image line through the graph: ``score()`` for one request, ``run()`` for one batch."""

    def __init__(
        self,
        preprocessor: Handle,
        backbones: Sequence[tuple[BackboneArgs, Handle]],
        scorer: Handle,
        max_pixels: int,
        timeout_s: float,
        hop_bytes: int | None = None,
    ) -> None:
        self.preprocessor = preprocessor
        self.backbones = {args.spec().key(): (args, handle) for args, handle in backbones}
        self.scorer = scorer
        self.max_pixels = max_pixels
        self.timeout_s = timeout_s
        # image bytes per Preprocessor call (None: no limit); a micro-batch over it goes in several calls
        self.hop_bytes = hop_bytes
        self.batched: Callable[[ImageItem], Awaitable[Scored]] = self._alone

    async def _alone(self, item: ImageItem) -> Scored:
        return (await self.run([item]))[0]

    def check(self, entry: LineEntry, want_map: bool) -> None:
        """Refuse what this line cannot answer, before anything is sent down the graph."""
        if not entry.kind.takes_images:
            raise DataError(f"line {entry.line!r} is a {entry.kind} line: it does not take images")
        if want_map and entry.kind is LineKind.IMAGE_CLASSIFIER:
            raise ConfigError(
                f"line {entry.line!r} is a classifier: it answers a class, not a heatmap (drop ?heatmap=true)"
            )
        if entry.backbone_key not in self.backbones:
            raise FeatureMismatchError(
                f"line {entry.line!r} was fitted on backbone {entry.backbone_key}, which this service does not "
                f"run (it runs {sorted(self.backbones)}): add it to serve_config.yaml"
            )

    async def score(self, entry: LineEntry, payloads: list[bytes], want_map: bool) -> list[Scored]:
        """One request's images, each joining a micro-batch; an item that fails keeps its own error."""
        self.check(entry, want_map)
        for i, payload in enumerate(payloads):
            if self.hop_bytes is not None and len(payload) > self.hop_bytes:
                raise ImageTooLargeError(
                    f"image {i + 1} is {len(payload)} bytes, over the {self.hop_bytes} one call between this "
                    f"service's replicas carries: raise {HOP_LIMIT_ENV} in serve_config.yaml's runtime_env"
                )
        calls = asyncio.gather(*(self.batched(ImageItem(entry, p, want_map)) for p in payloads))
        try:
            return list(await _within(calls, self.timeout_s))
        except LineGuardError:
            raise
        except Exception as err:  # a whole micro-batch failed (Ray's backpressure, say): never Ray's plain text
            raise _unavailable(graph_error(err)) from err

    async def run(self, items: list[ImageItem]) -> list[Scored]:
        """One micro-batch down the graph, in runs of at most ``hop_bytes`` of image bytes (each its own trip)."""
        if self.hop_bytes is None or sum(len(item.data) for item in items) <= self.hop_bytes:
            return await self._trip(items)
        runs = by_bytes([len(item.data) for item in items], self.hop_bytes)
        answers = await asyncio.gather(*(self._trip([items[i] for i in run]) for run in runs))
        results: list[Scored] = [ItemError(500, "not scored")] * len(items)
        for run, answer in zip(runs, answers, strict=True):
            for i, result in zip(run, answer, strict=True):
                results[i] = result
        return results

    async def _trip(self, items: list[ImageItem]) -> list[Scored]:
        """A Preprocessor and a Backbone call per backbone in the batch, a Scorer call per line; the responses
        are chained, not awaited, until the scores."""
        results: list[Scored] = [ItemError(500, "not scored")] * len(items)
        by_backbone: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            by_backbone[str(item.entry.backbone_key)].append(i)
        calls = []
        for key, indices in by_backbone.items():
            args, backbone = self.backbones[key]
            images = self.preprocessor.remote([items[i].data for i in indices], args.image_size, self.max_pixels)
            keep = any(items[i].want_map for i in indices)  # the resized images come back for heatmaps only
            features = backbone.remote(images, keep)  # passed on to the Scorer, not awaited here
            groups: dict[str, list[int]] = defaultdict(list)
            for position, i in enumerate(indices):
                groups[items[i].entry.model_id].append(position)
            for model_id, positions in groups.items():
                want_maps = any(items[indices[p]].want_map for p in positions)
                response = self.scorer.options(multiplexed_model_id=model_id).remote(features, positions, want_maps)
                calls.append((response, [indices[p] for p in positions]))
        outcomes = await asyncio.gather(*(response for response, _ in calls), return_exceptions=True)
        for (_, targets), outcome in zip(calls, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                error = graph_error(outcome)
                for t in targets:
                    results[t] = error
            else:
                for t, result in zip(targets, outcome, strict=True):
                    results[t] = result
        return results


class SensorPipeline:
    """Sensor readings of any sensor line to the SensorScorer: ``score()`` for one request, ``run()`` for one
    micro-batch of small requests; readings of a stream to its StreamShard: ``score_stream()`` and
    ``run_streams()``."""

    def __init__(self, handle: Handle, timeout_s: float, shards: list[Handle] | None = None) -> None:
        self.handle = handle
        self.shards = shards or []
        self.timeout_s = timeout_s
        self._handles: dict[str, Handle] = {}
        self.in_flight = 0  # requests awaiting the SensorScorer (small ones are micro-batched only under load)
        self.batched: Callable[[tuple[str, np.ndarray]], Awaitable[VectorScores | ItemError]] = self._alone
        self.streamed: Callable[[StreamItem], Awaitable[StreamScores | ItemError]] = self._stream_alone

    async def _alone(self, item: tuple[str, np.ndarray]) -> VectorScores | ItemError:
        return (await self.run([item]))[0]

    def _handle(self, model_id: str) -> Handle:
        handle = self._handles.get(model_id)
        if handle is None:
            if len(self._handles) > 4096:  # old versions pile up over months of threshold changes
                self._handles.clear()
            handle = self._handles[model_id] = self.handle.options(multiplexed_model_id=model_id)
        return handle

    async def run(self, items: list[tuple[str, np.ndarray]]) -> list[VectorScores | ItemError]:
        """Small requests gathered under load: one SensorScorer call per line in the batch."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, (model_id, _) in enumerate(items):
            groups[model_id].append(i)
        calls = []
        for model_id, indices in groups.items():
            values = items[indices[0]][1] if len(indices) == 1 else np.concatenate([items[i][1] for i in indices])
            calls.append((self._handle(model_id).remote(values), indices))
        outcomes = await asyncio.gather(*(call for call, _ in calls), return_exceptions=True)
        results: list[VectorScores | ItemError] = [ItemError(500, "not scored")] * len(items)
        for (_, indices), outcome in zip(calls, outcomes, strict=True):
            if isinstance(outcome, BaseException | ItemError):
                error = graph_error(outcome) if isinstance(outcome, BaseException) else outcome
                for i in indices:
                    results[i] = error
                continue
            start = 0
            for i in indices:
                rows = slice(start, start + len(items[i][1]))
                results[i] = VectorScores(outcome.out.rows(rows), outcome.threshold, outcome.score_ms)
                start = rows.stop
        return results

    async def score(self, entry: LineEntry, values: np.ndarray) -> VectorScores:
        """A small request goes straight to the SensorScorer when it is alone and joins the micro-batches when
        others are in flight (one hop per batch under load); a large one goes in chunks (concurrent; each
        fits one of the SensorScorer's batches)."""
        if len(values) <= SMALL_SENSOR_REQUEST and self.in_flight > 0:
            calls: Any = self.batched((entry.model_id, values))  # others are waiting: join a batch
            chunks = 1
        else:  # alone (no batching machinery on the way), or large
            handle = self._handle(entry.model_id)
            pieces = [values[i : i + SENSOR_CHUNK_ROWS] for i in range(0, len(values), SENSOR_CHUNK_ROWS)]
            chunks = len(pieces)
            calls = handle.remote(pieces[0]) if chunks == 1 else asyncio.gather(*(handle.remote(c) for c in pieces))
        answer = await self._hop(calls)
        parts = [answer] if chunks == 1 else list(answer)
        for part in parts:
            if isinstance(part, ItemError):
                raise _unavailable(part)
        if len(parts) == 1:
            return parts[0]  # type: ignore[no-any-return]
        combined = SensorScores.concatenate([p.out for p in parts])
        return VectorScores(combined, parts[0].threshold, sum(p.score_ms for p in parts))

    def by_stream(self, entry: LineEntry, stream: str | None) -> bool:
        """Readings of a stream, and any readings of a window head, go to the StreamShards."""
        return bool(self.shards) and (stream is not None or entry.window > 1)

    async def _stream_alone(self, item: StreamItem) -> StreamScores | ItemError:
        return (await self.run_streams([item]))[0]

    async def run_streams(self, items: list[StreamItem]) -> list[StreamScores | ItemError]:
        """Stream requests gathered under load: one call per shard with its items, in the order they came (a
        StreamShard call costs about a millisecond of Serve's own work, a reading's scoring a tenth of that)."""
        groups: dict[int, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            key = item.stream if item.stream is not None else f"{time.monotonic_ns()}-{i}"
            groups[shard_of(item.line, key, len(self.shards))].append(i)
        calls = [
            (self.shards[shard].score_many.remote([items[i].call() for i in indices]), indices)
            for shard, indices in groups.items()
        ]
        outcomes = await asyncio.gather(*(call for call, _ in calls), return_exceptions=True)
        results: list[StreamScores | ItemError] = [ItemError(500, "not scored")] * len(items)
        for (_, indices), outcome in zip(calls, outcomes, strict=True):
            for n, i in enumerate(indices):
                results[i] = graph_error(outcome) if isinstance(outcome, BaseException) else outcome[n]
        return results

    async def score_stream(
        self, entry: LineEntry, stream: str | None, values: np.ndarray, timestamps: list[float] | None
    ) -> StreamScores:
        """``values`` of ``stream`` scored in their windows by the shard that owns the stream (readings of a
        window head without a stream: by any shard, in a window of their own). Alone, a request goes
        straight to its shard; with others in flight it joins a micro-batch (one call per shard)."""
        item = StreamItem(entry.line, entry.model_id, stream, values, timestamps)
        answer = await self._hop(self.streamed(item) if self.in_flight > 0 else self._stream_alone(item))
        if isinstance(answer, ItemError):
            raise _unavailable(answer)
        return answer  # type: ignore[no-any-return]

    async def _hop(self, calls: Awaitable[Any]) -> Any:
        """Await a trip to a scoring deployment within the timeout, counted in ``in_flight`` (which tells the
        next small request to join a micro-batch); a failed trip is the error the API answers."""
        self.in_flight += 1
        try:
            return await _within(calls, self.timeout_s)
        except UnavailableError:
            raise
        except Exception as err:
            raise _unavailable(graph_error(err)) from err
        finally:
            self.in_flight -= 1


@dataclass
class StreamItem:
    """One request of a stream (or of a window head without one), for its shard."""

    line: str
    model_id: str
    stream: str | None
    values: np.ndarray
    timestamps: list[float] | None

    def call(self) -> tuple[str, str | None, np.ndarray, list[float] | None]:
        return self.model_id, self.stream, self.values, self.timestamps


def _unavailable(error: ItemError) -> LineGuardError:
    """A failed hop as the error the API answers (its status from the one table, lineguard.errors)."""
    if error.status == 503:
        return UnavailableError(error.detail, error.retry_after_s or 1)
    if error.status == 413:
        return ImageTooLargeError(error.detail)
    if error.status >= 500:
        return LineGuardError(error.detail)  # a 500: a fault in a replica's code
    return DataError(error.detail)
