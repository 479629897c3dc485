"""``pip install ./edge`` into a fresh virtual environment, from the package registry as a camera PC would:
it brings no torch, torchvision, timm or Ray, and its ``lineguard-edge`` scores a bundle and serves it."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import httpx

from tests.edge_bundles import write_bundle
from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "timm", "ray", "lineguard")


def test_the_edge_distribution_installs_and_runs_without_torch(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT / "edge")], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stdout + install.stderr
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "lineguard-edge" in names and "onnxruntime" in names and not names & set(HEAVY), sorted(names)
    bundle = write_bundle(tmp_path / "spindle")
    done = subprocess.run(
        [str(env_dir / "bin" / "lineguard-edge"), "predict", str(bundle), "--values", "32,5,1.1"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "anomaly", done.stderr
    port = free_port()
    server = subprocess.Popen(
        [str(env_dir / "bin" / "lineguard-edge"), "serve", str(bundle), "--port", str(port),
         "--history", str(tmp_path / "h.sqlite")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), timeout_s=60)
        answer = httpx.post(f"{url}/anomaly", json={"values": [20, 5, 1]}, timeout=10).json()
        assert answer["status"] == "normal"
        assert httpx.get(f"{url}/prediction_history", timeout=10).json()[0]["id"] == answer["prediction_id"]
    finally:
        server.terminate()  # SIGTERM: the server stops its loop and closes the history
        assert server.wait(timeout=30) == 0, server.stderr.read() if server.stderr else ""


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
