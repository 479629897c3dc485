"""Finding a line's images on disk: the MVTec AD folder layout, or a plain folder of good images.

    <root>/train/good/*.png|jpg                         normal images for fitting
    <root>/test/good/*, <root>/test/<defect_type>/*     labelled test images
    <root>/ground_truth/<defect_type>/<stem>_mask.png   pixel masks (white = defect)

Masks are paired with images by file stem, never by sorted position (a mask folder holding an extra
file would shift every pair), and any image suffix is accepted (magnetic_tile ships JPEGs).
Unreadable image files are not found here but when they are decoded (:func:`lineguard.training.engine.read_image`).
Nothing here imports torch: the service lists the simulator's sample folders with it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lineguard.errors import DataError
from lineguard.models.preprocess import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

MVTEC_HELP = (
    "expected the MVTec layout (<root>/train/good/*.png|jpg, optional <root>/test/<type>/* and "
    "<root>/ground_truth/<type>/<stem>_mask.png) or a folder that directly holds good images"
)


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0 = good, 1 = defective
    defect_type: str  # "good" or the test sub-folder name
    mask: Path | None = None


@dataclass
class ImageDataset:
    root: Path
    layout: str  # "mvtec" | "folder"
    train: list[Sample]
    test: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix, case-insensitive), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def discover(root: Path | str) -> ImageDataset:
    """Read the layout of ``root``; raises a DataError that says what was expected."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist; {MVTEC_HELP}")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder; {MVTEC_HELP}")
    if (root / "train").is_dir():
        return _discover_mvtec(root)
    images = list_images(root)
    if images:
        return ImageDataset(root, "folder", [Sample(p, 0, "good") for p in images])
    subfolders = sorted(p.name for p in root.iterdir() if p.is_dir())
    hint = f" (it has sub-folders {subfolders[:8]}: is it a parent of the line's folder?)" if subfolders else ""
    raise DataError(f"no images found in {root}{hint}; {MVTEC_HELP}")


def _discover_mvtec(root: Path) -> ImageDataset:
    good = root / "train" / "good"
    if not good.is_dir():
        found = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
        raise DataError(f"{root}/train has no good/ folder (found {found}); {MVTEC_HELP}")
    train = [Sample(p, 0, "good") for p in list_images(good)]
    if not train:
        raise DataError(f"no images in {good}: put the line's normal images there (PNG/JPG/BMP/TIFF/WebP)")
    notes: list[str] = []
    test: list[Sample] = []
    test_root = root / "test"
    if test_root.is_dir():
        for folder in sorted(p for p in test_root.iterdir() if p.is_dir()):
            label = 0 if folder.name == "good" else 1
            masks = _mask_index(root / "ground_truth" / folder.name) if label else {}
            missing = 0
            for path in list_images(folder):
                mask = masks.get(path.stem)
                missing += int(label == 1 and mask is None)
                test.append(Sample(path, label, folder.name, mask))
            if missing:
                notes.append(
                    f"{missing} defective image(s) in test/{folder.name} have no mask: pixel metrics skip them"
                )
    return ImageDataset(root, "mvtec", train, test, notes)


def _mask_index(folder: Path) -> dict[str, Path]:
    """Mask files by the stem of the image they belong to (``<stem>_mask.png`` or ``<stem>.png``)."""
    index: dict[str, Path] = {}
    for path in list_images(folder):
        stem = path.stem.removesuffix("_mask")
        if stem not in index or path.stem.endswith("_mask"):
            index[stem] = path
    return index


def read_mask(path: Path | None, size: int) -> np.ndarray:
    """Boolean ``(size, size)`` mask (> 127 is defect); all False when there is no mask file."""
    if path is None:
        return np.zeros((size, size), dtype=bool)
    with Image.open(path) as mask:
        return np.asarray(mask.convert("L").resize((size, size), Image.Resampling.NEAREST)) > 127


def fingerprint(paths: list[Path], root: Path) -> str:
    """SHA-256 over relative paths and file contents: which exact data a version was fitted on. A file
    that cannot be read counts as such (it is skipped, and named, when the images are decoded)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode())
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            digest.update(b"unreadable")
    return digest.hexdigest()
