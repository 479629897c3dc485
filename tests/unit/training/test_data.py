"""Reading the MVTec layout and plain folders; clear errors for everything else."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from lineguard.errors import DataError
from lineguard.models.preprocess import PreprocessConfig
from lineguard.training.data import discover, read_mask
from lineguard.training.engine import read_image


def test_mvtec_layout_with_masks_paired_by_stem(synthetic_line: Path, tmp_path: Path) -> None:
    root = tmp_path / "line"
    shutil.copytree(synthetic_line, root)
    # an extra mask-folder file must not shift the pairing (pairing by sorted position would)
    Image.new("L", (8, 8)).save(root / "ground_truth" / "scratch" / "000_extra_mask.png")
    dataset = discover(root)
    assert dataset.layout == "mvtec" and len(dataset.train) == 24
    assert {s.defect_type for s in dataset.test} == {"good", "scratch", "spot", "dent"}
    for sample in dataset.test:
        if sample.label == 1:
            assert sample.mask is not None and sample.mask.name == f"{sample.path.stem}_mask.png"
        else:
            assert sample.mask is None
    assert read_mask(dataset.test[-1].mask, 64).any()


def test_jpeg_and_plain_folder(tmp_path: Path) -> None:
    for i in range(3):
        Image.new("L", (30, 30), 100 + i).save(tmp_path / f"part{i}.JPG")
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = discover(tmp_path)
    assert dataset.layout == "folder" and [s.path.name for s in dataset.train] == [
        "part0.JPG",
        "part1.JPG",
        "part2.JPG",
    ]
    assert not dataset.test


def test_layout_errors_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist; expected the MVTec layout"):
        discover(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        discover(tmp_path / "empty")
    (tmp_path / "bad" / "train" / "ok").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has no good/ folder \(found \['ok'\]\)"):
        discover(tmp_path / "bad")
    (tmp_path / "nogood" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no images in .*train/good"):
        discover(tmp_path / "nogood")
    (tmp_path / "parent" / "bottle" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"sub-folders \['bottle'\]"):
        discover(tmp_path / "parent")


def test_unreadable_file_is_named_in_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with caplog.at_level(logging.WARNING):
        tensor, reason = read_image(broken, PreprocessConfig(image_size=32))
    assert tensor is None and "broken.png" in reason
    assert "broken.png" in caplog.text
