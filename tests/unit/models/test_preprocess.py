"""Decoding is defensive: bad bytes get a named error, oversized images are refused before decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from lineguard.models.preprocess import BadImageError, ImageTooLargeError, PreprocessConfig, open_image
from lineguard.models.tensors import preprocess_bytes
from tests.support import png_header_only, tiff_pages


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("mode,fmt", [("RGB", "PNG"), ("L", "PNG"), ("RGB", "JPEG"), ("L", "BMP"), ("RGBA", "PNG")])
def test_common_images_become_normalised_tensors(mode: str, fmt: str) -> None:
    image = Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)).convert(mode)
    tensor = preprocess_bytes(encode(image, fmt), PreprocessConfig(image_size=64))
    assert tensor.shape == (3, 64, 64)
    assert float(tensor.min()) >= -1.0 and float(tensor.max()) <= 1.0


def test_sixteen_bit_grayscale_is_scaled() -> None:
    array = np.full((20, 20), 65535, dtype=np.uint16)
    tensor = preprocess_bytes(encode(Image.fromarray(array)), PreprocessConfig(image_size=16))
    assert float(tensor.mean()) == pytest.approx(1.0, abs=0.01)


def test_bad_bytes_get_named_errors() -> None:
    good = encode(Image.new("RGB", (40, 40), "red"))
    with pytest.raises(BadImageError, match="empty file"):
        open_image(b"")
    with pytest.raises(BadImageError, match="not an image"):
        open_image(b"this is plain text, not a picture")
    with pytest.raises(BadImageError, match="truncated or corrupt"):
        open_image(encode(Image.new("RGB", (300, 300), "blue"), "JPEG")[:200])
    with pytest.raises(BadImageError, match="unsupported image format GIF"):
        open_image(encode(Image.new("RGB", (10, 10)), "GIF"))
    assert open_image(good).size == (40, 40)


def test_oversized_image_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLargeError, match="over the limit of 40000000"):
        open_image(png_header_only(100_000, 100_000), max_pixels=40_000_000)  # Pillow's guard, in the header
    with pytest.raises(ImageTooLargeError, match="9000x9000 = 81000000 pixels, over the limit of 40000000"):
        open_image(png_header_only(9000, 9000), max_pixels=40_000_000)  # ours, also before decoding
    with pytest.raises(ImageTooLargeError, match="over the limit of 100"):
        open_image(encode(Image.new("L", (20, 20))), max_pixels=100)


def test_only_the_first_page_of_a_multi_page_file_is_read() -> None:
    # 40,000 pages, the last one broken: counting the pages took 25 s and then raised TypeError
    image = open_image(tiff_pages(40_000, broken_last=True))
    assert image.size == (1, 1) and image.getpixel((0, 0)) == (255, 255, 255)


def test_a_decoder_fault_on_hostile_bytes_is_a_bad_image(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(Image.new("RGB", (4, 4)))

    def trips(self: Image.Image) -> None:
        raise KeyError("StripOffsets")  # what Pillow's TIFF decoder raises on some broken tag sets

    monkeypatch.setattr(ImageFile.ImageFile, "load", trips)
    with pytest.raises(BadImageError, match=r"decoder failed \(KeyError"):
        open_image(data)
