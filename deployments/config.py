"""Configuration of the serving application.

Three homes, as in the rest of the project:

- :class:`AppArgs`: what the application is (store, backbones, limits); the ``args`` of the
  application in ``serve_config.yaml``, given to :func:`lineguard.deployments.app.build_app`.
- ``*Tuning`` models: values that can change while serving (batch size, wait time, cache size,
  threads); each deployment's ``user_config``, applied in ``reconfigure()``. Unknown keys are refused.
  Their defaults are the only ones: the ``@serve.batch`` decorators and the replicas' constructors take
  them from here, so a deployment behaves the same with and without a ``user_config``.
- Replica counts, concurrency limits, autoscaling and resources: only in ``serve_config.yaml`` (the
  ``@serve.deployment`` decorators carry none; :func:`lineguard.deployments.app.bind_graph` applies the
  file's, as ``serve run`` does).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lineguard.errors import ConfigError
from lineguard.models.preprocess import DEFAULT_MAX_PIXELS
from lineguard.models.spec import DEFAULT_BACKBONE, DEFAULT_LAYERS, BackboneSpec
from lineguard.registry.names import check_line_name
from lineguard.registry.store import DEFAULT_STORE

MiB = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackboneArgs(_Strict):
    """A backbone the application serves; lines fitted on another one are refused with a clear error."""

    name: str = DEFAULT_BACKBONE
    layers: list[str] = Field(default_factory=lambda: list(DEFAULT_LAYERS))
    image_size: int = Field(256, ge=32, le=2048)
    weights: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="torch's auto: fp16 on GPUs, bf16 on CPUs with native bf16, else fp32; OpenVINO's auto: fp32. "
        "fp32 with the Scorer's search_precision fp32 gives an exported bundle's answers part for part",
    )
    runtime: Literal["auto", "torch", "onnx", "openvino"] = Field(
        "auto",
        description="what runs it on a CPU replica: auto = openvino (fp32) where installed, the fastest path "
        "with fp32's decisions measured, else torch; GPU replicas always run torch",
    )

    def spec(self) -> BackboneSpec:
        return BackboneSpec(self.name, tuple(self.layers), self.image_size)


class HistoryArgs(_Strict):
    """Where predictions are recorded and how the history is read back and watched for drift."""

    enabled: bool = Field(True, description="record every prediction (false: no history, no feedback)")
    url: str | None = Field(
        None,
        description="SQLAlchemy URL: sqlite:///path (one Recorder replica) or postgresql+psycopg://user@host/db; "
        "env:NAME reads it from that environment variable (a password from a Secret); "
        "unset: history.db in a local store's folder",
    )
    buffer_rows: int = Field(200_000, ge=1000, description="rows each ingress replica holds while the database is away")
    batch_rows: int = Field(2000, ge=1, le=100_000, description="rows per write")
    flush_interval_s: float = Field(0.2, gt=0, le=60)
    write_timeout_s: float = Field(10.0, gt=0)
    max_rows: int = Field(100_000, ge=100, description="newest rows behind stats, histograms and suggestions")
    export_max_rows: int = Field(1_000_000, ge=1, description="rows in one CSV export")
    drift_window: int = Field(500, ge=10, le=100_000, description="recent predictions compared with calibration")
    drift_min_recent: int = Field(50, ge=2)
    psi_warning: float = Field(0.1, gt=0)
    psi_drift: float = Field(0.25, gt=0)
    ks_alpha: float = Field(0.01, gt=0, lt=1)
    drift_check_interval_s: float = Field(60.0, gt=0, description="how often the Recorder checks active lines")
    webhook_url: str | None = Field(None, description="POSTed a JSON body when a line enters drift")

    @field_validator("webhook_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url must be an http:// or https:// URL, got {value!r}")
        return value


class SecurityArgs(_Strict):
    """API keys and CORS (keys themselves: ``lineguard keys create|list|revoke``, in the model store)."""

    keys_refresh_s: float = Field(2.0, gt=0, le=300, description="a new or revoked key takes effect within this")
    cors_origins: list[str] = Field(
        default_factory=list, description="browser origins allowed to call the API, e.g. https://qa.example.com"
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origin {origin!r} must look like https://host[:port] (or '*' for any)")
        return value


class WebArgs(_Strict):
    """The operators' web page at ``/`` (README: Web page)."""

    sample_roots: list[str] = Field(
        default_factory=list,
        description="folders the simulator may read test images from (MVTec layout under them, 3 levels deep)",
    )


def resolve_history_url(url: str) -> str:
    """``env:NAME`` -> the value of that environment variable (read where the Recorder runs)."""
    if not url.startswith("env:"):
        return url
    name = url.removeprefix("env:")
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"history.url is {url!r} but the environment variable {name} is not set on this node")
    return value


class StreamArgs(_Strict):
    """Sensor streams (:mod:`lineguard.deployments.streams`): each stream's window and alarm live in one of
    ``shards`` StreamShard deployments, chosen by a hash of line and stream."""

    shards: int = Field(2, ge=1, le=64, description="StreamShard deployments (one replica each)")
    idle_s: float = Field(900.0, gt=0, description="a stream silent this long is forgotten")
    max_streams: int = Field(100_000, ge=1, description="streams kept per shard (the least recently seen go first)")
    max_models: int = Field(64, ge=1, le=4096, description="line versions cached per shard (LRU)")


class AppArgs(_Strict):
    store: str = Field(DEFAULT_STORE, description="model store root: local folder or object-store URI")
    backbones: list[BackboneArgs] = Field(default_factory=lambda: [BackboneArgs()], min_length=1)
    default_line: str | None = Field(None, description="line served by the plain POST /predict")
    default_sensor_line: str | None = Field(None, description="sensor line served by the plain POST /anomaly")
    max_image_bytes: int = Field(16 * MiB, gt=0, description="one uploaded image file")
    max_request_bytes: int = Field(64 * MiB, gt=0, description="any request body (413 beyond)")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="width x height, checked before decoding")
    max_batch_images: int = Field(32, ge=1, le=1024, description="images per batch request")
    max_batch_vectors: int = Field(10_000, ge=1, le=1_000_000, description="sensor readings per request")
    request_timeout_s: float = Field(30.0, gt=0, description="scoring time before a 503 with Retry-After")
    body_timeout_s: float = Field(20.0, gt=0, description="time to receive a request's body before a 408")
    line_cache_ttl_s: float = Field(1.0, ge=0, description="how long a line's current version is cached")
    history: HistoryArgs = Field(default_factory=HistoryArgs)
    security: SecurityArgs = Field(default_factory=SecurityArgs)
    web: WebArgs = Field(default_factory=WebArgs)
    streams: StreamArgs = Field(default_factory=StreamArgs)

    @field_validator("default_line", "default_sensor_line")
    @classmethod
    def _default_line(cls, value: str | None) -> str | None:
        return None if value is None else check_line_name(value)

    @model_validator(mode="after")
    def _history_url(self) -> AppArgs:
        if self.history.url is None:
            local = self.store.removeprefix("file://")
            if "://" in local:
                raise ValueError(
                    f"store {self.store!r} is remote: give history.url (e.g. postgresql+psycopg://user@host/lineguard)"
                )
            url = f"sqlite:///{Path(local).expanduser().resolve() / 'history.db'}"
            object.__setattr__(self, "history", self.history.model_copy(update={"url": url}))
        return self

    @field_validator("backbones")
    @classmethod
    def _unique(cls, value: list[BackboneArgs]) -> list[BackboneArgs]:
        keys = [b.spec().key() for b in value]
        if len(set(keys)) != len(keys):
            raise ValueError(f"backbones are listed twice: {keys}")
        return value


class IngressTuning(_Strict):
    """Micro-batching of concurrent requests before they go down the graph (one hop per batch)."""

    batch_max_size: int = Field(16, ge=1, le=256, description="image requests gathered into one trip down the graph")
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1, description="0: no wait; batches form under load")
    max_in_flight: int = Field(
        256, ge=1, le=100_000, description="requests with a body in flight on one replica; beyond: a JSON 503"
    )


class BackboneTuning(_Strict):
    max_batch_size: int = Field(16, ge=1, le=1024, description="images per forward pass")
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1)
    threads: int = Field(0, ge=0, le=256, description="the runtime's threads; 0 = the replica's CPUs")


class ScorerTuning(_Strict):
    max_models: int = Field(8, ge=1, le=1024, description="line models cached per replica (LRU)")
    threads: int = Field(1, ge=1, le=256)
    search_precision: Literal["card", "fp32", "bf16"] = Field(
        "card",
        description="PatchCore's neighbour search: card = the line's own (auto: bf16 on CPUs with native bf16); "
        "fp32, with the backbone's precision fp32, gives an exported bundle's answers part for part",
    )


class SensorScorerTuning(_Strict):
    """Concurrent sensor requests are scored together, up to ``max_batch_rows`` readings per forward pass
    (the ingress sends at most ``SENSOR_CHUNK_ROWS`` readings per call, so any request fits)."""

    max_models: int = Field(16, ge=1, le=4096, description="line models cached per replica (LRU)")
    max_batch_rows: int = Field(4096, ge=1024, le=1_000_000)
    batch_wait_timeout_s: float = Field(0.0, ge=0, le=1)


SENSOR_CHUNK_ROWS = 1024  # readings per SensorScorer call from the ingress (every SensorScorer batch holds one)
SMALL_SENSOR_REQUEST = 32  # readings; requests up to this size are micro-batched in the ingress under load
CONCURRENT_BATCHES = 4  # micro-batches of one ingress replica in flight at once


class PreprocessorTuning(_Strict):
    threads: int = Field(2, ge=1, le=64, description="decoding threads per replica (one slow image holds one)")


def tune_batching(batched_method: Any, max_batch_size: int, wait_timeout_s: float) -> None:
    """Apply new limits to a ``@serve.batch`` callable (its setters are not in Ray's type hints)."""
    batched_method.set_max_batch_size(max_batch_size)
    batched_method.set_batch_wait_timeout_s(wait_timeout_s)


def answer_deadline_s(args: dict[str, Any]) -> float:
    """The longest an ingress takes to answer a request: its body time plus its scoring time (``args`` as in
    ``serve_config.yaml``, AppArgs' defaults for what it leaves out)."""
    fields = AppArgs.model_fields
    return sum(float(args.get(k, fields[k].default)) for k in ("request_timeout_s", "body_timeout_s"))
