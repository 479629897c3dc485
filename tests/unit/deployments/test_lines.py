"""The line directory: a corrupt new version is refused and the version that served keeps serving."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import torch

from lineguard.deployments.lines import LineDirectory
from lineguard.errors import CorruptModelError, NotFoundError
from lineguard.models.threshold import Threshold
from lineguard.registry.card import ModelCard
from lineguard.registry.store import TENSORS_FILE, ModelStore
from lineguard.registry.tensors import to_bytes


def card(threshold: float) -> ModelCard:
    return ModelCard(line="press-1", kind="image-anomaly", threshold=Threshold(threshold, "m", 1))


def corrupt(store: ModelStore, version: str) -> None:
    path = Path(store.root) / "press-1" / version / TENSORS_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last byte flipped: the checksum no longer matches
    path.write_bytes(bytes(data))


def test_corrupt_version_is_refused_and_the_previous_keeps_serving(
    store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    directory = LineDirectory(store, ttl_s=0)
    store.write_version(card(1.0), to_bytes({"w": torch.ones(3)}))

    async def current() -> str:
        return (await directory.get("press-1")).version

    assert asyncio.run(current()) == "v1"
    store.write_version(card(2.0), to_bytes({"w": torch.zeros(3)}))
    corrupt(store, "v2")
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        assert asyncio.run(current()) == "v1"
        assert asyncio.run(current()) == "v1"
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "v2" in refused[0] and "checksum" in refused[0] and "v1 keeps serving" in refused[0]
    assert directory.refused["press-1"][0] == "v2"

    fresh = LineDirectory(store, ttl_s=0)  # a replica started after the corruption: the newest good one
    assert asyncio.run(fresh.get("press-1")).version == "v1"

    store.write_version(card(3.0), to_bytes({"w": torch.full((3,), 3.0)}))  # a good version replaces it
    assert asyncio.run(current()) == "v3" and "press-1" not in directory.refused


def test_a_line_with_no_good_version_is_a_503(store: ModelStore) -> None:
    store.write_version(card(1.0), to_bytes({"w": torch.ones(3)}))
    corrupt(store, "v1")
    with pytest.raises(CorruptModelError, match="no version that loads"):  # a 503 from the error table
        asyncio.run(LineDirectory(store, ttl_s=0).get("press-1"))
    with pytest.raises(NotFoundError, match="GET /v1/lines lists"):
        asyncio.run(LineDirectory(store, ttl_s=0).get("press-9"))
