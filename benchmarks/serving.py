"""Serving benchmark: one fitted line scored in process and through Ray Serve over HTTP, side by side.

    python -m benchmarks.serving [--data DATASETS/battery_weld/welding] [--clients 1,8,32]
                                 [--set Backbone.num_replicas=2] [--set Ingress.user_config.batch_max_size=8]
                                 [--backbone-runtime torch,openvino,openvino:bf16]

In process: N client threads call the pipeline (decode, resize, backbone, head) directly, with torch
on 1 and on 2 threads; the better of the two is the baseline. Through Serve: the application from
``serve_config.yaml`` (overrides with ``--set``) on a private local Ray, N concurrent HTTP clients
(aiohttp, on this machine). Also reported: cold start (Ray start + ``serve.run`` to the first 200),
and the resident memory of every Ray process while serving. ``--backbone-runtime torch,openvino`` serves
the application once per runtime of the Backbone (serve_config.yaml's ``backbones[].runtime``), one after
the other in the same run, and prints their throughputs side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

from benchmarks.datasets import DATASETS
from benchmarks.timing import http_load, thread_load
from lineguard.cli import launcher

DEFAULT_DATA = DATASETS / "battery_weld" / "welding"


def fit_line(store_dir: Path, data: Path | None) -> tuple[str, list[bytes]]:
    from lineguard.registry.store import ModelStore
    from lineguard.training.data import discover
    from lineguard.training.fit_image import FitOptions, fit_image_line
    from lineguard.training.synthetic import write_line

    if data is None or not data.is_dir():
        data = write_line(store_dir.parent / "synthetic", size=256)
    fit_image_line("bench", data, FitOptions(evaluate=False, progress=False), ModelStore(store_dir))
    dataset = discover(data)
    samples = (dataset.test or dataset.train)[:48]
    return str(data), [s.path.read_bytes() for s in samples]


def in_process(store_dir: Path, images: list[bytes], clients: int, duration: float, threads: int) -> dict[str, Any]:
    import torch

    from lineguard.models.spec import Runtime
    from lineguard.registry.image_models import load_image_model
    from lineguard.registry.store import ModelStore

    torch.set_num_threads(threads)
    _, model = load_image_model(ModelStore(store_dir), "bench", runtime=Runtime(device="cpu"))
    for data in images[:3]:
        model.predict_bytes([data])
    result = thread_load(lambda i: model.predict_bytes([images[i % len(images)]]), clients, duration)
    return {**result, "threads": threads}


def image_form(images: list[bytes]) -> Callable[[int], dict[str, Any]]:
    """``session.post`` arguments of image ``i``: a fresh multipart form each time (a form is read once)."""

    def request(i: int) -> dict[str, Any]:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("file", images[i % len(images)], filename="part.png", content_type="image/png")
        return {"data": form}

    return request


def ray_processes() -> list[tuple[int, str, float, float]]:
    """``(pid, name, resident MB, of which shared MB)`` of every Ray process (and HAProxy) on this machine,
    from /proc. Shared memory is mostly Ray's object store, which lives in the raylet: its pages count in
    the raylet's resident memory once touched, up to the store's size, and are not the raylet's own."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
            fields = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
            rss_kb, shared_kb = int(fields["VmRSS"].split()[0]), int(fields.get("RssShmem", "0 kB").split()[0])
        except (OSError, KeyError, ValueError):
            continue
        if "ray::" in command:
            name = command.split()[0]
        elif any(k in command for k in ("raylet", "gcs_server", "haproxy", "dashboard", "log_monitor", "runtime_env")):
            name = Path(command.split()[0]).name
        else:
            continue
        found.append((int(entry.name), name, rss_kb / 1024, shared_kb / 1024))
    return found


def ray_memory_mb() -> dict[str, float]:
    """Resident memory of Ray's processes (and HAProxy), summed by process name."""
    totals: dict[str, float] = {}
    for _, name, mb, _ in ray_processes():
        totals[name] = totals.get(name, 0.0) + mb
    return totals


def parse_sets(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``Backbone.user_config.threads=2`` -> ``{"Backbone": {"user_config": {"threads": 2}}}``."""
    changes: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        parts = key.split(".")
        node = changes.setdefault(parts[0], {})
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = json.loads(raw) if raw[:1] in "[{0123456789-tfn" else raw
    return changes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_application_flags(parser: argparse.ArgumentParser) -> None:
    """The flags :func:`start_application` reads (every benchmark that runs the application takes them)."""
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "serve_config.yaml")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="DEPLOYMENT.KEY=VALUE",
        help="override a deployment option, e.g. Backbone.num_replicas=2",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable for the Ray processes, e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=0",
    )
    parser.add_argument("--no-haproxy", action="store_true", help="Serve's Python proxy instead of HAProxy")
    parser.add_argument("--no-grpc", action="store_true", help="object-store hops instead of gRPC")
    parser.add_argument("--no-history", action="store_true", help="answers not recorded (no Recorder)")
    parser.add_argument(
        "--backbone-runtime",
        default=None,
        help="torch | onnx | openvino | auto, with :PRECISION if wanted, or several: torch,openvino,openvino:bf16",
    )


def conclude(result: dict[str, Any], out: Path | None, settings: dict[str, Any]) -> NoReturn:
    """Say whether the targets were met, write ``result`` to ``out`` (JSON) and exit 1 when they were not."""
    print("targets met" if result["targets_met"] else "TARGETS MISSED")
    if out:
        out.write_text(json.dumps({"settings": settings, **result}, indent=2, default=str))
    raise SystemExit(0 if result["targets_met"] else 1)


def wait_healthy(base: str, timeout_s: float = 120.0) -> None:
    """Wait until ``base``/healthz answers 200 (the application and its history are up)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{base}/healthz", timeout=10).status_code != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"the application did not become healthy in {timeout_s:.0f} s")
        time.sleep(0.5)


def start_application(store_dir: Path, args: argparse.Namespace, runtime: str | None = None) -> tuple[int, float]:
    """A private local Ray running the application of ``args.config`` (with ``args.set`` and ``args.env``,
    and the Backbone on ``runtime`` if given) on a free port; returns the port and when ``serve.run`` began."""
    import ray
    from ray import serve

    from lineguard.deployments import config_file
    from lineguard.deployments.app import bind_graph

    app = config_file.application(config_file.read(args.config))
    history = {"enabled": False} if args.no_history else None
    backbones = None
    if runtime is not None:  # "openvino" or "openvino:bf16": the runtime and, optionally, its precision
        name, _, precision = runtime.partition(":")
        chosen = {"runtime": name, **({"precision": precision} if precision else {})}
        backbones = [{**b, **chosen} for b in app["args"]["backbones"]]
    app_args = config_file.app_args(app, store=str(store_dir), history=history, backbones=backbones)
    options = config_file.deployment_options(app, **parse_sets(args.set))
    # the application's runtime_env and --env reach every replica through Ray's environment
    if not args.no_haproxy:
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        os.environ.update(launcher.haproxy_binary(os.environ))  # as `lineguard serve` starts it
    os.environ["RAY_SERVE_USE_GRPC_BY_DEFAULT"] = "0" if args.no_grpc else "1"
    os.environ.update(config_file.env_vars(app))
    os.environ.update(dict(pair.split("=", 1) for pair in args.env))
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    run_started = time.perf_counter()
    serve.run(bind_graph(app_args, options), name="lineguard", route_prefix="/")
    return port, run_started


def serve_run(
    store_dir: Path,
    images: list[bytes],
    levels: list[int],
    duration: float,
    args: argparse.Namespace,
    runtime: str | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    import httpx
    import ray
    from ray import serve

    port, run_started = start_application(store_dir, args, runtime)
    url = f"http://127.0.0.1:{port}/v1/lines/bench/predict"
    while True:
        try:
            if httpx.post(url, files={"file": ("a.png", images[0])}, timeout=30).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    ready = time.perf_counter()
    results: dict[str, Any] = {
        "cold_start_s": round(ready - started, 2),
        "serve_run_to_first_200_s": round(ready - run_started, 2),
        "levels": {},
    }
    asyncio.run(http_load(url, image_form(images), 8, 3.0))  # warm-up: every replica and cache
    backbone = serve.get_deployment_handle("Backbone", "lineguard")
    results["backbone"] = backbone.describe.remote().result(timeout_s=30)
    on = f"{results['backbone']['runtime']} {results['backbone']['precision']}"
    for clients in levels:
        results["levels"][clients] = asyncio.run(http_load(url, image_form(images), clients, duration))
        print(
            f"  serve ({on}) {clients:>3} clients: {results['levels'][clients]['throughput']:.1f} req/s, "
            f"p50 {results['levels'][clients]['p50']:.1f} ms",
            flush=True,
        )
    results["memory_mb"] = ray_memory_mb()
    serve.shutdown()
    ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="data set to fit the line on (synthetic if absent)"
    )
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    add_application_flags(parser)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process baseline")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    runtimes: list[str | None] = args.backbone_runtime.split(",") if args.backbone_runtime else [None]
    with tempfile.TemporaryDirectory(prefix="lineguard-serve-bench-") as tmp:
        store_dir = Path(tmp) / "store"
        data, images = fit_line(store_dir, args.data)
        print(f"line fitted on {data}; {len(images)} images in rotation", flush=True)
        local: dict[int, dict[str, Any]] = {}
        for clients in [] if args.no_in_process else levels:
            runs = [in_process(store_dir, images, clients, args.duration, threads) for threads in (1, 2)]
            local[clients] = max(runs, key=lambda r: r["throughput"])
            print(
                f"  in-process {clients:>3} clients: {local[clients]['throughput']:.1f} req/s, "
                f"p50 {local[clients]['p50']:.1f} ms (torch threads {local[clients]['threads']})",
                flush=True,
            )
        served = {runtime: fresh_serve_run(store_dir, images, levels, args, runtime) for runtime in runtimes}
    rows = [row for runtime, run in served.items() for row in report(run, local, levels, runtime)]
    if len(served) > 1:
        compare(served, levels)
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "served": served, "settings": vars(args)}, indent=2, default=str))


def fresh_serve_run(
    store_dir: Path, images: list[bytes], levels: list[int], args: argparse.Namespace, runtime: str | None
) -> dict[str, Any]:
    """:func:`serve_run` in a process of its own: Ray does not start again in a process it ran in."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(serve_run, store_dir, images, levels, args.duration, args, runtime).result()


def report(
    served: dict[str, Any], local: dict[int, dict[str, Any]], levels: list[int], runtime: str | None
) -> list[dict[str, Any]]:
    backbone = served["backbone"]
    asked = " (--backbone-runtime)" if runtime else ""
    print(f"\nBackbone on {backbone['runtime']} ({backbone['precision']}){asked}")
    print(
        f"cold start (ray.init + serve.run to the first 200): {served['cold_start_s']} s "
        f"(serve.run to first 200: {served['serve_run_to_first_200_s']} s)"
    )
    memory = served["memory_mb"]
    print(
        f"memory while serving: {sum(memory.values()):.0f} MB RSS in Ray's processes "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(memory.items(), key=lambda kv: -kv[1])[:8])
    )
    print(
        f"\n{'clients':>8}{'in-proc req/s':>15}{'serve req/s':>13}{'ratio':>8}{'in-proc p50':>13}{'serve p50':>11}"
        f"{'overhead p50':>14}{'in-proc p99':>13}{'serve p99':>11}{'errors':>8}"
    )
    nothing = {"throughput": float("nan"), "p50": float("nan"), "p99": float("nan")}
    rows = []
    for clients in levels:
        a, b = local.get(clients, nothing), served["levels"][clients]
        row = {
            "backbone": backbone,
            "clients": clients,
            "in_process": a,
            "serve": b,
            "ratio": b["throughput"] / a["throughput"],
            "overhead_p50_ms": b["p50"] - a["p50"],
        }
        rows.append(row)
        print(
            f"{clients:>8}{a['throughput']:>15.1f}{b['throughput']:>13.1f}{row['ratio']:>8.2f}{a['p50']:>13.1f}"
            f"{b['p50']:>11.1f}{row['overhead_p50_ms']:>14.1f}{a['p99']:>13.1f}{b['p99']:>11.1f}"
            f"{sum(b['errors'].values()):>8}"
        )
    return rows


def compare(served: dict[str | None, dict[str, Any]], levels: list[int]) -> None:
    """Requests/s through Serve per Backbone runtime, each against the first one given."""
    names = [f"{r['backbone']['runtime']} {r['backbone']['precision']}" for r in served.values()]
    runs = list(served.values())
    print(f"\n{'clients':>8}" + "".join(f"{n:>22}" for n in names))
    for clients in levels:
        base = runs[0]["levels"][clients]["throughput"]
        cells = [r["levels"][clients]["throughput"] for r in runs]
        print(f"{clients:>8}" + "".join(f"{c:>13.1f} ({c / base:4.2f}x)" for c in cells))


if __name__ == "__main__":
    main()
