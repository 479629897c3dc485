"""Classifier lines: class folders, fitting in process, the card, live changes, the CLI (Ray Train and the
real data: tests/integration/test_classifier_fit.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lineguard.cli.main import main
from lineguard.models.preprocess import PreprocessConfig
from lineguard.models.spec import Runtime
from lineguard.models.tensors import load_file
from lineguard.registry.image_models import classifier, load_classifier
from lineguard.registry.revisions import set_severity, set_threshold
from lineguard.registry.store import ModelStore
from lineguard.training.classifier_data import discover_classes, stratified_split
from lineguard.training.fit_classifier import fit_classifier_line
from lineguard.training.options import ClassifierFitOptions, ClassifierTrainOptions
from lineguard.training.synthetic import write_class_folders

SIZE = 96


def quick(**changes: object) -> ClassifierFitOptions:
    """Small and fast: 96 px images, no tail, two views, trained in this process."""
    defaults: dict[str, object] = {
        "image_size": SIZE, "tail": "none", "views": 2, "progress": False, "hidden": 64,
        "train": ClassifierTrainOptions(workers=0),
    }  # fmt: skip
    return ClassifierFitOptions(**{**defaults, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """good (30) and three synthetic defect kinds (15 each), one folder per class."""
    return write_class_folders(
        tmp_path_factory.mktemp("classes") / "parts", seed=2, size=SIZE, n_good=30, n_per_defect=15
    )


def copy_of(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_discover_and_split(classes: Path, tmp_path: Path) -> None:
    dataset = discover_classes(classes)
    assert dataset.classes == ["dent", "good", "scratch", "spot"] and dataset.normal_class == "good"
    assert dataset.counts() == {"dent": 15, "good": 30, "scratch": 15, "spot": 15}
    merged = discover_classes(classes, {"defective": ["dent", "scratch", "spot"]})
    assert merged.classes == ["defective", "good"] and merged.counts() == {"defective": 45, "good": 30}
    train, val, test = stratified_split(merged.labels, 0.15, 0.2, seed=0)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert len(train) + len(val) + len(test) == 75
    assert np.bincount(merged.labels[test]).tolist() == [9, 6]  # stratified: 20% of each class
    labels = np.repeat([0, 1], [10, 3])
    for val_fraction, test_fraction in ((0.95, 0.0), (0.5, 0.3), (0.15, 0.2)):  # every split keeps every class
        parts = stratified_split(labels, val_fraction, test_fraction, seed=1)
        wanted = 3 if test_fraction else 2
        assert [len(set(labels[p])) for p in parts if len(p)] == [2] * wanted
    copy_of(classes, tmp_path / "split" / "train")  # the <root>/train/<class> layout
    assert discover_classes(tmp_path / "split").counts() == dataset.counts()


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        ("one_class", {}, "a classifier needs at least 2"),
        ("none", {"merge": {"bad": ["crack"]}}, "no class folder with images named 'crack'"),
        ("none", {"normal_class": "ok"}, "normal class 'ok' is not one of"),
        ("tiny_class", {}, "class 'dent' has 2 image(s): need at least 3"),
        ("missing", {}, "does not exist"),
    ],
)
def test_bad_data_is_named(classes: Path, tmp_path: Path, setup: str, kwargs: dict[str, object], message: str) -> None:
    root = copy_of(classes, tmp_path / "data")
    if setup == "one_class":
        for name in ("dent", "scratch", "spot"):
            shutil.rmtree(root / name)
    elif setup == "tiny_class":
        for path in sorted((root / "dent").iterdir())[2:]:
            path.unlink()
    elif setup == "missing":
        root = tmp_path / "nowhere"
    with pytest.raises(ValueError) as err:  # a DataError, or a ConfigError for the options (both ValueErrors)
        fit_classifier_line("parts", root, quick(**kwargs), ModelStore(tmp_path / "store"))
    assert message in str(err.value)


def test_unreadable_files_are_skipped_and_named(classes: Path, tmp_path: Path, store: ModelStore) -> None:
    root = copy_of(classes, tmp_path / "data")
    (root / "spot" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "empty").mkdir()  # an empty class folder: dropped with a warning
    report = fit_classifier_line("parts", root, quick(), store)
    assert any("broken.png" in s for s in report.skipped)
    assert report.card.data is not None
    assert any("broken.png" in s for s in report.card.data.skipped)
    assert any("'empty' dropped" in n for n in report.card.data.notes)
    for path in (root / "scratch").iterdir():  # a class with no readable image at all
        path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="class 'scratch' has no readable training image"):
        fit_classifier_line("parts", root, quick(), store)


def test_fit_evaluates_on_held_out_images_and_serves_the_same_answers(classes: Path, store: ModelStore) -> None:
    report = fit_classifier_line("parts", classes, quick(), store)
    card, metrics = report.card, report.evaluation
    assert card.kind == "image-classifier" and card.classifier is not None and metrics is not None
    assert metrics.classes is not None and card.data is not None and card.training is not None
    assert card.classifier.classes == ["dent", "good", "scratch", "spot"]
    assert card.threshold.method == "defect_confidence" and card.threshold.value == 0.5
    assert card.classifier.severity == {"high": 0.9, "low": 0.6} and card.classifier.temperature > 0
    assert card.data.per_split is not None
    assert card.data.per_split["test"] == {"dent": 3, "good": 6, "scratch": 3, "spot": 3}
    assert metrics.classes.n == 15 and metrics.classes.accuracy is not None and metrics.classes.accuracy >= 0.85
    assert (metrics.classes.roc_auc or 0) >= 0.95 and (metrics.image_auroc or 0) >= 0.95
    temperature = card.calibration.temperature
    assert card.training.epochs_run >= 1 and temperature is not None and temperature.n == 10
    assert card.calibration.normal is not None and card.calibration.defect_confidence is not None
    # the stored model, rebuilt as serving rebuilds it, answers like the fit's evaluation
    _, extractor, fitted = load_classifier(store, "parts", runtime=Runtime(device="cpu"))
    assert fitted.classes == card.classifier.classes
    again = classifier(store, card)
    np.testing.assert_array_equal(again.model.temperature.numpy(), fitted.model.temperature.numpy())
    classifier_ = fitted
    config = PreprocessConfig(SIZE, extractor.mean, extractor.std)
    images = [sorted((classes / name).iterdir())[0] for name in ("good", "scratch")]
    decisions = classifier_.predict(extractor.extract(torch.stack([load_file(p, config) for p in images])))
    assert [classifier_.classes[d.index] for d in decisions] == ["good", "scratch"]
    assert decisions[0].severity == "none" and decisions[1].severity in ("low", "high")
    assert abs(sum(decisions[1].probabilities) - 1) < 1e-6


def test_threshold_and_severity_change_as_new_versions(classes: Path, store: ModelStore) -> None:
    fit_classifier_line("parts", classes, quick(merge={"defective": ["dent", "scratch", "spot"]}), store)
    card = set_threshold(store, "parts", 0.8)
    assert card.version == "v2" and card.threshold.value == 0.8 and card.metrics is not None
    assert card.metrics.threshold == 0.8 and card.metrics.miss_rate is not None  # recomputed from the test scores
    assert card.metrics.classes is not None and card.metrics.classes.stale == "measured at threshold 0.5"
    with pytest.raises(ValueError, match="between 0 and 1"):
        set_threshold(store, "parts", 1.5)
    card = set_severity(store, "parts", {"critical": 0.97, "major": 0.8, "minor": 0.55})
    assert card.classifier is not None and card.classifier.severity == {"critical": 0.97, "major": 0.8, "minor": 0.55}
    assert classifier(store, card).severity.level(0.9) == "major"
    with pytest.raises(ValueError, match="strictest first"):
        set_severity(store, "parts", {"a": 0.5, "b": 0.5})


def test_finetuning_the_last_stage_changes_only_that_stage(classes: Path, store: ModelStore) -> None:
    from safetensors.torch import load as load_tensors

    from lineguard.models.classifier import BackboneTail

    report = fit_classifier_line(
        "parts",
        classes,
        quick(tail="finetune", hidden=0, views=1, train=ClassifierTrainOptions(workers=0, epochs=25)),
        store,
    )
    state = load_tensors(store.read_tensor_bytes(report.card))
    assert report.evaluation is not None and report.evaluation.classes is not None
    pretrained = BackboneTail("tf_efficientnet_lite0", "blocks.4", weights="auto").state_dict()
    assert all(torch.equal(state[f"tail.{k}"], v) for k, v in pretrained.items() if k.startswith("prefix."))
    changed = [k for k, v in pretrained.items() if k.startswith("last.") and not torch.equal(state[f"tail.{k}"], v)]
    assert changed, "fine-tuning left the last stage unchanged"
    assert (report.evaluation.classes.accuracy or 0) >= 0.8


def test_cli_fit_predict_evaluate_severity(classes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    fit = ["--store", store, "fit", "classifier", "--line", "parts", "--data", str(classes)]
    fit += ["--merge", "defective=dent,scratch,spot", "--tail", "none", "--views", "1", "--image-size", str(SIZE)]
    assert main([*fit, "--workers", "0", "--hidden", "32", "--feature-batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "classes ['defective', 'good'] (normal: good)" in out and "accuracy" in out and "miss rate" in out
    assert main([*fit, "--hidden", "32,16"]) == 2  # one width for a classifier's head: no silent 32
    assert "--hidden: expected a whole number, got '32,16'" in capsys.readouterr().err
    image = sorted((classes / "spot").iterdir())[0]
    assert main(["--store", store, "predict", "--line", "parts", str(image), str(tmp_path / "missing.png")]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["prediction"] == "defective" and set(lines[0]["probabilities"]) == {"defective", "good"}
    assert "error" in lines[1]
    out_dir = tmp_path / "eval"
    evaluate = ["--store", store, "evaluate", "--line", "parts", "--data", str(classes), "--out", str(out_dir)]
    assert main([*evaluate, "--merge", "defective=dent,scratch,spot"]) == 0
    assert json.loads((out_dir / "metrics.json").read_text())["classes"]["n"] == 75
    assert main(["--store", store, "evaluate", "--line", "parts", "--data", str(classes)]) == 3  # data: unmerged
    assert "does not know" in capsys.readouterr().err
    assert main(["--store", store, "severity", "parts", "high=0.95", "low=0.7"]) == 0
    assert main(["--store", store, "severity", "parts", "high"]) == 2
    assert "LEVEL=CONFIDENCE" in capsys.readouterr().err


def test_a_line_without_a_normal_class_answers_the_likeliest_class(classes: Path, store: ModelStore) -> None:
    """e.g. real vs generated photos: no class is 'normal', so no defect confidence, threshold or severity."""
    merge = {"real": ["good"], "generated": ["dent", "scratch", "spot"]}
    report = fit_classifier_line("photos", classes, quick(merge=merge), store)
    card, metrics = report.card, report.evaluation
    assert card.classifier is not None and card.classifier.normal_class is None and card.classifier.severity == {}
    assert card.threshold.method == "argmax"
    assert metrics is not None and metrics.miss_rate is None and metrics.confusion is None
    assert metrics.classes is not None and (metrics.classes.roc_auc or 0) >= 0.95
    with pytest.raises(ValueError, match="without a normal class"):
        set_threshold(store, "photos", 0.7)
    with pytest.raises(ValueError, match="has no normal class"):
        set_severity(store, "photos", {"high": 0.9})
    assert classifier(store, card).normal_index is None
