"""What the test modules share: the shared data sets, small real inputs (images, feature maps, history
rows), helpers for waiting and ports, the PostgreSQL server's databases, and fake deployment handles for
the routes' unit tests. One module, so no test imports another test module."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import socket
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lineguard.history.ids import new_ids
from lineguard.history.rows import PredictionRow

SHARED = Path(os.environ.get("LINEGUARD_DATASETS", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def shared_dataset(name: str) -> Path:
    """Path of a shared data set, or skip the test saying where it was looked for."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"data set {name} not found at {path} (set LINEGUARD_DATASETS to the folder holding it)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def debian_tool(name: str, package: str) -> str:
    """A program from one of Debian's packages (``make test`` installs it as root): skipped where it is
    missing, and under CI that is a failure."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if found is None:
        message = f"{name} is not installed: `make test` installs Debian's {package} package (as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def outward_address() -> str | None:
    """This machine's address on its network (None: loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: picks the route, sends nothing
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def private_serve_env(haproxy: Path, stats_port: int | None = None) -> dict[str, str]:
    """The environment of a second Serve with HAProxy on this machine beside the test session's: every fixed
    port and file of Serve's HAProxy (side ports, the fallback proxy, configuration, admin socket, server
    state; two instances overwrote each other's, or one answered for the other) moved to its own."""
    from lineguard.cli.launcher import HAPROXY_FILES

    return {
        "RAY_ADDRESS": "local",  # a private Ray, even while the test session's Ray runs
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port or free_port()),
        **{key: str(haproxy / name) if name else str(haproxy) for key, name in HAPROXY_FILES.items()},
        # HAProxy's backup server is the Serve proxy's fallback on a fixed port (8500): left there, this
        # instance's HAProxy sent its requests to the session's proxy, and answered for the wrong service
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
        # the replicas' direct-ingress ports: a range of their own, below the ephemeral ports free_port() uses
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "31100",
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "31999",
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "41100",
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "41999",
        "RAY_TMPDIR": "/tmp",  # Ray keeps its default (its socket paths must stay short)
    }


def wait_for(
    condition: Callable[[], Any], timeout_s: float = 20.0, what: str | Callable[[], str] | None = None
) -> None:
    """Poll ``condition`` until it holds; past ``timeout_s``, fail naming ``what`` (text, or a callable that
    describes the state at that moment), else the condition."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            name = what() if callable(what) else what or getattr(condition, "__qualname__", repr(condition))
            raise AssertionError(f"not met within {timeout_s:g} s: {name}")
        time.sleep(0.1)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but carries almost no data (a decompression bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def bmp_frame(n_bytes: int, width: int = 1300, seed: int = 0) -> bytes:
    """An RGB BMP of about ``n_bytes`` (at most), as an uncompressed camera frame is: noise, ``width`` wide."""
    import io

    from PIL import Image

    height = max(1, (n_bytes - 54) // (width * 3))
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "BMP")
    return out.getvalue()


def tiff_pages(pages: int, broken_last: bool = False) -> bytes:
    """A little-endian TIFF of ``pages`` 1x1 grey pages, written by hand; with ``broken_last`` the last
    page has no width or height (Pillow's ``n_frames`` raises on it; the first page is fine)."""
    header = struct.pack("<2sHI", b"II", 42, 8)
    pixel_at = 8  # the one pixel every page points to, right after the header
    first_ifd = pixel_at + 2
    full = [(256, 3, 1), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, pixel_at), (277, 3, 1)]
    full += [(278, 3, 1), (279, 4, 1)]
    broken = [(259, 3, 1), (262, 3, 1)]
    body = bytearray()
    offset = first_ifd
    for page in range(pages):
        entries = broken if broken_last and page == pages - 1 else full
        size = 2 + 12 * len(entries) + 4
        following = offset + size if page < pages - 1 else 0
        body += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            body += struct.pack("<HHII", tag, kind, 1, value)
        body += struct.pack("<I", following)
        offset += size
    return header[:4] + struct.pack("<I", first_ifd) + b"\xff\x00" + bytes(body)


def normal_features(n: int, seed: int = 0) -> list[Any]:
    """Two-layer feature maps (stride 8 and 16 of a 128 px image): a smooth texture plus noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    base0 = torch.sin(torch.linspace(0, 6, 16))[None, None, :, None] * torch.ones(1, 12, 16, 16)
    base1 = torch.cos(torch.linspace(0, 6, 8))[None, None, None, :] * torch.ones(1, 20, 8, 8)
    return [
        base0 + 0.1 * torch.randn(n, 12, 16, 16, generator=g),
        base1 + 0.1 * torch.randn(n, 20, 8, 8, generator=g),
    ]


def with_defect(features: list[Any]) -> list[Any]:
    """A strong local change around cell (4, 10) of the finest grid."""
    out = [f.clone() for f in features]
    out[0][:, :, 3:6, 9:12] += 2.0
    out[1][:, :, 2, 5] += 2.0
    return out


def rows_for(line: str, scores: np.ndarray, threshold: float = 1.0, **extra: Any) -> list[PredictionRow]:
    """History rows of an image-anomaly line, one per score, all of one moment."""
    now = time.time()
    ids = new_ids(len(scores), now)
    return [
        PredictionRow(
            id=i,
            line=line,
            kind="image-anomaly",
            model_version="v1",
            ts=now,
            score=float(s),
            threshold=threshold,
            decision="ng" if s > threshold else "ok",
            is_anomaly=bool(s > threshold),
            latency_ms=5.0 + k % 10,
            input_stat=0.5,
            **extra,
        )
        for k, (i, s) in enumerate(zip(ids, scores, strict=True))
    ]


def fresh_pg_database(server_url: str, name: str) -> str:
    """A new, empty database on the test PostgreSQL server; its URL."""
    from sqlalchemy import create_engine, text

    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


# --- fake deployment handles: the graph's calls without Ray --------------------------------------------
class FakeResponse:
    """What ``handle.remote()`` returns: awaitable, and resolved when passed on to another call (as a Serve
    ``DeploymentResponse`` is)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._task = asyncio.ensure_future(call())

    def __await__(self) -> Any:
        return self._task.__await__()


class FakeHandle:
    """A deployment handle over a plain object: ``remote(*args)`` calls ``target(*args)`` (its awaitable
    arguments awaited first), ``options(multiplexed_model_id=...)`` records the model id it routes by, and
    ``method.remote(...)`` calls that method. ``calls`` keeps every call, for the tests to count hops."""

    def __init__(self, target: Any, model_id: str | None = None, calls: list[tuple[str, Any]] | None = None) -> None:
        self.target = target
        self.model_id = model_id
        self.calls = calls if calls is not None else []

    def options(self, *, multiplexed_model_id: str) -> FakeHandle:
        return FakeHandle(self.target, multiplexed_model_id, self.calls)

    def _call(self, method: str, args: tuple[Any, ...]) -> FakeResponse:
        async def run() -> Any:
            resolved = [await a if isinstance(a, FakeResponse) else a for a in args]
            self.calls.append((method, self.model_id))
            fn = getattr(self.target, method) if method != "__call__" else self.target
            result = fn(*resolved, model_id=self.model_id) if _wants_model_id(fn) else fn(*resolved)
            return await result if inspect.isawaitable(result) else result

        return FakeResponse(run)

    def remote(self, *args: Any) -> FakeResponse:
        return self._call("__call__", args)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        handle = self

        class Method:
            def remote(self, *args: Any) -> FakeResponse:
                return handle._call(method, args)

        return Method()


def _wants_model_id(fn: Any) -> bool:
    try:
        return "model_id" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


# --- a small service for the routes' unit tests: real cards, real decoding, fake scoring replicas ---------
IMAGE_LINE, CLASSIFIER_LINE, SENSOR_LINE, OTHER_BACKBONE_LINE = "press-a", "sorter-a", "spindle-a", "press-z"


class FakePreprocessor:
    """The real decoding (``lineguard.deployments.preprocessor``), without a replica."""

    def __call__(self, payloads: list[bytes], image_size: int, max_pixels: int) -> Any:
        from lineguard.deployments.preprocessor import batch_of, decode

        return batch_of([decode(d, image_size, max_pixels) for d in payloads], image_size)


class FakeBackbone:
    """One 'feature' per image: its mean intensity (what the fake scorer scores)."""

    def __call__(self, batch: Any, keep_images: bool = False) -> Any:
        from lineguard.deployments.messages import FeatureBatch

        intensity = batch.images.reshape(len(batch.images), -1).mean(1) / 255.0 if len(batch.images) else np.zeros(0)
        images = batch.images if keep_images else None
        return FeatureBatch([intensity.astype(np.float32)], batch.rows, batch.errors, 1.0, intensity, images)


class FakeScorer:
    """An anomaly line scores its images' intensity against 0.5; a classifier line calls bright parts defective."""

    def __init__(self, fail_for: set[str] | None = None) -> None:
        self.fail_for = fail_for or set()

    def __call__(self, features: Any, items: list[int], want_maps: bool, model_id: str | None = None) -> list[Any]:
        from lineguard.deployments.messages import ClassResult, ScoreResult
        from lineguard.models.decisions import AnomalyDecision, ClassDecision

        if model_id in self.fail_for:
            raise ConnectionError(f"replica of {model_id} went away")
        out: list[Any] = []
        for i in items:
            if features.errors[i] is not None:
                out.append(features.errors[i])
                continue
            value = float(features.layers[0][features.rows[i]])
            if model_id is not None and model_id.startswith(CLASSIFIER_LINE):
                p = np.array([value, 1 - value])  # classes: bad, good
                index = 0 if value > 0.5 else 1
                severity = "high" if index == 0 and value >= 0.9 else "low" if index == 0 else "none"
                out.append(
                    ClassResult(
                        ClassDecision(index, float(p[index]), p, value, severity),
                        {"score_ms": 0.1, "backbone_ms": features.backbone_ms},
                    )
                )
            else:
                heat = np.full((4, 4), value, dtype=np.float32) if want_maps else None
                decision = AnomalyDecision(value, 0.5, value / 0.5, value > 0.5, heat)
                image = features.images[features.rows[i]] if want_maps and features.images is not None else None
                timings = {"score_ms": 0.1, "backbone_ms": features.backbone_ms}
                out.append(ScoreResult(decision, (0.0, 1.0), timings, value, image))
        return out


class FakeSensorScorer:
    """The real NumPy sensor model of the line (read from the store), without a replica's batching."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __call__(self, values: np.ndarray, model_id: str | None = None) -> Any:
        from lineguard.deployments.messages import VectorScores
        from lineguard.registry.names import parse_model_id
        from lineguard.registry.sensor_models import sensor_model

        assert model_id is not None
        line, version = parse_model_id(model_id)
        model = sensor_model(self.store, self.store.read_card(line, version))
        return VectorScores(model.predict(values), model.threshold.value, 0.1)


class Pinger:
    def __init__(self, up: bool = True) -> None:
        self.up = up

    def ping(self) -> str:
        if not self.up:
            raise ConnectionError("replica is gone")
        return "ok"


def write_service_lines(store: Any) -> None:
    """The cards the routes' unit tests serve: an anomaly line, a classifier line and a sensor line on the
    default backbone at 64 px, and an anomaly line on a backbone the service does not run."""
    import torch

    from lineguard.models.autoencoder import SensorAutoEncoder
    from lineguard.models.threshold import Threshold
    from lineguard.registry.card import ModelCard
    from lineguard.registry.sections import BackboneInfo, ClassifierInfo, HeadInfo, SensorInputs
    from lineguard.registry.tensors import to_bytes
    from lineguard.training.synthetic_sensor import FEATURES

    def backbone(name: str = "tf_efficientnet_lite0") -> BackboneInfo:
        return BackboneInfo(
            name=name, layers=["blocks.2", "blocks.4"], image_size=64, weights="none",
            mean=[0.5] * 3, std=[0.5] * 3, channels=[40, 112], reductions=[8, 16],
        )  # fmt: skip

    head = HeadInfo(kind="patchcore", params={})
    store.write_version(
        ModelCard(
            line=IMAGE_LINE, kind="image-anomaly", backbone=backbone(), head=head, threshold=Threshold(0.5, "m", 0.25)
        ),
        to_bytes({}),
    )
    store.write_version(
        ModelCard(
            line=OTHER_BACKBONE_LINE, kind="image-anomaly", backbone=backbone("resnet18"), head=head,
            threshold=Threshold(0.5, "m", 0.25),
        ),
        to_bytes({}),
    )  # fmt: skip
    info = ClassifierInfo(
        classes=["bad", "good"], normal_class="good", temperature=1.0, severity={"high": 0.9, "low": 0.6}
    )
    store.write_version(
        ModelCard(
            line=CLASSIFIER_LINE, kind="image-classifier", backbone=backbone(),
            head=HeadInfo(kind="classifier", params={}), classifier=info,
            threshold=Threshold(0.5, "defect_confidence", 0.0),
        ),
        to_bytes({}),
    )  # fmt: skip
    model = SensorAutoEncoder(len(FEATURES))
    torch.manual_seed(0)
    model.scaler.mean, model.scaler.std = torch.zeros(len(FEATURES)), torch.ones(len(FEATURES))
    inputs = SensorInputs(features=FEATURES, mean=[0.0] * len(FEATURES), std=[1.0] * len(FEATURES))
    card = ModelCard(
        line=SENSOR_LINE, kind="sensor-anomaly", inputs=inputs,
        head=HeadInfo(kind="autoencoder", params=model.params(), scorer={"top_features": 3}),
        threshold=Threshold(1.0, "m", 0.1),
    )  # fmt: skip
    store.write_version(card, to_bytes(model.fitted_state()))


def grey_png(value: int, size: int = 32) -> bytes:
    """A uniform grey PNG (the fake scorer scores its intensity)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (size, size), value).save(buffer, format="PNG")
    return buffer.getvalue()


BRIGHT, DARK = grey_png(230), grey_png(30)  # the fake scorer: bright parts are anomalous


def fake_services(tmp_path: Path, **args: Any) -> tuple[Any, FakeHandle]:
    """One ingress replica's services over the fake scoring replicas: the real routers' ``Services`` with a
    real Recorder (SQLite under ``tmp_path``) and store of :func:`write_service_lines`. Returns it and the
    Scorer's handle."""
    from lineguard.deployments.config import AppArgs
    from lineguard.deployments.recorder import Recorder
    from lineguard.deployments.services import Services
    from lineguard.registry.store import ModelStore

    store = ModelStore(tmp_path / "store")
    write_service_lines(store)
    app_args = AppArgs(
        store=str(store.root),
        backbones=[{"name": "tf_efficientnet_lite0", "layers": ["blocks.2", "blocks.4"], "image_size": 64}],
        history={"url": f"sqlite:///{tmp_path / 'history.db'}", "flush_interval_s": 60.0},  # reads do not wait for it
        security={"keys_refresh_s": 0.01},
        **args,
    )
    recorder_class: Any = Recorder.func_or_class  # type: ignore[attr-defined]  # the class under @serve.deployment
    scorer = FakeHandle(FakeScorer())
    recorder = FakeHandle(recorder_class(app_args.history.model_dump(), str(store.root)))
    services = Services.build(
        app_args, FakeHandle(FakePreprocessor()), [FakeHandle(FakeBackbone())], scorer,
        FakeHandle(FakeSensorScorer(store)), recorder,
    )  # fmt: skip
    services.probes = {name: FakeHandle(Pinger()) for name in services.probes}
    return services, scorer
