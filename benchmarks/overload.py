"""Overload: a burst of concurrent image requests far beyond what the service admits, all at once.

    python -m benchmarks.overload [--requests 1000] [--reads 20] [--out overload.json]

The application of ``serve_config.yaml`` (HAProxy in front, history recorded, as shipped) serves an image
line fitted on synthetic data at start. ``--requests`` clients each open a connection and post one image
at the same moment; meanwhile a reader asks ``GET /v1/lines`` every half second. Reported, against the
README's promises (targets):

- answers by status; every refusal is JSON with a ``detail`` (target: no other refusal);
- every 503 carries ``Retry-After`` (target: all);
- the slowest answer, against ``request_timeout_s`` plus ``body_timeout_s`` (target: none later);
- the reads' latency while the burst lasts (target: every read a 200).

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.serving import add_application_flags, conclude, start_application, wait_healthy
from benchmarks.soak import fit_lines
from benchmarks.timing import summary


async def burst(base: str, image: bytes, requests: int, reads: int) -> tuple[list[dict[str, Any]], list[float]]:
    """Post ``requests`` images at once; returns one record per answer and the reads' latencies (ms)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=requests + 8)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        gate = asyncio.Event()

        async def post() -> dict[str, Any]:
            form = aiohttp.FormData()
            form.add_field("file", image, filename="part.png", content_type="image/png")
            await gate.wait()
            started = time.perf_counter()
            try:
                async with session.post(f"{base}/v1/lines/overload/predict", data=form) as response:
                    raw = await response.read()
                    status, headers = response.status, response.headers
            except (aiohttp.ClientError, TimeoutError) as err:
                return {"status": 0, "error": type(err).__name__, "s": time.perf_counter() - started}
            record: dict[str, Any] = {"status": status, "s": time.perf_counter() - started}
            if status != 200:
                try:
                    record["json_detail"] = isinstance(json.loads(raw).get("detail"), str)
                except (ValueError, AttributeError):
                    record["json_detail"] = False
                    record["body"] = raw[:120].decode(errors="replace")
                record["retry_after"] = headers.get("Retry-After")
            return record

        async def reader() -> list[float]:
            latencies = []
            for _ in range(reads):
                await asyncio.sleep(0.5)
                started = time.perf_counter()
                async with session.get(f"{base}/v1/lines") as response:
                    await response.read()
                    ok = response.status == 200
                latencies.append((time.perf_counter() - started) * 1000 if ok else float("inf"))
            return latencies

        posts = [asyncio.ensure_future(post()) for _ in range(requests)]
        await asyncio.sleep(0.5)  # every form built and waiting
        gate.set()
        reading = asyncio.ensure_future(reader())
        records = await asyncio.gather(*posts)
        return list(records), await reading


def report(records: list[dict[str, Any]], reads_ms: list[float], limit_s: float) -> dict[str, Any]:
    refusals = [r for r in records if r["status"] != 200]
    not_json = [r for r in refusals if not r.get("json_detail")]
    no_retry = [r for r in refusals if r["status"] == 503 and not r.get("retry_after")]
    slowest = max(r["s"] for r in records)
    by_status = {
        str(status): summary([r["s"] * 1000 for r in records if r["status"] == status])
        for status in sorted({r["status"] for r in records})
    }
    return {
        "answers": dict(sorted(Counter(str(r["status"]) for r in records).items())),
        "latency_ms_by_status": by_status,
        "refusals_not_json": len(not_json),
        "examples_not_json": not_json[:3],
        "503_without_retry_after": len(no_retry),
        "slowest_s": round(slowest, 2),
        "limit_s": limit_s,
        "reads_ms": summary(reads_ms) if reads_ms else None,
        "reads_failed": sum(1 for r in reads_ms if r == float("inf")),
        "targets_met": not not_json and not no_retry and slowest <= limit_s and all(r < float("inf") for r in reads_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="concurrent image requests (default 1000)")
    parser.add_argument("--reads", type=int, default=20, help="GET /v1/lines during the burst, one each 0.5 s")
    add_application_flags(parser)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from lineguard.deployments import config_file
    from lineguard.deployments.config import answer_deadline_s

    app_args = config_file.application(config_file.read(args.config)).get("args", {})
    limit_s = answer_deadline_s(app_args)
    with tempfile.TemporaryDirectory(prefix="lineguard-overload-") as tmp:
        store_dir = Path(tmp) / "store"
        images, _ = fit_lines(store_dir, image_line="overload")
        port, _ = start_application(store_dir, args)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base)
        for image in images[:8]:  # warm: models loaded, pools filled
            httpx.post(f"{base}/v1/lines/overload/predict", files={"file": ("p.png", image)}, timeout=60)
        print(f"overload: {args.requests} concurrent image requests at once, {args.reads} reads meanwhile")
        records, reads_ms = asyncio.run(burst(base, images[0], args.requests, args.reads))
        result = report(records, reads_ms, limit_s)
        from ray import serve

        serve.shutdown()
    print(f"answers by status: {result['answers']}")
    for status, figures in result["latency_ms_by_status"].items():
        print(f"  {status}: p50 {figures['p50']:.0f} ms, p99 {figures['p99']:.0f} ms")
    print(f"refusals that are not JSON with a detail: {result['refusals_not_json']} (target 0)")
    print(f"503s without Retry-After: {result['503_without_retry_after']} (target 0)")
    print(f"slowest answer: {result['slowest_s']} s (target <= {limit_s:.0f} s)")
    reads = result["reads_ms"]
    if reads:
        print(f"reads meanwhile: p50 {reads['p50']:.0f} ms, p99 {reads['p99']:.0f} ms, failed {result['reads_failed']}")
    conclude(result, args.out, vars(args))


if __name__ == "__main__":
    main()
