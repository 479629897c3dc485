"""Preprocessor deployment: image bytes -> decoded, square-resized ``uint8`` arrays (CPU replicas).

Decoding is the only step that sees untrusted bytes; a bad item becomes an error row (422 for what is
not an image or does not decode, 413 for too many pixels) and never fails the rest of the batch. Normalisation is left
to the backbone, so what travels is ``uint8`` (half the bytes of float16). No torch here.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve

from lineguard.deployments.config import PreprocessorTuning
from lineguard.deployments.messages import ImageBatch, ItemError
from lineguard.errors import DataError
from lineguard.models.preprocess import open_image, resize


def decode(data: bytes, size: int, max_pixels: int) -> np.ndarray | ItemError:
    """``(3, size, size)`` uint8, or the error that names why the bytes are unusable."""
    try:
        image = resize(open_image(data, max_pixels), size)
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
    except DataError as err:
        return ItemError.of(err)
    except Exception as err:  # whatever else hostile bytes make the decoder do stays this item's failure
        return ItemError(422, f"the image could not be decoded ({type(err).__name__}: {err})")


def batch_of(decoded: list[np.ndarray | ItemError], image_size: int) -> ImageBatch:
    """The decoded items as one array, with each item's row (-1 for a failed one) and error."""
    images = [d for d in decoded if isinstance(d, np.ndarray)]
    rows: list[int] = []
    errors: list[ItemError | None] = []
    good = 0
    for item in decoded:
        if isinstance(item, ItemError):
            rows.append(-1)
            errors.append(item)
        else:
            rows.append(good)
            errors.append(None)
            good += 1
    stacked = np.stack(images) if images else np.zeros((0, 3, image_size, image_size), dtype=np.uint8)
    return ImageBatch(stacked, rows, errors)


@serve.deployment
class Preprocessor:
    def __init__(self) -> None:
        self.reconfigure({})

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        tuning = PreprocessorTuning(**user_config)
        self._pool = ThreadPoolExecutor(max_workers=tuning.threads)

    async def __call__(self, payloads: list[bytes], image_size: int, max_pixels: int) -> ImageBatch:
        """Each image decoded on the pool, off the replica's event loop: a slow item holds one thread, and
        the replica's other batches go on meanwhile."""
        loop = asyncio.get_running_loop()
        decoded = await asyncio.gather(
            *(loop.run_in_executor(self._pool, decode, data, image_size, max_pixels) for data in payloads)
        )
        return batch_of(list(decoded), image_size)

    def ping(self) -> str:
        return "ok"
