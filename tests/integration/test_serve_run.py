"""``lineguard serve`` runs ``serve run serve_config.yaml`` for real: ready, answering, stopped cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from lineguard.cli.launcher import HAPROXY_FILES, descendants
from lineguard.registry.store import ModelStore
from lineguard.training.fit_image import fit_image_line
from lineguard.training.options import FitOptions
from tests.support import bmp_frame, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_lineguard_serve_runs_the_config_file(synthetic_line: Path, tmp_path: Path) -> None:
    """A second Serve with HAProxy on this machine beside the session's: every fixed port and file of Serve's
    HAProxy (side ports, the fallback proxy, configuration, admin socket, server state; two instances
    overwrote each other's, or one answered for the other) is moved to this instance's own, so the test
    passes in any order."""
    store = ModelStore(tmp_path / "store")
    fit_image_line(
        "line-1", synthetic_line, FitOptions(head_params={"bank_size": 512}, evaluate=False, progress=False), store
    )
    port = free_port()
    haproxy = Path(tempfile.mkdtemp(prefix="lg-haproxy-", dir="/tmp"))  # short: a socket path has 107 bytes
    env = {
        **os.environ,
        "RAY_ADDRESS": "local",  # a private Ray, even while the test session's Ray runs
        # HAProxy's fixed side ports, moved so that this instance and the session's can coexist
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        **{key: str(haproxy / name) if name else str(haproxy) for key, name in HAPROXY_FILES.items()},
        # HAProxy's backup server is the Serve proxy's fallback on a fixed port (8500): left there, this
        # instance's HAProxy sent its requests to the session's proxy, and answered for the wrong service
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_port()),
        # the replicas' direct-ingress ports: a range of their own, below the ephemeral ports free_port() uses
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "31100",
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "31999",
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "41100",
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "41999",
    }
    command = [
        sys.executable,
        "-m",
        "lineguard.cli.main",
        "--store",
        str(store.root),
        "serve",
        "--config",
        str(ROOT / "serve_config.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    started = time.monotonic()
    env["TMPDIR"] = str(tmp_path / "tmp")  # where the launcher writes its prepared config (and must clean up)
    env["RAY_TMPDIR"] = "/tmp"  # Ray keeps its default (its socket paths must stay short)
    (tmp_path / "tmp").mkdir()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        ready = None
        while time.monotonic() - started < 120 and process.poll() is None:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    ready = time.monotonic() - started
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert ready is not None, process.stdout.read().decode()[-3000:] if process.stdout else ""
        image = sorted((synthetic_line / "test" / "scratch").glob("*.png"))[0]
        answer = httpx.post(
            f"{url}/v1/lines/line-1/predict", files={"file": (image.name, image.read_bytes())}, timeout=60
        )
        assert answer.status_code == 200 and answer.json()["is_anomaly"] is True, answer.text
        frame = bmp_frame(4_700_000)  # over Ray's 4 MiB gRPC default between replicas: a 503 once
        large = httpx.post(
            f"{url}/v1/lines/line-1/predict", files={"file": ("frame.bmp", frame, "image/bmp")}, timeout=120
        )
        assert large.status_code == 200, large.text
        status = subprocess.run(
            [str(Path(sys.executable).parent / "serve"), "status"],
            env={**env, "RAY_AUTH_MODE": "token"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        # `serve status` talks to this instance's dashboard only when it is the default one on this machine
        assert status.returncode != 0 or "RUNNING" in status.stdout or "HEALTHY" in status.stdout
        tree = descendants(process.pid)
        assert tree, "serve run should have started Ray below the launcher"
    finally:
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)  # a second signal must not cut the cleanup short
        code = process.wait(timeout=60)
    assert code == 0
    deadline = time.monotonic() + 15
    while (alive := [p for p in tree if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive, f"processes left running after SIGTERM: {[_describe(p) for p in alive]}"
    assert not list((tmp_path / "tmp").glob("lineguard-serve-*")), "the launcher left its temporary folder"
    shutil.rmtree(haproxy, ignore_errors=True)


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _describe(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\x00", b" ").decode()
    except OSError:
        return str(pid)
    return f"{pid}: {command[:200]}"
