"""Image bytes -> decoded, square-resized RGB image: the one path used for fitting and for serving.

Decoding is defensive because bytes come from the network: the pixel count is read from the header and
refused before anything is decoded (decompression bombs), only still-image formats are accepted, and a
truncated or corrupt file raises :class:`BadImageError` naming the problem rather than failing later.
Nothing here imports torch (the preprocessing replicas never do); :mod:`lineguard.models.tensors` turns
the decoded images into the backbone's input.

Every image is resized to one square size (no crop, so defects at the border stay in view). Resizing to
a fixed square also keeps a model from telling parts apart by their original size (on battery_weld
every defective image is 400x256 while good ones vary).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lineguard.errors import DataError, ImageTooLargeError

__all__ = ["BadImageError", "ImageTooLargeError", "PreprocessConfig", "open_image", "resize"]

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF", "WEBP"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
DEFAULT_MAX_PIXELS = 40_000_000  # e.g. 8000x5000; far above any line camera, far below a bomb


class BadImageError(DataError):
    """The bytes are not a readable image (wrong format, truncated, corrupt)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How images become model input. Recorded in every model card."""

    image_size: int = 256
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    max_pixels: int = DEFAULT_MAX_PIXELS


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``data`` into an RGB image, checking format and size before decoding pixels."""
    if not data:
        raise BadImageError("empty file: expected PNG, JPEG, BMP, TIFF or WebP image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ALLOWED_FORMATS:
                raise BadImageError(f"unsupported image format {image.format}: send PNG, JPEG, BMP, TIFF or WebP")
            width, height = image.size
            if width < 1 or height < 1:
                raise BadImageError(f"image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
                )
            # only the first frame is read: Image.open stands on it, and counting the frames (n_frames)
            # walks every page of a TIFF (40,000 1x1 pages: 25 s) or trips on a broken later page
            image.load()
            return _to_rgb(image)
    except (ImageTooLargeError, BadImageError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's own guard fired while reading the header (nothing was decoded)
        raise ImageTooLargeError(
            f"image header announces more pixels than Pillow allows, over the limit of {max_pixels} ({err})"
        ) from err
    except UnidentifiedImageError as err:
        raise BadImageError("not an image: expected PNG, JPEG, BMP, TIFF or WebP bytes") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadImageError(f"truncated or corrupt image: {err}") from err
    except Exception as err:  # a decoder's own fault on hostile bytes (TypeError, KeyError, ...) is the file's
        raise BadImageError(f"corrupt image: the decoder failed ({type(err).__name__}: {err})") from err


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def resize(image: Image.Image, size: int) -> Image.Image:
    """Square ``size x size`` bilinear resize (PIL antialiases when shrinking)."""
    return image.resize((size, size), Image.Resampling.BILINEAR)


def image_intensity(images: np.ndarray) -> np.ndarray:
    """Mean pixel value in [0, 1] of each ``uint8 (N, 3, H, W)`` image (or ``(N, H, W, 3)``): ``(N,)``.
    The cheap input statistic that drift checks compare with the fitting images'."""
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images (N, 3, H, W), got shape {images.shape}")
    means: np.ndarray = images.reshape(len(images), -1).mean(1, dtype=np.float64) / 255.0
    return means.astype(np.float32)


def file_intensities(paths: list[Path], size: int, limit: int = 256) -> np.ndarray:
    """:func:`image_intensity` of up to ``limit`` image files (evenly spread), resized as served; unreadable
    files are skipped (the fit reports them elsewhere)."""
    step = max(1, len(paths) // limit)
    values = []
    for path in paths[::step][:limit]:
        try:
            image = resize(open_image(Path(path).read_bytes()), size)
        except (OSError, ValueError):
            continue
        values.append(float(np.asarray(image, dtype=np.uint8).mean()) / 255.0)
    return np.asarray(values, dtype=np.float32)
