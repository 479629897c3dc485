"""Training-time augmentation of labelled images: seeded, so a fit is reproducible.

A view is a random crop (``crop`` to 1.0 of each side, the aspect ratio kept within 10%), optional
horizontal and vertical flips, and a small brightness and contrast change. Vertical flips are on by
default (surface parts rarely have an up); turn them off for scenes that do.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageEnhance

Augmentation = Literal["default", "light", "none"]
AUGMENTS: tuple[str, ...] = get_args(Augmentation)


@dataclass(frozen=True)
class Augment:
    crop: float = 0.85  # smallest side fraction kept; 1.0 = no cropping
    hflip: bool = True
    vflip: bool = True
    jitter: float = 0.1  # brightness and contrast factors in [1 - jitter, 1 + jitter]

    @classmethod
    def named(cls, name: str) -> Augment:
        if name == "default":
            return cls()
        if name == "light":
            return cls(crop=0.95, vflip=False, jitter=0.05)
        if name == "none":
            return cls(crop=1.0, hflip=False, vflip=False, jitter=0.0)
        raise ValueError(f"augmentation {name!r} is not one of {AUGMENTS}")

    def view(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """One random view of ``image`` (same mode; the size may shrink by the crop)."""
        width, height = image.size
        if self.crop < 1.0:
            scale = rng.uniform(self.crop, 1.0)
            aspect = rng.uniform(0.9, 1.1)
            w = max(1, min(width, round(width * scale * aspect**0.5)))
            h = max(1, min(height, round(height * scale / aspect**0.5)))
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            image = image.crop((left, top, left + w, top + h))
        if self.hflip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.vflip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        if self.jitter > 0:
            image = ImageEnhance.Brightness(image).enhance(rng.uniform(1 - self.jitter, 1 + self.jitter))
            image = ImageEnhance.Contrast(image).enhance(rng.uniform(1 - self.jitter, 1 + self.jitter))
        return image


def view_rng(path: str, seed: int) -> np.random.Generator:
    """A generator for the views of one file: the same views on every run and on every worker."""
    return np.random.default_rng([seed, zlib.crc32(path.encode())])
