"""A synthetic line for the offline demo and the tests: brushed-metal surfaces with real-looking defects.

Normal parts are a lit, vertically brushed surface with grain; defects are scratches, dark spots
(pits) and dents (a soft dark ring with a highlight), each with its pixel mask. Everything is drawn
from a seed, so a run is reproducible, and written in the MVTec layout the fitter reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEFECTS = ("scratch", "spot", "dent")


def surface(rng: np.random.Generator, size: int) -> np.ndarray:
    """A normal part, float32 in [0, 255], ``(size, size)``."""
    x = np.linspace(-1, 1, size, dtype=np.float32)
    light = 150 + 40 * rng.uniform(-1, 1) * x[None, :] + 30 * rng.uniform(-1, 1) * x[:, None]
    streaks = np.convolve(rng.normal(0, 1, size + 8), np.ones(9) / 9, mode="valid")[:size].astype(np.float32)
    brushed = 14 * streaks[None, :] * (1 + 0.1 * rng.normal(0, 1, (size, 1)).astype(np.float32))
    grain = rng.normal(0, 4, (size, size)).astype(np.float32)
    return np.clip(light + brushed + grain, 0, 255)


def add_defect(rng: np.random.Generator, image: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Draw a ``kind`` defect on ``image``; returns the image and the boolean mask."""
    size = image.shape[0]
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = rng.uniform(0.2, 0.8, 2) * size
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        half = rng.uniform(0.15, 0.35) * size
        dx, dy = np.cos(angle) * half, np.sin(angle) * half
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=int(rng.integers(2, 4)))
        delta = rng.choice([-1, 1]) * rng.uniform(45, 70)
    elif kind == "spot":
        r = rng.uniform(0.03, 0.07) * size
        draw.ellipse([cx - r, cy - r * rng.uniform(0.6, 1.0), cx + r, cy + r], fill=255)
        delta = -rng.uniform(60, 90)
    elif kind == "dent":
        r = rng.uniform(0.08, 0.14) * size
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        delta = -rng.uniform(30, 45)
    else:
        raise ValueError(f"unknown defect kind {kind!r}: choose from {DEFECTS}")
    soft = np.asarray(mask.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32) / 255.0
    if kind == "dent":  # a dark rim and a bright centre
        inner = np.asarray(mask.filter(ImageFilter.GaussianBlur(r / 3)), dtype=np.float32) / 255.0
        out = image + delta * soft - 0.8 * delta * inner
    else:
        out = image + delta * soft
    return np.clip(out, 0, 255), np.asarray(mask) > 127


def write_line(
    root: Path,
    seed: int = 0,
    size: int = 160,
    n_train: int = 48,
    n_test_good: int = 16,
    n_per_defect: int = 10,
) -> Path:
    """Write an MVTec-layout synthetic line under ``root``; returns ``root``."""
    rng = np.random.default_rng(seed)
    folders = {name: root / name for name in ("train/good", "test/good")}
    for kind in DEFECTS:
        folders[f"test/{kind}"] = root / "test" / kind
        folders[f"gt/{kind}"] = root / "ground_truth" / kind
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)

    def save(array: np.ndarray, path: Path) -> None:
        Image.fromarray(array.astype(np.uint8), mode="L").save(path)

    for i in range(n_train):
        save(surface(rng, size), folders["train/good"] / f"{i:03d}.png")
    for i in range(n_test_good):
        save(surface(rng, size), folders["test/good"] / f"{i:03d}.png")
    for kind in DEFECTS:
        for i in range(n_per_defect):
            image, mask = add_defect(rng, surface(rng, size), kind)
            save(image, folders[f"test/{kind}"] / f"{i:03d}.png")
            save(mask.astype(np.uint8) * 255, folders[f"gt/{kind}"] / f"{i:03d}_mask.png")
    return root


def write_class_folders(root: Path, seed: int = 0, size: int = 128, n_good: int = 30, n_per_defect: int = 15) -> Path:
    """A labelled synthetic line for classifier lines: ``root/good`` and one folder per defect kind."""
    rng = np.random.default_rng(seed)
    for kind, count in (("good", n_good), *((k, n_per_defect) for k in DEFECTS)):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = surface(rng, size) if kind == "good" else add_defect(rng, surface(rng, size), kind)[0]
            Image.fromarray(image.astype(np.uint8), mode="L").save(folder / f"{i:03d}.png")
    return root
