"""Finding a classifier line's labelled images: one folder per class, and a seeded stratified split.

Accepted layouts (image files may sit in sub-folders of a class folder):

    <root>/<class>/*.png|jpg                       one folder per class
    <root>/{train,val,test}/<class>/*              the same, already split (the folders are pooled and
                                                   split again, so every split keeps every class)
    <root>/train/good + <root>/test/<type>         the MVTec layout: good + one class per defect type

``merge`` renames folders into classes (``{"defective": ["crack", "blowhole"]}``), so a folder per
defect type can make a good-vs-defective line. Problems are named: an empty class folder is dropped
with a warning, a single class or an unknown merge source is an error.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lineguard.errors import ConfigError, DataError
from lineguard.models.preprocess import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

SPLIT_FOLDERS = ("train", "val", "validation", "test")
NORMAL_NAMES = ("good", "normal", "ok", "pass")
LAYOUT_HELP = (
    "expected one folder per class (<root>/<class>/*.png|jpg), optionally under train/, val/ and test/, "
    "or the MVTec layout (<root>/train/good, <root>/test/<defect_type>)"
)


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: int
    folder: str  # the folder it came from (before merging): "crack", "good"...


@dataclass
class ClassDataset:
    root: Path
    classes: list[str]
    normal_class: str | None
    items: list[LabelledImage]
    warnings: list[str] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        return np.array([item.label for item in self.items], dtype=np.int64)

    def counts(self) -> dict[str, int]:
        found = Counter(item.label for item in self.items)
        return {name: found.get(i, 0) for i, name in enumerate(self.classes)}


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_folders(root: Path) -> dict[str, list[Path]]:
    """Folder name -> the class folders of that name (several when the data come split)."""
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split = [p for p in subfolders if p.name in SPLIT_FOLDERS]
    found: dict[str, list[Path]] = {}
    if split:
        for part in split:
            for folder in sorted(p for p in part.iterdir() if p.is_dir() and not p.name.startswith(".")):
                found.setdefault(folder.name, []).append(folder)
    else:
        for folder in subfolders:
            found.setdefault(folder.name, []).append(folder)
    return found


def discover_classes(
    root: Path | str, merge: Mapping[str, Sequence[str]] | None = None, normal_class: str | None = None
) -> ClassDataset:
    """Classes and images of ``root``; raises a DataError (or a ConfigError for a bad merge) that says what
    was expected."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist or is not a folder; {LAYOUT_HELP}")
    folders = _class_folders(root)
    folders.pop("ground_truth", None)  # MVTec masks, not a class
    warnings: list[str] = []
    images: dict[str, list[Path]] = {}
    for name, places in folders.items():
        files = [p for place in places for p in _images_under(place)]
        if files:
            images[name] = files
        else:
            where = ", ".join(str(p) for p in places)
            warnings.append(f"class folder {where} holds no images: class {name!r} dropped")
    for text in warnings:
        log.warning(text)
    classes_of = _merged(images, merge or {})
    if len(classes_of) < 2:
        raise DataError(
            f"{root} has {len(classes_of)} class(es) with images ({sorted(classes_of)}): a classifier needs at least "
            f"2; {LAYOUT_HELP}"
        )
    classes = sorted(classes_of)
    normal = _normal_class(classes, normal_class)
    items = [
        LabelledImage(path, classes.index(cls), folder)
        for cls in classes
        for folder in classes_of[cls]
        for path in images[folder]
    ]
    return ClassDataset(root, classes, normal, items, warnings)


def _merged(images: Mapping[str, list[Path]], merge: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Class name -> the folders it takes its images from."""
    taken: dict[str, str] = {}
    for target, sources in merge.items():
        if not target or not sources:
            raise ConfigError(f"--merge expects NEW=folder1,folder2; got {target!r}={list(sources)}")
        for source in sources:
            if source not in images:
                raise ConfigError(
                    f"--merge {target}: no class folder with images named {source!r} (found {sorted(images)})"
                )
            if source in taken:
                raise ConfigError(f"folder {source!r} is merged twice (into {taken[source]!r} and {target!r})")
            taken[source] = target
    out: dict[str, list[str]] = {}
    for folder in images:
        out.setdefault(taken.get(folder, folder), []).append(folder)
    return out


def _normal_class(classes: list[str], requested: str | None) -> str | None:
    if requested is not None:
        if requested not in classes:
            raise ConfigError(f"normal class {requested!r} is not one of the classes {classes}")
        return requested
    found = [name for name in classes if name.lower() in NORMAL_NAMES]
    return found[0] if len(found) == 1 else None


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int, classes: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train, validation and test rows: every class split in the same proportions (seeded).

    Each class keeps at least one training and one validation image, and one test image when
    ``test_fraction > 0``; a class too small for that is an error naming it.
    """
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"validation and test fractions must be in (0, 1) and sum below 1, got {val_fraction}, {test_fraction}"
        )
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    need = 3 if test_fraction > 0 else 2
    for label in np.unique(labels):
        index = rng.permutation(np.nonzero(labels == label)[0])
        n = len(index)
        if n < need:
            name = classes[label] if label < len(classes) else f"#{label}"
            raise DataError(
                f"class {name!r} has {n} image(s): need at least {need} (for training, validation"
                f"{' and test' if need == 3 else ''}); add images or merge it into another class"
            )
        n_val = min(max(1, round(val_fraction * n)), n - need + 1)  # leave one for training (and test)
        n_test = min(max(1, round(test_fraction * n)), n - n_val - 1) if test_fraction > 0 else 0
        test += index[:n_test].tolist()
        val += index[n_test : n_test + n_val].tolist()
        train += index[n_test + n_val :].tolist()

    def sorted_rows(rows: list[int]) -> np.ndarray:
        return np.sort(np.asarray(rows, dtype=np.int64))

    return sorted_rows(train), sorted_rows(val), sorted_rows(test)
