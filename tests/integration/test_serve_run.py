"""``lineguard serve`` runs ``serve run serve_config.yaml`` for real: ready, answering, stopped cleanly, and its
front door holds against clients that trickle their headers or bodies."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from lineguard.cli.launcher import descendants
from lineguard.registry.store import ModelStore
from lineguard.training.fit_image import fit_image_line
from lineguard.training.options import FitOptions
from tests.support import bmp_frame, free_port, outward_address, private_serve_env

ROOT = Path(__file__).resolve().parents[2]


def test_lineguard_serve_runs_the_config_file(synthetic_line: Path, tmp_path: Path) -> None:
    """A second Serve with HAProxy on this machine beside the session's (:func:`private_serve_env`), so the
    test passes in any order."""
    store = ModelStore(tmp_path / "store")
    fit_image_line(
        "line-1", synthetic_line, FitOptions(head_params={"bank_size": 512}, evaluate=False, progress=False), store
    )
    port, stats_port = free_port(), free_port()
    haproxy = Path(tempfile.mkdtemp(prefix="lg-haproxy-", dir="/tmp"))  # short: a socket path has 107 bytes
    env = {
        **os.environ,
        **private_serve_env(haproxy, stats_port),
        "LINEGUARD_HAPROXY_HEADER_TIMEOUT_S": "2",  # the headers' time limit (10 s as shipped), short here
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
        answer = predict(url, image)
        assert answer.status_code == 200 and answer.json()["is_anomaly"] is True, answer.text
        frame = bmp_frame(4_700_000)  # over Ray's 4 MiB gRPC default between replicas: a 503 once
        large = httpx.post(
            f"{url}/v1/lines/line-1/predict", files={"file": ("frame.bmp", frame, "image/bmp")}, timeout=120
        )
        assert large.status_code == 200, large.text
        check_the_front_door(port, stats_port)
        check_only_loopback(haproxy, [stats_port, int(env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"])])
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
        # the last answers before the stop: their rows may still be in the ingress's outbox when SIGTERM comes
        with ThreadPoolExecutor(8) as pool:
            last = list(pool.map(lambda _: predict(url, image).status_code, range(16)))
        answered = 2 + last.count(200)
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
    with sqlite3.connect(Path(store.root) / "history.db") as db:  # a graceful stop writes what the outbox held
        (recorded,) = db.execute("SELECT count(*) FROM predictions").fetchone()
    assert recorded == answered, f"{answered} predictions answered, {recorded} in the history after the stop"
    shutil.rmtree(haproxy, ignore_errors=True)


def predict(url: str, image: Path) -> httpx.Response:
    return httpx.post(f"{url}/v1/lines/line-1/predict", files={"file": (image.name, image.read_bytes())}, timeout=60)


def check_the_front_door(port: int, stats_port: int) -> None:
    """HAProxy as `lineguard serve` starts it: its stats page answers on loopback; a client that trickles its
    headers is cut after the headers' limit; 300 that trickle their bodies get a JSON 408 after the ingress's
    body_timeout_s (or a JSON 503 beyond max_in_flight, at once) while reads keep being answered."""
    assert httpx.get(f"http://127.0.0.1:{stats_port}/stats", timeout=10).status_code == 200
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    slow.sendall(b"GET /v1/lines HTTP/1.1\r\nHost: lineguard\r\n")
    started = time.monotonic()
    while not select.select([slow], [], [], 0.5)[0] and time.monotonic() - started < 10:
        slow.sendall(b"X")  # a byte at a time keeps ``timeout client`` from cutting it; the headers' limit does
    assert slow.recv(100).startswith(b"HTTP/1.1 408") and time.monotonic() - started < 5
    slow.close()

    head = (
        b"POST /v1/lines/line-1/predict HTTP/1.1\r\nHost: lineguard\r\nContent-Length: 100000\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
        b'Content-Disposition: form-data; name="file"; filename="part.png"\r\nContent-Type: image/png\r\n\r\n'
    )  # then the file's bytes, one a second
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
    for client in clients:
        client.sendall(head)
    answers: dict[socket.socket, bytes] = {}
    reads: list[float] = []
    started = time.monotonic()
    while len(answers) < len(clients) and time.monotonic() - started < 40:
        for client in select.select([c for c in clients if c not in answers], [], [], 1.0)[0]:
            answers[client] = whole_response(client)
        for client in clients:
            if client not in answers:
                with contextlib.suppress(OSError):  # answered meanwhile: read on the next round
                    client.sendall(b"-")
        if len(reads) < 5 and time.monotonic() - started > 2:  # every trickler has reached the ingress
            begun = time.monotonic()
            assert httpx.get(f"http://127.0.0.1:{port}/v1/lines", timeout=10).status_code == 200
            reads.append(time.monotonic() - begun)
    for client in clients:
        client.close()
    assert len(reads) == 5 and max(reads) < 3, f"reads under 300 trickling uploads took {reads} s"
    assert len(answers) == len(clients), f"{len(clients) - len(answers)} trickling uploads were never answered"
    statuses = {int(raw.split(b" ", 2)[1]) for raw in answers.values()}
    assert statuses <= {408, 503} and 408 in statuses, {raw[:400] for raw in answers.values()}
    late = next(raw for raw in answers.values() if b" 408 " in raw.split(b"\r\n", 1)[0])
    assert "body_timeout_s" in json.loads(late.split(b"\r\n\r\n", 1)[1])["detail"]


def whole_response(client: socket.socket) -> bytes:
    """One HTTP response off ``client``: its head and as much body as its Content-Length says."""
    raw = b""
    while b"\r\n\r\n" not in raw and (chunk := client.recv(4096)):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lengths = [line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    length = int(lengths[0]) if lengths else 0
    while len(body) < length and (chunk := client.recv(4096)):
        body += chunk
    return head + b"\r\n\r\n" + body


def check_only_loopback(haproxy: Path, ports: list[int]) -> None:
    """With ``--host 127.0.0.1`` nothing answers on the machine's network address: not the stats page, the
    fallback proxy or the ingress replicas' direct ports (read from HAProxy's configuration)."""
    address = outward_address()
    if address is None:  # a machine with loopback only: nothing to reach around the front door
        return
    config = next(haproxy.glob("*/haproxy.cfg")).read_text()
    replicas = [int(port) for port in re.findall(r"server SERVE_REPLICA\S* [0-9.]+:(\d+)", config)]
    assert replicas, config
    for port in ports + replicas:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, port), timeout=2).close()


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
