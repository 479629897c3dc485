"""Fitting, evaluating and using a line end to end, in this process, on real images."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lineguard.cli.main import main
from lineguard.errors import ConfigError, DataError
from lineguard.registry.card import ModelCard
from lineguard.registry.image_models import load_image_model
from lineguard.registry.revisions import set_threshold
from lineguard.registry.store import ModelStore
from lineguard.training.data import discover
from lineguard.training.fit_image import fit_image_line
from lineguard.training.options import FitOptions

FAST = FitOptions(image_size=128, head_params={"bank_size": 1024}, progress=False)


def test_fit_stores_a_complete_card_and_finds_defects(synthetic_line: Path, store: ModelStore) -> None:
    report = fit_image_line("surface", synthetic_line, FAST, store)
    card = store.read_card("surface")
    assert card.version == report.card.version == "v1"
    assert card.backbone is not None and card.backbone.name == "tf_efficientnet_lite0"
    assert card.backbone.channels == [40, 112] and card.backbone.image_size == 128
    assert card.head is not None and card.head.kind == "patchcore" and card.head.params["bank_size"] == 1024
    assert card.data is not None and card.data.calibration == "crossfit" and card.data.n_calibration == 24
    assert len(card.data.fingerprint) == 64
    assert card.threshold.method.startswith("normal_") and card.threshold.details["n_defect"] == 0
    assert card.metrics is not None and card.metrics == report.evaluation
    assert (card.metrics.image_auroc or 0) >= 0.95 and (card.metrics.pixel_auroc or 0) >= 0.9
    assert set(card.metrics.per_defect_type) == {"scratch", "spot", "dent"}
    assert (card.metrics.over_detection_rate or 0) <= 0.25
    assert card.calibration.normal is not None and card.calibration.normal.n == 24 and card.calibration.input
    assert card == report.card  # what the fit returns is what the store holds
    assert {"store", "total"} <= set(report.timings) and "store" not in card.timings


def test_predictions_agree_with_the_evaluation(synthetic_line: Path, store: ModelStore) -> None:
    fit_image_line("surface", synthetic_line, FAST, store)
    card, model = load_image_model(store, "surface")
    assert card.metrics is not None and card.metrics.test_scores is not None
    stored = card.metrics.test_scores
    samples = discover(synthetic_line).test  # the evaluation's order: image i's score is stored score i
    assert stored.types == [s.defect_type for s in samples] and stored.labels == [s.label for s in samples]
    scores = [p.anomaly_score for p in model.predict_bytes([s.path.read_bytes() for s in samples])]
    # the same pipeline gives every image its own number again (up to float noise), image by image
    np.testing.assert_allclose(scores, stored.scores, rtol=1e-4, atol=1e-4)
    assert len(set(np.round(scores, 3))) > len(scores) // 2  # distinct scores: a swapped pair would show


def test_holdout_calibration_and_heads(synthetic_line: Path, store: ModelStore) -> None:
    for head in ("padim", "mean"):
        report = fit_image_line(
            f"surface-{head}",
            synthetic_line,
            FitOptions(head=head, calibration="holdout", image_size=128, progress=False),
            store,
        )
        assert report.card.data is not None and report.card.data.calibration == "holdout"
        assert report.card.data.n_calibration == round(0.15 * 24)
        assert report.card.metrics is not None and (report.card.metrics.image_auroc or 0) >= 0.8


def test_unreadable_training_image_is_skipped_and_counted(
    synthetic_line: Path, tmp_path: Path, store: ModelStore
) -> None:
    root = tmp_path / "line"
    shutil.copytree(synthetic_line, root)
    (root / "train" / "good" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    report = fit_image_line("surface", root, replace(FAST, evaluate=False), store)
    assert len(report.skipped) == 1 and "zz_broken.png" in report.skipped[0]
    assert report.card.data is not None and report.card.data.n_train == 25 and report.card.data.n_fit == 24
    assert report.card.data.skipped == report.skipped


def test_threshold_from_labelled_test_data(synthetic_line: Path, store: ModelStore) -> None:
    report = fit_image_line(
        "surface",
        synthetic_line,
        replace(FAST, threshold_objective="miss_rate", threshold_target=0.0),
        store,
    )
    assert report.card.threshold.method == "labelled_miss_rate"
    assert report.card.metrics is not None and report.card.metrics.miss_rate == 0.0
    assert "optimistic" in (report.card.metrics.note or "")


def test_threshold_from_test_needs_labelled_test_images(
    synthetic_line: Path, tmp_path: Path, store: ModelStore
) -> None:
    """Without test/ the option cannot do what it says: refused, not silently ignored."""
    good_only = tmp_path / "good"
    shutil.copytree(synthetic_line / "train" / "good", good_only)
    options = replace(FAST, threshold_objective="f1")
    with pytest.raises(ConfigError, match="--threshold-from-test needs labelled test images"):
        fit_image_line("surface", good_only, options, store)
    with pytest.raises(ConfigError, match="needs --target"):
        replace(FAST, threshold_objective="miss_rate").validate()
    assert store.lines() == []


def test_threshold_change_is_a_new_audited_version(synthetic_line: Path, store: ModelStore) -> None:
    fit_image_line("surface", synthetic_line, FAST, store)
    changed = set_threshold(store, "surface", 0.0, note="flag everything for a trial")
    assert changed.version == "v2" and changed.parent == "v1"
    assert changed.threshold.value == 0.0 and changed.threshold.details["previous"] > 0
    assert changed.metrics is not None and changed.metrics.over_detection_rate == 1.0
    assert all(row.miss_rate == 0.0 for row in changed.metrics.per_defect_type.values())
    with pytest.raises(ConfigError, match="finite number"):
        set_threshold(store, "surface", float("nan"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"layers": ("nope",)}, "unknown layer"),
        ({"head": "svm"}, "unknown head"),
        ({"head_params": {"bank_sise": 10}}, "bad parameters for head 'patchcore'"),
        ({"image_size": 16}, "image size must be between 32 and 2048"),
        ({"precision": "fp8"}, "precision 'fp8' is not one of"),
        ({"aggregation": "median"}, "aggregation 'median' is not one of"),
        ({"holdout_fraction": 1.5}, "holdout fraction must be between"),
        ({"weights": "/no/such/file.safetensors"}, "weights file /no/such/file.safetensors does not exist"),
        ({"threshold_target": 0.1}, "--target is the target rate of --threshold-from-test"),
    ],
)
def test_every_option_is_checked_before_any_image_is_read(
    synthetic_line: Path, store: ModelStore, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], message: str
) -> None:
    def no_reading(*_: object) -> None:
        raise AssertionError("an image was read before the options were checked")

    monkeypatch.setattr("lineguard.training.data.list_images", no_reading)
    monkeypatch.setattr("lineguard.training.engine.load_file", no_reading)
    with pytest.raises(ConfigError, match=message):
        fit_image_line("surface", synthetic_line, replace(FAST, **changes), store)
    with pytest.raises(ConfigError, match="invalid line name"):
        fit_image_line("../../etc", synthetic_line, FAST, store)
    assert store.lines() == []


def test_missing_data_is_a_data_error(tmp_path: Path, store: ModelStore) -> None:
    with pytest.raises(DataError, match="does not exist"):
        fit_image_line("surface", tmp_path / "nowhere", FAST, store)


def test_cli_fit_predict_evaluate_lines(
    synthetic_line: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    assert (
        main(
            [
                "--store",
                store,
                "fit",
                "image",
                "--line",
                "surface",
                "--data",
                str(synthetic_line),
                "--image-size",
                "128",
                "--head-param",
                "bank_size=1024",
                "--no-eval",
            ]
        )
        == 0
    )
    assert "stored v1 (in service)" in capsys.readouterr().out
    fit_json = ["--store", store, "fit", "image", "--line", "surface", "--data", str(synthetic_line), "--json"]
    assert main([*fit_json, "--image-size", "128", "--head-param", "bank_size=512", "--no-promote"]) == 0
    printed = ModelCard.model_validate_json(capsys.readouterr().out)
    assert printed == ModelStore(store).read_card("surface", "v2")  # --json prints the card as stored
    image = synthetic_line / "test" / "spot" / "000.png"
    heatmap = tmp_path / "heat.png"
    assert main(["--store", store, "predict", "--line", "surface", "--heatmap", str(heatmap), str(image)]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert result["model_version"] == "v1" and result["is_anomaly"] is True and heatmap.stat().st_size > 1000
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    assert main(["--store", store, "predict", "--line", "surface", str(bad)]) == 1
    assert "not an image" in capsys.readouterr().out
    out = tmp_path / "eval"
    assert (
        main(
            [
                "--store",
                store,
                "evaluate",
                "--line",
                "surface",
                "--data",
                str(synthetic_line),
                "--out",
                str(out),
                "--overlays",
                "4",
            ]
        )
        == 0
    )
    assert "image AUROC" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["image_auroc"] > 0.9  # v1: the version in service
    assert (out / "histogram.png").stat().st_size > 5000 and len(list((out / "overlays").glob("*.png"))) == 4
    assert main(["--store", store, "lines"]) == 0 and "surface" in capsys.readouterr().out
    assert main(["--store", store, "threshold", "surface", "2.5"]) == 0
    assert main(["--store", store, "versions", "surface"]) == 0
    assert "*v3" in capsys.readouterr().out
    assert main(["--store", store, "promote", "surface", "v1"]) == 0
    assert ModelStore(store).current_version("surface") == "v1"
    assert main(["--store", store, "predict", "--line", "unknown", str(image)]) == 5  # not found
    assert "unknown line 'unknown'" in capsys.readouterr().err
    assert main(["--store", store, "fit", "--line", "x", "--data", str(synthetic_line)]) == 2  # which kind?
    assert "say what to fit first" in capsys.readouterr().err
