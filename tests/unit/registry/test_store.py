"""The model store: immutable versions, atomic promotion, checksums, safe names, nothing unpickled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lineguard.errors import ConfigError, CorruptModelError, NotFoundError
from lineguard.models.threshold import Threshold
from lineguard.registry.card import ModelCard
from lineguard.registry.kinds import LineKind
from lineguard.registry.store import ModelStore
from lineguard.registry.tensors import read_tensors, to_bytes


def card(line: str = "press-1", threshold: float = 1.5) -> ModelCard:
    return ModelCard(line=line, kind=LineKind.IMAGE_ANOMALY, threshold=Threshold(threshold, "m", 1.0))


def test_versions_are_numbered_immutable_and_promoted(store: ModelStore) -> None:
    first = store.write_version(card(), to_bytes({"w": torch.ones(3)}))
    second = store.write_version(card(threshold=2.0), to_bytes({"w": torch.zeros(3)}), promote=False)
    assert (first.version, second.version) == ("v1", "v2")
    assert store.versions("press-1") == ["v1", "v2"]
    assert store.current_version("press-1") == "v1"
    store.promote("press-1", "v2")
    assert store.read_card("press-1").threshold.value == 2.0
    assert torch.equal(read_tensors(store, store.read_card("press-1", "v1"))["w"], torch.ones(3))
    assert store.lines() == ["press-1"]
    assert store.read_card("press-1", "v2") == second  # what write_version returns is what is stored


def test_derived_version_keeps_tensors_and_records_its_parent(store: ModelStore) -> None:
    store.write_version(card(), to_bytes({"w": torch.arange(4.0)}))
    derived = store.derive_version("press-1", {"threshold": Threshold(9.0, "manual", 1.0)}, "raise it")
    reopened = ModelStore(store.uri)  # survives a restart
    current = reopened.read_card("press-1")
    assert current.version == derived.version == "v2" and current.parent == "v1" and current.note == "raise it"
    assert current.threshold == Threshold(9.0, "manual", 1.0)
    assert torch.equal(read_tensors(reopened, current)["w"], torch.arange(4.0))


def test_corrupted_files_are_refused(store: ModelStore, tmp_path: Path) -> None:
    stored = store.write_version(card(), to_bytes({"w": torch.ones(1000)}))
    path = Path(store.root) / "press-1" / "v1" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptModelError, match="fails its checksum"):
        read_tensors(store, stored)
    card_file = Path(store.root) / "press-1" / "v1" / "card.json"
    card_file.write_text(card_file.read_text().replace('"kind": "image-anomaly"', '"kind": "teapot"'))
    with pytest.raises(CorruptModelError, match="card of line 'press-1' v1 is not valid"):
        store.read_card("press-1", "v1")


def test_names_cannot_leave_the_root(store: ModelStore, tmp_path: Path) -> None:
    for bad in ("../../etc", "a/b", "..", "", ".hidden", "x" * 65, "line name"):
        with pytest.raises(ConfigError, match="invalid line name"):
            store.write_version(_unchecked(bad), b"")
        with pytest.raises(ConfigError, match="invalid line name"):
            store.read_card(bad)
    with pytest.raises(ConfigError, match="invalid version"):
        store.read_card("press-1", "../v1")
    assert not any(p.name == "etc" for p in tmp_path.rglob("*"))


def _unchecked(line: str) -> ModelCard:
    return ModelCard.model_construct(
        line=line, kind=LineKind.IMAGE_ANOMALY, threshold=Threshold(1, "m", 0), version="v0"
    )


def test_unknown_line_and_version(store: ModelStore) -> None:
    with pytest.raises(NotFoundError, match="lineguard lines"):
        store.read_card("nope")
    store.write_version(card(), to_bytes({}))
    with pytest.raises(NotFoundError, match="no version 'v7'"):
        store.read_card("press-1", "v7")
    assert ModelStore(Path(store.root) / "empty").lines() == []


def test_file_uri(tmp_path: Path) -> None:
    uri_store = ModelStore(f"file://{tmp_path}/uri-store")
    uri_store.write_version(card(), to_bytes({"w": torch.ones(2)}))
    assert ModelStore(tmp_path / "uri-store").read_card("press-1").version == "v1"


def test_exported_bundles_are_kept_beside_their_version(store: ModelStore) -> None:
    store.write_version(card(), to_bytes({"w": torch.ones(3)}))
    files = {
        "manifest.json": b'{"files": {"spec.json": "x", "model.onnx": "y"}}',
        "spec.json": b"{}",
        "model.onnx": b"g",
    }
    assert store.bundle_formats("press-1", "v1") == []
    store.write_bundle("press-1", "v1", "onnx", files)
    assert store.bundle_formats("press-1", "v1") == ["onnx"]
    assert store.read_bundle("press-1", "v1", "onnx") == files
    store.write_bundle("press-1", "v1", "onnx", {**files, "model.onnx": b"g2"})  # a new export replaces it
    assert store.read_bundle("press-1", "v1", "onnx")["model.onnx"] == b"g2"
    with pytest.raises(NotFoundError, match=r"press-1 v1 has no openvino bundle \(it has onnx\): lineguard export"):
        store.read_bundle("press-1", "v1", "openvino")
    derived = store.derive_version("press-1", {"threshold": Threshold(9.0, "manual", 1.0)}, "raise it")
    assert store.bundle_formats("press-1", derived.version) == []  # its spec would hold the old threshold
    assert store.versions("press-1") == ["v1", "v2"]  # the bundles' folder is not a version
    with pytest.raises(ConfigError, match="unknown bundle format 'tflite'"):
        store.write_bundle("press-1", "v1", "tflite", files)
    with pytest.raises(ConfigError, match=r"flat files with a manifest\.json"):
        store.write_bundle("press-1", "v1", "onnx", {**files, "../x": b""})
    with pytest.raises(NotFoundError):
        store.write_bundle("press-1", "v9", "onnx", files)
