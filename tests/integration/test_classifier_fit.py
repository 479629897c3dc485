"""Classifier lines with Ray Train, and on real data (magnetic_tile, from the shared data sets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.registry.store import ModelStore
from lineguard.training.fit_classifier import fit_classifier_line
from lineguard.training.options import ClassifierFitOptions, ClassifierTrainOptions
from lineguard.training.synthetic import write_class_folders
from tests.support import shared_dataset


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_folders(
        tmp_path_factory.mktemp("classes") / "parts", seed=2, size=96, n_good=30, n_per_defect=15
    )


def test_ray_train_fits_with_two_workers(ray_session: None, classes: Path, store: ModelStore) -> None:
    """Ray Train (DDP over two workers, fine-tuned tail stage) reaches what one process reaches."""
    options = ClassifierFitOptions(
        image_size=96, tail="finetune", views=1, hidden=64, progress=False,
        train=ClassifierTrainOptions(workers=2, epochs=60),
    )  # fmt: skip
    report = fit_classifier_line("parts", classes, options, store)
    assert report.card.training is not None and report.card.training.workers == 2
    assert report.card.training.epochs_run >= 1
    assert report.evaluation is not None and report.evaluation.classes is not None
    assert (report.evaluation.classes.accuracy or 0) >= 0.8


def _tile_classes(target: Path, classes: dict[str, list[str]]) -> Path:
    """A class-folder view of magnetic_tile made of links (nothing is copied)."""
    root = shared_dataset("magnetic_tile")
    for name, sources in classes.items():
        folder = target / name
        folder.mkdir(parents=True)
        for source in sources:
            for path in sorted((root / source).iterdir()):
                (folder / f"{Path(source).name}-{path.name}").symlink_to(path)
    return target


def test_magnetic_tile_crack_blowhole_good(tmp_path: Path, store: ModelStore) -> None:
    """A real three-class task on held-out images: good (test/good), blowhole, crack."""
    data = _tile_classes(
        tmp_path / "tiles", {"good": ["test/good"], "blowhole": ["test/blowhole"], "crack": ["test/crack"]}
    )
    options = ClassifierFitOptions(views=2, progress=False, train=ClassifierTrainOptions(workers=0))
    report = fit_classifier_line("tiles", data, options, store)
    assert report.evaluation is not None and report.evaluation.classes is not None
    classes = report.evaluation.classes
    assert classes.n == 72 and (classes.accuracy or 0) >= 0.9 and (classes.roc_auc or 0) >= 0.97, classes


@pytest.mark.slow
def test_magnetic_tile_good_vs_defective(tmp_path: Path, store: ModelStore) -> None:
    """Every image, good vs defective (benchmark: python -m benchmarks.classifier)."""
    sources = {
        "good": ["train/good", "test/good"],
        "defective": [f"test/{t}" for t in ("blowhole", "break", "crack", "fray", "uneven")],
    }
    data = _tile_classes(tmp_path / "tiles", sources)
    options = ClassifierFitOptions(progress=False, train=ClassifierTrainOptions(workers=0))
    report = fit_classifier_line("tiles", data, options, store)
    assert report.evaluation is not None and report.evaluation.classes is not None
    classes = report.evaluation.classes
    assert (classes.accuracy or 0) >= 0.95 and (classes.roc_auc or 0) >= 0.99, classes
