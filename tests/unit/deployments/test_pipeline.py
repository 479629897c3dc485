"""The trips down the graph, with fake handles: one call per hop per micro-batch, a Scorer call per line,
results back in order, and a failure kept to the items it concerns."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lineguard.deployments.app import as_deployment
from lineguard.deployments.config import SENSOR_CHUNK_ROWS, BackboneArgs
from lineguard.deployments.lines import LineEntry
from lineguard.deployments.messages import ItemError, ScoreResult
from lineguard.deployments.pipeline import (
    ImageItem,
    ImagePipeline,
    SensorPipeline,
    StreamItem,
    by_bytes,
    graph_error,
    hop_bytes,
    hop_limit_bytes,
)
from lineguard.deployments.streams import StreamShard
from lineguard.errors import DataError, FeatureMismatchError, ImageTooLargeError, UnavailableError
from lineguard.registry.store import ModelStore
from tests.support import (
    CLASSIFIER_LINE,
    IMAGE_LINE,
    OTHER_BACKBONE_LINE,
    SENSOR_LINE,
    FakeBackbone,
    FakeHandle,
    FakePreprocessor,
    FakeScorer,
    FakeSensorScorer,
    write_service_lines,
)


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (16, 16), value).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def lines(tmp_path: Path) -> tuple[ModelStore, dict[str, LineEntry]]:
    store = ModelStore(tmp_path / "store")
    write_service_lines(store)
    return store, {line: LineEntry(store.read_card(line)) for line in store.lines()}


def image_pipeline(
    scorer: FakeScorer | None = None, hop_bytes: int | None = None
) -> tuple[ImagePipeline, list[tuple[str, object]]]:
    calls: list[tuple[str, object]] = []
    args = BackboneArgs(image_size=64)
    pipeline = ImagePipeline(
        FakeHandle(FakePreprocessor(), calls=calls),
        [(args, FakeHandle(FakeBackbone(), calls=calls))],
        FakeHandle(scorer or FakeScorer(), calls=calls),
        max_pixels=10_000_000,
        timeout_s=5,
        hop_bytes=hop_bytes,
    )
    return pipeline, calls


def test_a_batch_of_two_lines_is_one_preprocessor_one_backbone_and_two_scorer_calls(
    lines: tuple[ModelStore, dict[str, LineEntry]],
) -> None:
    _, entries = lines
    pipeline, calls = image_pipeline()
    items = [
        ImageItem(entries[IMAGE_LINE], png(220), False),
        ImageItem(entries[CLASSIFIER_LINE], png(20), False),
        ImageItem(entries[IMAGE_LINE], b"garbage", False),
        ImageItem(entries[IMAGE_LINE], png(40), True),
    ]
    results = asyncio.run(pipeline.run(items))
    scorer_calls = sorted(str(model) for kind, model in calls if model)
    assert len(calls) == 4 and scorer_calls == sorted([f"{CLASSIFIER_LINE}@v1", f"{IMAGE_LINE}@v1"])
    assert isinstance(results[0], ScoreResult) and results[0].decision.is_anomaly
    assert isinstance(results[3], ScoreResult) and not results[3].decision.is_anomaly
    assert results[3].decision.anomaly_map is not None  # the item that asked for a map got one
    assert isinstance(results[2], ItemError) and results[2].status == 422  # its neighbours are answered
    assert type(results[1]).__name__ == "ClassResult"


def test_a_failed_scorer_call_fails_that_lines_items_only(lines: tuple[ModelStore, dict[str, LineEntry]]) -> None:
    _, entries = lines
    pipeline, _ = image_pipeline(FakeScorer(fail_for={f"{CLASSIFIER_LINE}@v1"}))
    items = [ImageItem(entries[CLASSIFIER_LINE], png(200), False), ImageItem(entries[IMAGE_LINE], png(200), False)]
    first, second = asyncio.run(pipeline.run(items))
    assert isinstance(first, ItemError) and first.status == 503 and first.retry_after_s == 1
    assert isinstance(second, ScoreResult)


def test_what_a_line_cannot_answer_is_refused_before_the_graph(lines: tuple[ModelStore, dict[str, LineEntry]]) -> None:
    _, entries = lines
    pipeline, calls = image_pipeline()
    with pytest.raises(DataError, match="does not take images"):
        asyncio.run(pipeline.score(entries[SENSOR_LINE], [png(1)], False))
    with pytest.raises(FeatureMismatchError, match="does not run"):
        asyncio.run(pipeline.score(entries[OTHER_BACKBONE_LINE], [png(1)], False))
    assert calls == []


def test_a_slow_graph_is_a_timeout_not_a_hang(lines: tuple[ModelStore, dict[str, LineEntry]]) -> None:
    _, entries = lines
    pipeline, _ = image_pipeline()
    pipeline.timeout_s = 0.05

    async def slow(item: ImageItem) -> ItemError:
        await asyncio.sleep(1)
        return ItemError(500, "never")

    pipeline.batched = slow
    with pytest.raises(UnavailableError, match=r"longer than 0\.05 s"):
        asyncio.run(pipeline.score(entries[IMAGE_LINE], [png(1)], False))


def test_sensor_requests_of_several_lines_and_sizes(lines: tuple[ModelStore, dict[str, LineEntry]]) -> None:
    store, entries = lines
    handle = FakeHandle(FakeSensorScorer(store))
    pipeline = SensorPipeline(handle, timeout_s=5)
    entry = entries[SENSOR_LINE]
    rng = np.random.default_rng(0)
    small = [rng.normal(size=(k, 12)).astype(np.float32) for k in (1, 3, 2)]
    gathered = asyncio.run(pipeline.run([(entry.model_id, v) for v in small]))  # one micro-batch
    assert len(handle.calls) == 1  # one SensorScorer call for the line's three requests
    for values, result in zip(small, gathered, strict=True):
        assert not isinstance(result, ItemError) and len(result.out.scores) == len(values)
    alone = asyncio.run(pipeline.score(entry, small[1]))
    np.testing.assert_allclose(alone.out.scores, gathered[1].out.scores)  # type: ignore[union-attr]
    large = rng.normal(size=(SENSOR_CHUNK_ROWS * 2 + 5, 12)).astype(np.float32)
    before = len(handle.calls)
    answer = asyncio.run(pipeline.score(entry, large))
    assert len(handle.calls) - before == 3 and len(answer.out.scores) == len(large)  # in chunks, in order
    np.testing.assert_allclose(answer.out.scores[-5:], asyncio.run(pipeline.score(entry, large[-5:])).out.scores)


def test_a_micro_batch_over_the_hop_limit_goes_in_several_calls(lines: tuple[ModelStore, dict[str, LineEntry]]) -> None:
    # Ray's 4 MiB gRPC default refused a single 4.7 MB frame; a batch is now cut to what one call carries
    _, entries = lines
    parts = [png(10 * i) for i in range(1, 6)]
    limit = 2 * max(len(p) for p in parts) + 1
    pipeline, calls = image_pipeline(hop_bytes=limit)
    results = asyncio.run(pipeline.run([ImageItem(entries[IMAGE_LINE], p, False) for p in parts]))
    unmultiplexed = [c for c in calls if c[1] is None]  # the Preprocessor's and the Backbone's
    assert len(unmultiplexed) == 2 * 3  # three trips of at most two parts
    assert [r.decision.anomaly_score for r in results if isinstance(r, ScoreResult)] == pytest.approx(
        [10 * i / 255 for i in range(1, 6)], abs=0.01
    )  # each part's own answer, in order


def test_an_image_over_what_one_call_carries_is_a_413_that_names_the_setting(
    lines: tuple[ModelStore, dict[str, LineEntry]],
) -> None:
    _, entries = lines
    pipeline, _ = image_pipeline(hop_bytes=100)
    with pytest.raises(ImageTooLargeError, match="RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"):
        asyncio.run(pipeline.score(entries[IMAGE_LINE], [png(10), b"x" * 101], False))


def test_the_hop_limit_follows_rays_settings() -> None:
    assert hop_limit_bytes({}) is None  # the object store: no limit
    assert hop_limit_bytes({"RAY_SERVE_USE_GRPC_BY_DEFAULT": "1"}) == 4 * 1024 * 1024  # Ray's default
    grpc = {"RAY_SERVE_USE_GRPC_BY_DEFAULT": "1", "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(80 << 20)}
    assert hop_bytes(grpc) == 79 << 20
    assert by_bytes([5, 5, 5, 20, 1], 10) == [[0, 1], [2], [3], [4]]


def test_only_what_can_pass_is_a_503() -> None:
    from ray.exceptions import ActorDiedError, RayTaskError
    from ray.serve.exceptions import BackPressureError

    def in_replica(err: Exception) -> RayTaskError:
        return RayTaskError("Scorer.__call__", "Traceback ...", err)

    bug = graph_error(in_replica(TypeError("unsupported operand")))
    assert (bug.status, bug.retry_after_s) == (500, None) and "TypeError" in bug.detail
    refused = graph_error(in_replica(DataError("reading 3 is not finite")))
    assert (refused.status, refused.retry_after_s) == (422, None)
    for passing in (BackPressureError(num_queued_requests=9, max_queued_requests=8), ActorDiedError(), OSError()):
        answer = graph_error(passing)
        assert (answer.status, answer.retry_after_s) == (503, 1), passing


def test_a_micro_batch_refused_by_ray_is_a_503_of_ours(lines: tuple[ModelStore, dict[str, LineEntry]]) -> None:
    # Ray's BackPressureError escaped the route, and Ray answered it in plain text
    from ray.serve.exceptions import BackPressureError

    _, entries = lines
    pipeline, _ = image_pipeline()

    async def refused(item: ImageItem) -> ScoreResult:
        raise BackPressureError(num_queued_requests=2, max_queued_requests=2)

    pipeline.batched = refused
    with pytest.raises(UnavailableError, match="at capacity") as caught:
        asyncio.run(pipeline.score(entries[IMAGE_LINE], [png(10)], False))
    assert caught.value.retry_after_s == 1


def test_stream_requests_of_one_micro_batch_are_one_call_per_shard(
    lines: tuple[ModelStore, dict[str, LineEntry]],
) -> None:
    store, entries = lines
    calls: list[tuple[str, object]] = []
    shard_class: Any = as_deployment(StreamShard).func_or_class  # the deployment's class, without Serve
    shards: list[Any] = [FakeHandle(shard_class(str(store.root), {}), calls=calls) for _ in range(2)]
    pipeline = SensorPipeline(FakeHandle(FakeSensorScorer(store)), timeout_s=5, shards=shards)
    entry = entries[SENSOR_LINE]
    rng = np.random.default_rng(1)
    items = [StreamItem(entry.line, entry.model_id, f"m{i}", rng.normal(size=(1, 12)), None) for i in range(12)]
    answers = asyncio.run(pipeline.run_streams(items))
    assert len(calls) == 2 and {c[0] for c in calls} == {"score_many"}  # one call per shard
    model = FakeSensorScorer(store)
    for item, answer in zip(items, answers, strict=True):
        assert not isinstance(answer, ItemError) and answer.seen == 1 and answer.alarm.shape == (1,)
        want = model(item.values, model_id=entry.model_id).out.scores
        np.testing.assert_allclose(answer.out.scores, want)
    refused = asyncio.run(pipeline.run_streams([StreamItem(entry.line, entry.model_id, "m0", items[0].values, None)]))
    assert not isinstance(refused[0], ItemError) and refused[0].seen == 2  # m0 remembered its first reading
    wrong = StreamItem(entry.line, entry.model_id, "m0", rng.normal(size=(1, 5)), None)
    error = asyncio.run(pipeline.run_streams([wrong]))[0]
    assert isinstance(error, ItemError) and error.status == 422 and "stream 'm0'" in error.detail
