"""Soak: mixed image and sensor traffic through the whole application on loopback, for ten minutes.

    python -m benchmarks.soak [--duration 600] [--image-clients 4] [--sensor-clients 4] [--large-clients 1]
                              [--out soak.json]

The application of ``serve_config.yaml`` (history recorded, as shipped) serves an image line and a sensor
line, fitted on synthetic data at start. Clients post images and sensor readings without pause; the large
clients post camera frames of 4.7 to 16 MB (BMP and PNG, every other one with ``?heatmap=true``), what once
left the ingress and the backbone holding memory they never gave back. Reported:

- errors: every answer that is not a 200, and every failed connection (target 0);
- p99 latency per minute, per kind, and its drift: the last minute's p99 over the first's;
- resident memory of every Ray process (and HAProxy), sampled every ``--sample-every`` s: growth from
  the end of the warm-up minute (when caches and pools are full) to the end (target < 10% each), of its
  own memory: resident less shared, which is Ray's object store in the raylet (shown beside it).

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.serving import add_application_flags, conclude, ray_processes, start_application, wait_healthy
from benchmarks.timing import summary

MEMORY_TARGET = 0.10


def fit_lines(store_dir: Path, image_line: str = "soak-img") -> tuple[list[bytes], list[list[float]]]:
    """An image line (``soak-img``) and a sensor line ``soak-sensor``; images and readings to send."""
    from lineguard.registry.store import ModelStore
    from lineguard.training.data import discover
    from lineguard.training.fit_image import fit_image_line
    from lineguard.training.fit_sensor import fit_sensor_line
    from lineguard.training.options import FitOptions, SensorFitOptions, SensorTrainOptions
    from lineguard.training.sensor_data import read_table
    from lineguard.training.synthetic import write_line
    from lineguard.training.synthetic_sensor import write_csv

    store = ModelStore(store_dir)
    data = write_line(store_dir.parent / "images", size=256)
    fit_image_line(image_line, data, FitOptions(evaluate=False, progress=False), store)
    dataset = discover(data)
    images = [s.path.read_bytes() for s in (dataset.test or dataset.train)[:32]]
    table = write_csv(store_dir.parent / "sensor.csv", rows=3000, seed=5)
    fit_sensor_line("soak-sensor", table, SensorFitOptions(train=SensorTrainOptions(epochs=40, workers=0)), store)
    readings = read_table(table).values[:500].tolist()
    return images, readings


def large_frames() -> list[tuple[str, bytes, str]]:
    """(file name, bytes, content type) of camera frames up to the shipped 16 MiB per image."""
    import io

    from PIL import Image

    rng = np.random.default_rng(11)
    frames = []
    for name, (height, width), fmt in (
        ("frame.bmp", (1200, 1300), "BMP"),  # 4.7 MB
        ("frame.bmp", (3000, 1330), "BMP"),  # 12 MB
        ("frame.png", (2300, 2300), "PNG"),  # 15.9 MB of noise, 5.3 MP
    ):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(out, fmt)
        frames.append((name, out.getvalue(), f"image/{fmt.lower()}"))
    return frames


Sample = tuple[float, dict[int, tuple[str, float, float]]]  # (time, {pid: (name, resident MB, shared MB)})


def memory_sample(began: float) -> Sample:
    return time.perf_counter() - began, {pid: (name, mb, shared) for pid, name, mb, shared in ray_processes()}


async def drive(
    base: str, images: list[bytes], readings: list[list[float]], args: argparse.Namespace
) -> tuple[list[tuple[float, str, float, int]], list[Sample]]:
    """Run the clients for ``args.duration`` s; returns (time, kind, latency ms, status) per request and
    the memory samples (time, {pid: (name, MB)})."""
    import aiohttp

    outcomes: list[tuple[float, str, float, int]] = []
    samples: list[Sample] = []
    began = time.perf_counter()
    stop_at = began + args.duration
    frames = large_frames() if args.large_clients else []
    connector = aiohttp.TCPConnector(limit=args.image_clients + args.sensor_clients + args.large_clients + 4)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def image_client(index: int) -> None:
            i = index
            while time.perf_counter() < stop_at:
                form = aiohttp.FormData()
                form.add_field("file", images[i % len(images)], filename="part.png", content_type="image/png")
                await call("image", f"{base}/v1/lines/soak-img/predict", {"data": form})
                i += args.image_clients

        async def sensor_client(index: int) -> None:
            i = index
            while time.perf_counter() < stop_at:
                body = {"values": readings[i % len(readings)], "sensor_id": f"spindle-{index}"}
                await call("sensor", f"{base}/v1/lines/soak-sensor/predict", {"json": body})
                i += args.sensor_clients

        async def large_client(index: int) -> None:
            i = index
            while time.perf_counter() < stop_at:
                name, data, content_type = frames[i % len(frames)]
                form = aiohttp.FormData()
                form.add_field("file", data, filename=name, content_type=content_type)
                heatmap = "?heatmap=true" if (i // len(frames)) % 2 else ""
                await call("large", f"{base}/v1/lines/soak-img/predict{heatmap}", {"data": form})
                i += max(1, args.large_clients)

        async def call(kind: str, url: str, kwargs: dict[str, Any]) -> None:
            started = time.perf_counter()
            try:
                async with session.post(url, **kwargs) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            now = time.perf_counter()
            outcomes.append((now - began, kind, (now - started) * 1000, status))

        async def sampler() -> None:
            while time.perf_counter() < stop_at:
                samples.append(await asyncio.to_thread(memory_sample, began))
                await asyncio.sleep(args.sample_every)

        clients = [image_client(c) for c in range(args.image_clients)]
        clients += [sensor_client(c) for c in range(args.sensor_clients)]
        clients += [large_client(c) for c in range(args.large_clients)]
        await asyncio.gather(sampler(), *clients)
    samples.append(await asyncio.to_thread(memory_sample, began))
    return outcomes, samples


def report(
    outcomes: list[tuple[float, str, float, int]],
    samples: list[Sample],
    warmup_s: float,
) -> dict[str, Any]:
    errors: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    minutes: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for at, kind, latency, status in outcomes:
        if status != 200:
            errors[kind][status] += 1
        else:
            minutes[kind][int(at // 60)].append(latency)
    kinds: dict[str, Any] = {}
    for kind, by_minute in minutes.items():
        p99 = {m: round(float(np.percentile(v, 99)), 1) for m, v in sorted(by_minute.items()) if len(v) >= 20}
        ordered = list(p99.values())
        everything = [latency for values in by_minute.values() for latency in values]
        requests = sum(1 for o in outcomes if o[1] == kind)
        kinds[kind] = {
            "requests": requests,
            "per_s": round(requests / max(1e-9, max(o[0] for o in outcomes)), 1),
            "errors": dict(errors[kind]),
            **{k: round(v, 1) for k, v in summary(everything).items()},
            "p99_by_minute_ms": p99,
            "p99_drift": round(ordered[-1] / ordered[0], 3) if len(ordered) >= 2 else None,
        }
    baseline = next((s for s in samples if s[0] >= warmup_s), samples[0])
    final = samples[-1]
    memory: list[dict[str, Any]] = []
    for pid, (name, start_rss, start_shared) in sorted(baseline[1].items(), key=lambda kv: -kv[1][1]):
        start_mb = start_rss - start_shared
        if pid not in final[1]:
            memory.append({"pid": pid, "process": name, "start_mb": round(start_mb, 1), "end_mb": None})
            continue
        _, end_rss, end_shared = final[1][pid]
        end_mb = end_rss - end_shared
        growth = (end_mb - start_mb) / start_mb if start_mb > 0 else 0.0
        memory.append(
            {"pid": pid, "process": name, "start_mb": round(start_mb, 1), "end_mb": round(end_mb, 1),
             "growth": round(growth, 4), "shared_mb": [round(start_shared, 1), round(end_shared, 1)]}
        )  # fmt: skip
    total_errors = sum(sum(e.values()) for e in errors.values())
    worst = float(max((m["growth"] for m in memory if m["end_mb"] is not None), default=0.0))
    return {
        "duration_s": round(max((o[0] for o in outcomes), default=0.0), 1),
        "errors": total_errors,
        "kinds": kinds,
        "memory_from_s": round(baseline[0], 1),
        "memory_to_s": round(final[0], 1),
        "memory": memory,
        "worst_memory_growth": worst,
        "processes_gone": [m["process"] for m in memory if m["end_mb"] is None],
        "targets_met": total_errors == 0 and worst < MEMORY_TARGET and all(m["end_mb"] for m in memory),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default ten minutes)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the memory baseline")
    parser.add_argument("--image-clients", type=int, default=4)
    parser.add_argument("--sensor-clients", type=int, default=4)
    parser.add_argument("--large-clients", type=int, default=1, help="clients posting 4.7-16 MB camera frames")
    parser.add_argument("--sample-every", type=float, default=15.0, help="seconds between memory samples")
    add_application_flags(parser)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lineguard-soak-") as tmp:
        store_dir = Path(tmp) / "store"
        images, readings = fit_lines(store_dir)
        port, _ = start_application(store_dir, args)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base)
        print(
            f"soak: {args.image_clients} image + {args.sensor_clients} sensor + {args.large_clients} large-frame "
            f"clients for {args.duration:.0f} s"
        )
        outcomes, samples = asyncio.run(drive(base, images, readings, args))
        result = report(outcomes, samples, args.warmup)
        health = httpx.get(f"{base}/healthz", timeout=10).json()
        result["history"] = health.get("history")
        from ray import serve

        serve.shutdown()
    print(f"errors: {result['errors']} (target 0)")
    for kind, figures in result["kinds"].items():
        print(
            f"{kind:>7}: {figures['requests']} requests ({figures['per_s']}/s), p50 {figures['p50']} ms, "
            f"p99 {figures['p99']} ms; p99 by minute {list(figures['p99_by_minute_ms'].values())} "
            f"(last/first {figures['p99_drift']})"
        )
    print(
        f"own memory (resident less shared) from {result['memory_from_s']} s to {result['memory_to_s']} s "
        "(target: growth < 10% each); shared memory (the object store, in the raylet) beside it:"
    )
    for m in result["memory"]:
        shown = "gone" if m["end_mb"] is None else f"{m['end_mb']:.0f} MB ({m['growth']:+.1%})"
        shared = f"   shared {m['shared_mb'][0]:.0f} -> {m['shared_mb'][1]:.0f} MB" if m.get("shared_mb") else ""
        print(f"  {m['process']:<40} {m['start_mb']:>7.0f} MB -> {shown}{shared}")
    conclude(result, args.out, vars(args))


if __name__ == "__main__":
    main()
