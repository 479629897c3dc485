"""What one ingress replica holds for its routes: the settings, the store and the lines in service, the API
keys, the pipelines to the scoring deployments, the history and the metrics. The Ingress builds it from its
handles; the unit tests build it from fake handles, and the routes get it from the request
(:mod:`lineguard.deployments.api.deps`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from lineguard.deployments.config import AppArgs, IngressTuning
from lineguard.deployments.history_client import HistoryClient
from lineguard.deployments.keys import KeyCache, KeyRing
from lineguard.deployments.lines import LineDirectory, LineEntry
from lineguard.deployments.pipeline import Handle, ImagePipeline, SensorPipeline, hop_bytes
from lineguard.deployments.records import decisions
from lineguard.deployments.samples import SampleRoots
from lineguard.deployments.streams import shard_name
from lineguard.deployments.telemetry import IngressMetrics
from lineguard.history.rows import PredictionRow
from lineguard.registry.store import ModelStore


@dataclass
class Services:
    args: AppArgs
    store: ModelStore
    lines: LineDirectory
    images: ImagePipeline
    sensors: SensorPipeline
    keys: KeyCache | None = None
    history: HistoryClient | None = None
    metrics: IngressMetrics | None = None
    probes: dict[str, Any] = field(default_factory=dict)  # deployment name -> handle (its ping() says it is up)
    max_in_flight: int = IngressTuning().max_in_flight  # requests with a body at once (the ingress's user_config)

    @classmethod
    def build(
        cls,
        args: AppArgs,
        preprocessor: Handle,
        backbones: list[Handle],
        scorer: Handle,
        sensor_scorer: Handle,
        recorder: Any | None,
        metrics: IngressMetrics | None = None,
        stream_shards: list[Handle] | None = None,
    ) -> Services:
        store = ModelStore(args.store)
        on_drop = metrics.history_dropped.inc if metrics is not None else None
        probes: dict[str, Any] = {"Preprocessor": preprocessor, "Scorer": scorer, "SensorScorer": sensor_scorer}
        if recorder is not None:
            probes["Recorder"] = recorder
        for i, handle in enumerate(backbones):
            probes["Backbone" if i == 0 else f"Backbone{i + 1}"] = handle
        for i, handle in enumerate(stream_shards or []):
            probes[shard_name(i)] = handle
        return cls(
            args=args,
            store=store,
            lines=LineDirectory(store, args.line_cache_ttl_s),
            images=ImagePipeline(
                preprocessor,
                list(zip(args.backbones, backbones, strict=True)),
                scorer,
                args.max_pixels,
                args.request_timeout_s,
                hop_bytes(),
            ),
            sensors=SensorPipeline(sensor_scorer, args.request_timeout_s, stream_shards or []),
            keys=KeyCache(KeyRing(store), args.security.keys_refresh_s),
            history=None if recorder is None else HistoryClient(recorder, args.history, on_drop),
            metrics=metrics,
            probes=probes,
        )

    @cached_property
    def samples(self) -> SampleRoots:
        return SampleRoots(self.args.web.sample_roots)

    def record(self, entry: LineEntry, rows: list[PredictionRow]) -> None:
        """Count the answers in the metrics and queue them for the history (off the request path)."""
        if self.metrics is not None:
            self.metrics.served(entry.line, entry.version, entry.kind.value)
        if not rows:
            return
        if self.metrics is not None:
            counts, flagged = decisions(rows)
            self.metrics.decided(entry.line, counts, flagged)
        if self.history is not None:
            self.history.record(rows)
            if self.metrics is not None:
                self.metrics.history_queued.set(self.history.outbox.queued)

    async def close(self) -> None:
        """Graceful shutdown: what is queued for the history is written first."""
        if self.history is not None:
            await self.history.close()
