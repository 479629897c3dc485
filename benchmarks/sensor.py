"""Sensor benchmark: readings per second in process and through Ray Serve over HTTP, side by side.

    python -m benchmarks.sensor [--rows 4000] [--clients 1,32] [--batch 1000] [--duration 10]
                                [--streams 64] [--set SensorScorer.num_replicas=2]

One synthetic sensor line (12 correlated channels) is fitted in process. In process: N threads call the
fitted model (scaler + AutoEncoder + threshold + top features) on one reading, and on batches of
``--batch`` readings. Through Serve: the application from ``serve_config.yaml`` (HAProxy + gRPC, as
``lineguard serve`` runs it) on a private local Ray, N concurrent HTTP clients posting JSON
``{"values": [...]}`` (one reading) and ``{"values": [[...] x batch]}``. Also reported: the model's
size on disk and the resident memory of the SensorScorer replica and of every Ray process.

Streams (``--streams 64``): 64 clients, each a machine posting one reading at a time with its
``"stream"``, through the StreamShards (each reading in its stream's window, its alarm counted), on the
per-reading AutoEncoder line and on a PCA line (``--head pca``, a window of 10), side by side with
today's plain single readings (no stream) at 1 and 64 clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serving import add_application_flags, ray_memory_mb, start_application
from benchmarks.timing import http_load, thread_load
from lineguard.cli import launcher

LINE = "sensor-bench"


PCA_LINE = "sensor-bench-pca"


def fit_pca(store_dir: Path) -> None:
    from lineguard.registry.store import ModelStore
    from lineguard.training.fit_sensor import fit_sensor_line
    from lineguard.training.options import SensorFitOptions

    fit_sensor_line(PCA_LINE, store_dir.parent / "line.csv", SensorFitOptions(head="pca"), ModelStore(store_dir))


def stream_bodies(values: np.ndarray, streams: int) -> Callable[[int], dict[str, Any]]:
    """Request ``i`` of client ``i % streams`` (timing.http_load's numbering): that machine's next reading."""
    import orjson

    headers = {"content-type": "application/json"}

    def request(i: int) -> dict[str, Any]:
        row = values[(i // streams) % len(values)]
        return {"data": orjson.dumps({"values": row.tolist(), "stream": f"m{i % streams}"}), "headers": headers}

    return request


def fit(store_dir: Path, rows: int) -> np.ndarray:
    from lineguard.registry.store import ModelStore
    from lineguard.training.fit_sensor import fit_sensor_line
    from lineguard.training.options import SensorFitOptions, SensorTrainOptions
    from lineguard.training.sensor_data import read_table
    from lineguard.training.synthetic_sensor import write_csv

    data = write_csv(store_dir.parent / "line.csv", rows=rows)
    options = SensorFitOptions(train=SensorTrainOptions(workers=0))
    report = fit_sensor_line(LINE, data, options, ModelStore(store_dir))
    auroc = report.evaluation.image_auroc if report.evaluation else None
    print(f"fitted {LINE} on {rows} rows: AUROC {auroc}", flush=True)
    return read_table(data).values


def model_size(store_dir: Path) -> dict[str, int]:
    version = next(p for p in (store_dir / LINE).iterdir() if p.is_dir())
    return {p.name: p.stat().st_size for p in version.iterdir()}


def rows_of(values: np.ndarray, i: int, batch: int) -> np.ndarray:
    """The ``i``-th block of ``batch`` readings, wrapping around the table."""
    start = (i * batch) % (len(values) - batch)
    return values[start : start + batch]


def rates(result: dict[str, Any], batch: int) -> dict[str, Any]:
    """Requests per second as readings per second too."""
    return {**result, "requests_per_s": result["throughput"], "vectors_per_s": result["throughput"] * batch}


def in_process(store_dir: Path, values: np.ndarray, clients: int, batch: int, duration: float) -> dict[str, Any]:
    from lineguard.registry.sensor_models import sensor_model
    from lineguard.registry.store import ModelStore

    store = ModelStore(store_dir)
    model = sensor_model(store, store.read_card(LINE))  # NumPy scoring, as in the replica
    return rates(thread_load(lambda i: model.predict(rows_of(values, i, batch)), clients, duration), batch)


def bodies_for(values: np.ndarray, batch: int, count: int = 64) -> list[bytes]:
    import orjson

    out = []
    for k in range(count):
        rows = rows_of(values, k, batch)
        out.append(orjson.dumps({"values": rows[0].tolist() if batch == 1 else rows.tolist()}))
    return out


def json_bodies(bodies: list[bytes]) -> Callable[[int], dict[str, Any]]:
    headers = {"content-type": "application/json"}
    return lambda i: {"data": bodies[i % len(bodies)], "headers": headers}


def serve_run(
    store_dir: Path, values: np.ndarray, plan: list[tuple[int, int]], args: argparse.Namespace
) -> dict[str, Any]:
    os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    os.environ.update(launcher.haproxy_binary(os.environ))  # as `lineguard serve` starts it
    import httpx
    import ray
    from ray import serve

    port, _ = start_application(store_dir, args)
    url = f"http://127.0.0.1:{port}/v1/lines/{LINE}/predict"
    while True:
        try:
            if httpx.post(url, json={"values": values[0].tolist()}, timeout=30).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    results: dict[str, Any] = {}
    for clients, batch in plan:
        request = json_bodies(bodies_for(values, batch))
        asyncio.run(http_load(url, request, clients, 2.0))  # warm-up
        result = rates(asyncio.run(http_load(url, request, clients, args.duration)), batch)
        results[f"{clients}x{batch}"] = result
        print(
            f"  serve      {clients:>3} clients x {batch:>5} readings: {result['vectors_per_s']:>10.0f} readings/s, "
            f"p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, errors {sum(result['errors'].values())}",
            flush=True,
        )
    if args.streams:
        base = f"http://127.0.0.1:{port}/v1/lines"
        plain = json_bodies(bodies_for(values, 1))
        runs = [
            ("plain, 1 client", f"{base}/{LINE}/predict", plain, 1),
            (f"plain, {args.streams} clients", f"{base}/{LINE}/predict", plain, args.streams),
            ("streams, 1 (pca, window 10)", f"{base}/{PCA_LINE}/predict", stream_bodies(values, 1), 1),
            (f"streams, {args.streams} (autoencoder)", f"{base}/{LINE}/predict", stream_bodies(values, args.streams),
             args.streams),
            (f"streams, {args.streams} (pca, window 10)", f"{base}/{PCA_LINE}/predict",
             stream_bodies(values, args.streams), args.streams),
        ]  # fmt: skip
        for name, target, request, clients in runs:
            asyncio.run(http_load(target, request, clients, 2.0))  # warm-up
            result = asyncio.run(http_load(target, request, clients, args.duration))
            results[name] = result
            print(
                f"  serve      {name:<34}: {result['throughput']:>8.0f} readings/s, p50 {result['p50']:.2f} ms, "
                f"p99 {result['p99']:.2f} ms, errors {sum(result['errors'].values())}",
                flush=True,
            )
    results["memory_mb"] = ray_memory_mb()
    serve.shutdown()
    ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4000, help="rows of the synthetic line to fit on")
    parser.add_argument("--clients", default="1,32", help="concurrent clients for single readings")
    parser.add_argument("--batch", type=int, default=1000, help="readings per batch request")
    parser.add_argument("--batch-clients", default="1,4", help="concurrent clients for batch requests")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--streams", type=int, default=0, help="also stream readings from this many machines")
    add_application_flags(parser)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    plan = [(int(c), 1) for c in args.clients.split(",")]
    plan += [(int(c), args.batch) for c in args.batch_clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="lineguard-sensor-bench-") as tmp:
        store_dir = Path(tmp) / "store"
        values = fit(store_dir, args.rows)
        if args.streams:
            fit_pca(store_dir)
        sizes = model_size(store_dir)
        print("model on disk: " + ", ".join(f"{k} {v / 1024:.1f} KB" for k, v in sizes.items()), flush=True)
        local = {}
        for clients, batch in plan:
            local[f"{clients}x{batch}"] = result = in_process(store_dir, values, clients, batch, args.duration)
            print(
                f"  in-process {clients:>3} clients x {batch:>5} readings: {result['vectors_per_s']:>10.0f} "
                f"readings/s, p50 {result['p50']:.3f} ms, p99 {result['p99']:.3f} ms",
                flush=True,
            )
        served = serve_run(store_dir, values, plan, args)
    memory = served.pop("memory_mb")
    scorer = sum(v for k, v in memory.items() if "SensorScorer" in k)
    print(f"\nSensorScorer replica: {scorer:.0f} MB RSS; all Ray processes: {sum(memory.values()):.0f} MB")
    print(f"\n{'clients x readings':>20}{'in-proc readings/s':>20}{'serve readings/s':>18}{'in-proc p50':>13}"
          f"{'serve p50':>11}{'serve p99':>11}")  # fmt: skip
    streamed = {k: served.pop(k) for k in list(served) if k.startswith(("plain", "streams"))}
    for key, a in local.items():
        b = served[key]
        print(f"{key:>20}{a['vectors_per_s']:>20.0f}{b['vectors_per_s']:>18.0f}{a['p50']:>13.3f}{b['p50']:>11.2f}"
              f"{b['p99']:>11.2f}")  # fmt: skip
    if streamed:
        today = streamed["plain, 1 client"]["p50"]
        print(f"\n{'one reading at a time':>40}{'readings/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'p50 / plain 1':>15}")
        for key, r in streamed.items():
            print(f"{key:>40}{r['throughput']:>12.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['p50'] / today:>15.2f}")
    if args.out:
        record = {"in_process": local, "serve": served, "streams": streamed, "memory_mb": memory, "model_bytes": sizes,
                  "settings": vars(args)}  # fmt: skip
        args.out.write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
