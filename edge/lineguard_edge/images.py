"""Image bytes -> decoded, square-resized RGB image: the one path of fitting, of the service and of the
edge runtime.

Decoding is defensive because bytes come from the network: the pixel count is read from the header and
refused before anything is decoded (decompression bombs), only still-image formats are accepted, and a
truncated or corrupt file raises :class:`BadImageError` naming the problem rather than failing later.

Every image is resized to one square size (no crop, so defects at the border stay in view). Resizing to
a fixed square also keeps a model from telling parts apart by their original size (on battery_weld
every defective image is 400x256 while good ones vary).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from lineguard_edge.errors import DataError, ImageTooLargeError

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "BadImageError",
    "ImageTooLargeError",
    "open_image",
    "resize",
]

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "BMP", "TIFF", "WEBP"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
DEFAULT_MAX_PIXELS = 40_000_000  # e.g. 8000x5000; far above any line camera, far below a bomb


class BadImageError(DataError):
    """The bytes are not a readable image (wrong format, truncated, corrupt)."""


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
