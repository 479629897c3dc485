"""Valid work is answered: camera frames up to the size limit, full batches of them, concurrent clients whose
frames share a micro-batch; and one bad file in a batch is that file's 422, never its neighbours' 503."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.integration.conftest import MAX_IMAGE_BYTES, MAX_REQUEST_BYTES, Service
from tests.support import bmp_frame, tiff_pages

PREDICT = "/v1/lines/press-a/predict"
MB = 1_000_000


def test_the_service_takes_the_shipped_image_limits() -> None:
    assert MAX_IMAGE_BYTES == 16 * 1024 * 1024 and MAX_REQUEST_BYTES > 4 * 16 * MB


@pytest.mark.parametrize("megabytes", [4.7, 12, 16])
def test_a_large_camera_frame_is_answered(service: Service, megabytes: float) -> None:
    frame = bmp_frame(int(megabytes * MB))
    assert 4 * 1024 * 1024 < len(frame) <= MAX_IMAGE_BYTES
    answer = httpx.post(f"{service.url}{PREDICT}", files={"file": ("frame.bmp", frame, "image/bmp")}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["anomaly_score"] >= 0


def test_a_batch_of_the_largest_frames_is_answered(service: Service) -> None:
    files = [("files", (f"f{i}.bmp", bmp_frame(16 * MB, seed=i), "image/bmp")) for i in range(4)]
    answer = httpx.post(f"{service.url}{PREDICT}/batch", files=files, timeout=180)
    assert answer.status_code == 200, answer.text
    assert [("prediction" in item, item.get("error")) for item in answer.json()["results"]] == [(True, None)] * 4


def test_concurrent_clients_whose_frames_share_micro_batches(service: Service) -> None:
    frame = bmp_frame(1_080_000)

    def client(i: int) -> list[int]:
        with httpx.Client(base_url=service.url, timeout=120) as http:
            return [http.post(PREDICT, files={"file": (f"{i}.bmp", frame, "image/bmp")}).status_code for _ in range(4)]

    with ThreadPoolExecutor(8) as pool:
        statuses = [s for answers in pool.map(client, range(8)) for s in answers]
    assert statuses == [200] * 32


def test_a_broken_file_fails_alone_in_its_batch(service: Service) -> None:
    good = bmp_frame(200_000)
    files = [
        ("files", ("a.bmp", good, "image/bmp")),
        ("files", ("broken.tif", tiff_pages(1, broken_last=True), "image/tiff")),  # its only page has no size
        ("files", ("pages.tif", tiff_pages(20_000, broken_last=True), "image/tiff")),
        ("files", ("cut.bmp", good[:5000], "image/bmp")),
        ("files", ("b.bmp", good, "image/bmp")),
    ]
    answer = httpx.post(f"{service.url}{PREDICT}/batch", files=files, timeout=60)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert "prediction" in results[0] and "prediction" in results[4]
    assert "prediction" in results[2]  # a many-page TIFF: its first page is the part
    for bad in (results[1], results[3]):
        assert bad["error"]["status"] == 422 and bad["error"]["detail"], bad


def test_a_bad_file_is_a_422_without_retry_after(service: Service) -> None:
    answer = httpx.post(
        f"{service.url}{PREDICT}", files={"file": ("x.tif", tiff_pages(3)[:40], "image/tiff")}, timeout=30
    )
    assert answer.status_code == 422 and "retry" not in answer.text.lower()
    assert "retry-after" not in answer.headers
