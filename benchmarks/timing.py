"""Small timing helpers: repeat, warm up, summarise. Figures are medians; machines are noisy."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def time_call(fn: Callable[[], Any]) -> float:
    """Milliseconds one call takes."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def summary(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    return {
        "p50": round(statistics.median(ordered), 3),
        "p90": round(pct(90), 3),
        "p99": round(pct(99), 3),
        "mean": round(statistics.fmean(ordered), 3),
        "n": len(ordered),
    }


def thread_load(call: Callable[[int], Any], clients: int, duration: float) -> dict[str, Any]:
    """``clients`` threads call ``call(i)`` (client c uses i = c, c + clients, ...) for ``duration`` s:
    calls per second and latency percentiles in milliseconds."""
    import threading

    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def client(index: int) -> None:
        i, mine = index, []
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            call(i)
            mine.append((time.perf_counter() - started) * 1000)
            i += clients
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    began = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"throughput": len(latencies) / (time.perf_counter() - began), **summary(latencies)}


async def http_load(
    url: str, request: Callable[[int], dict[str, Any]], clients: int, duration: float
) -> dict[str, Any]:
    """``clients`` concurrent aiohttp clients POST ``request(i)`` (``session.post`` keyword arguments) to
    ``url`` for ``duration`` s: requests per second answered 200, latency percentiles, other statuses."""
    import asyncio

    import aiohttp

    latencies: list[float] = []
    errors: dict[int, int] = {}
    stop_at = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=clients + 4)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def client(index: int) -> None:
            i = index
            while time.perf_counter() < stop_at:
                kwargs = request(i)
                started = time.perf_counter()
                async with session.post(url, **kwargs) as response:
                    await response.read()
                    if response.status == 200:
                        latencies.append((time.perf_counter() - started) * 1000)
                    else:
                        errors[response.status] = errors.get(response.status, 0) + 1
                i += clients

        began = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed = time.perf_counter() - began
    return {"throughput": len(latencies) / elapsed, "errors": errors, **summary(latencies)}
