"""The Preprocessor on hostile files: every item's failure stays its own, a named 4xx, and its neighbours in
the batch are decoded; a slow item does not hold up the replica's other batches."""

from __future__ import annotations

import asyncio
import io
import time
from functools import cache

import numpy as np
import pytest
from PIL import Image

from lineguard.deployments import preprocessor
from lineguard.deployments.messages import ItemError
from lineguard.deployments.preprocessor import batch_of, decode
from tests.support import tiff_pages

# Pillow warns on broken tags and on formats it will drop (IM); the corpus is made of both
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
SIZE = 32
MAX_PIXELS = 4_000_000
# every format Pillow writes here; the service accepts five of them, the rest must be refused by name
WRITABLE = ["BMP", "DDS", "GIF", "ICO", "IM", "JPEG", "JPEG2000", "MSP", "PCX", "PNG", "PPM", "QOI", "SGI"]
WRITABLE += ["SPIDER", "TGA", "TIFF", "WEBP", "AVIF", "PDF", "XBM", "BLP", "ICNS"]


def encoded(fmt: str) -> bytes | None:
    mode = {"MSP": "1", "XBM": "1", "SPIDER": "F"}.get(fmt, "RGB")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8)).convert(mode)
    out = io.BytesIO()
    try:
        image.save(out, fmt)
    except (OSError, ValueError, KeyError):  # a codec this Pillow build lacks
        return None
    return out.getvalue()


def mutations(data: bytes, rng: np.random.Generator) -> list[bytes]:
    """Truncations, flipped bytes, zeroed runs and a doubled header of one valid file."""
    out = [data[:n] for n in {1, 8, 16, 32, len(data) // 2, len(data) - 1} if 0 < n < len(data)]
    for _ in range(12):
        flipped = bytearray(data)
        for at in rng.integers(0, len(data), size=max(1, len(data) // 64)):
            flipped[at] ^= int(rng.integers(1, 256))
        out.append(bytes(flipped))
    zeroed = bytearray(data)
    start = int(rng.integers(0, max(1, len(data) - 16)))
    zeroed[start : start + 16] = bytes(16)
    out += [bytes(zeroed), data[:64] + data, data + data]
    return out


@cache
def corpus() -> list[bytes]:
    rng = np.random.default_rng(7)
    files = [tiff_pages(2, broken_last=True), tiff_pages(3000, broken_last=True), b"", b"\x00" * 189]
    for fmt in WRITABLE:
        data = encoded(fmt)
        if data is not None:
            files += [data, *mutations(data, rng)]
    return files


def good_png(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 48), (shade, shade, shade)).save(out, "PNG")
    return out.getvalue()


def test_the_corpus_covers_the_formats_the_service_accepts() -> None:
    assert len(corpus()) > 300
    for fmt in ("PNG", "JPEG", "BMP", "TIFF", "WEBP"):
        assert encoded(fmt) is not None


def test_every_malformed_file_is_its_own_named_4xx_and_its_neighbours_are_decoded() -> None:
    files = corpus()
    for start in range(0, len(files), 7):
        bad = files[start : start + 7]
        batch = [good_png(10), *bad, good_png(200)]
        result = batch_of([decode(data, SIZE, MAX_PIXELS) for data in batch], SIZE)
        assert result.rows[0] == 0 and result.errors[0] is None
        assert result.errors[-1] is None and result.images[result.rows[-1]].mean() == pytest.approx(200, abs=1)
        for data, row, error in zip(bad, result.rows[1:-1], result.errors[1:-1], strict=True):
            if error is None:  # a mutation that still decodes is a picture like any other
                assert result.images[row].shape == (3, SIZE, SIZE)
                continue
            assert row == -1 and isinstance(error, ItemError)
            assert 400 <= error.status < 500, (data[:16], error)
            assert error.retry_after_s is None and error.detail


def test_the_broken_second_page_of_a_tiff_does_not_fail_the_first() -> None:
    decoded = decode(tiff_pages(2, broken_last=True), SIZE, MAX_PIXELS)
    assert isinstance(decoded, np.ndarray) and decoded.shape == (3, SIZE, SIZE)


def test_a_slow_item_holds_one_thread_not_the_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_or_fast(data: bytes, size: int, max_pixels: int) -> np.ndarray | ItemError:
        if data == b"slow":
            time.sleep(0.6)
            return ItemError(422, "slow")
        return decode(data, size, max_pixels)

    monkeypatch.setattr(preprocessor, "decode", slow_or_fast)
    replica = preprocessor.Preprocessor.func_or_class()  # type: ignore[attr-defined]  # the class, without Ray
    replica.reconfigure({"threads": 2})

    async def both() -> float:
        slow = asyncio.ensure_future(replica([b"slow"], SIZE, MAX_PIXELS))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        fast = await replica([good_png(50)], SIZE, MAX_PIXELS)
        waited = time.perf_counter() - started
        assert fast.errors == [None]
        assert not slow.done()  # the other batch was answered while the slow one still decodes
        await slow
        return waited

    assert asyncio.run(both()) < 0.4
