"""Fitting, evaluating and using a line end to end, in this process, on real images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lineguard.cli.main import main
from lineguard.registry.loaders import load_image_model
from lineguard.registry.revisions import set_threshold
from lineguard.registry.store import ModelStore
from lineguard.training.fit_image import FitOptions, fit_image_line

FAST = {"image_size": 128, "head_params": {"bank_size": 1024}, "progress": False}


def test_fit_stores_a_complete_card_and_finds_defects(synthetic_line: Path, store: ModelStore) -> None:
    report = fit_image_line("surface", synthetic_line, FitOptions(**FAST), store)
    card = store.read_card("surface")
    assert card.version == report.card.version == "v1"
    assert card.backbone is not None and card.backbone.name == "tf_efficientnet_lite0"
    assert card.backbone.channels == [40, 112] and card.backbone.image_size == 128
    assert card.head is not None and card.head.kind == "patchcore" and card.head.params["bank_size"] == 1024
    assert card.data is not None and card.data.calibration == "crossfit" and card.data.n_calibration == 24
    assert len(card.data.fingerprint) == 64
    assert card.threshold["method"].startswith("normal_") and card.threshold["details"]["n_defect"] == 0
    assert card.metrics is not None
    assert card.metrics["image_auroc"] >= 0.95 and card.metrics["pixel_auroc"] >= 0.9
    assert set(card.metrics["per_defect_type"]) == {"scratch", "spot", "dent"}
    assert card.metrics["over_detection_rate"] <= 0.25


def test_predictions_agree_with_the_evaluation(synthetic_line: Path, store: ModelStore) -> None:
    fit_image_line("surface", synthetic_line, FitOptions(**FAST), store)
    card, model = load_image_model(store, "surface")
    assert card.metrics is not None
    stored = card.metrics["test_scores"]
    paths = sorted((synthetic_line / "test").glob("*/*.png"))
    scores = [p.anomaly_score for p in model.predict_bytes([p.read_bytes() for p in paths])]
    by_type = dict(zip(stored["types"], stored["scores"], strict=False))
    assert by_type  # same pipeline, same numbers (up to float noise)
    assert np.allclose(sorted(scores), sorted(stored["scores"]), rtol=1e-4, atol=1e-4)


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
        assert report.card.metrics is not None and report.card.metrics["image_auroc"] >= 0.8


def test_unreadable_training_image_is_skipped_and_counted(
    synthetic_line: Path, tmp_path: Path, store: ModelStore
) -> None:
    root = tmp_path / "line"
    shutil.copytree(synthetic_line, root)
    (root / "train" / "good" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    report = fit_image_line("surface", root, FitOptions(**FAST, evaluate=False), store)
    assert len(report.skipped) == 1 and "zz_broken.png" in report.skipped[0]
    assert report.card.data is not None and report.card.data.n_train == 25 and report.card.data.n_fit == 24
    assert report.card.data.skipped == report.skipped


def test_threshold_from_labelled_test_data(synthetic_line: Path, store: ModelStore) -> None:
    report = fit_image_line(
        "surface",
        synthetic_line,
        FitOptions(**FAST, threshold_objective="miss_rate", threshold_target=0.0),
        store,
    )
    assert report.card.threshold["method"] == "labelled_miss_rate"
    assert report.card.metrics is not None and report.card.metrics["miss_rate"] == 0.0
    assert "optimistic" in report.card.metrics["note"]


def test_threshold_change_is_a_new_audited_version(synthetic_line: Path, store: ModelStore) -> None:
    fit_image_line("surface", synthetic_line, FitOptions(**FAST), store)
    changed = set_threshold(store, "surface", 0.0, note="flag everything for a trial")
    assert changed.version == "v2" and changed.parent == "v1"
    assert changed.threshold["value"] == 0.0 and changed.threshold["details"]["previous"] > 0
    assert changed.metrics is not None and changed.metrics["over_detection_rate"] == 1.0
    with pytest.raises(ValueError, match="finite number"):
        set_threshold(store, "surface", float("nan"))


def test_bad_options_and_names_are_refused(synthetic_line: Path, store: ModelStore) -> None:
    with pytest.raises(ValueError, match="invalid line name"):
        fit_image_line("../../etc", synthetic_line, FitOptions(**FAST), store)
    with pytest.raises(ValueError, match="unknown layer"):
        fit_image_line("surface", synthetic_line, FitOptions(**{**FAST, "layers": ("nope",)}), store)
    with pytest.raises(ValueError, match="unknown head"):
        fit_image_line("surface", synthetic_line, FitOptions(**{**FAST, "head": "svm"}), store)
    assert store.lines() == []


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
    assert json.loads((out / "metrics.json").read_text())["image_auroc"] > 0.9
    assert (out / "histogram.png").stat().st_size > 5000 and len(list((out / "overlays").glob("*.png"))) == 4
    assert main(["--store", store, "lines"]) == 0 and "surface" in capsys.readouterr().out
    assert main(["--store", store, "threshold", "surface", "2.5"]) == 0
    assert main(["--store", store, "versions", "surface"]) == 0
    assert "*v2" in capsys.readouterr().out
    assert main(["--store", store, "promote", "surface", "v1"]) == 0
    assert ModelStore(store).current_version("surface") == "v1"
    assert main(["--store", store, "predict", "--line", "unknown", str(image)]) == 2
    assert "unknown line 'unknown'" in capsys.readouterr().err
