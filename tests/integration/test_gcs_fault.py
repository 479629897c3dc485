"""GCS fault tolerance, for real on this machine: Debian's redis-server holds the GCS's state, the GCS is
killed under load, answers keep coming from the running replicas, and the GCS comes back with the
application intact (tests/integration/gcs_fault.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lineguard.registry.store import ModelStore
from lineguard.training.fit_sensor import fit_sensor_line
from lineguard.training.options import SensorFitOptions, SensorTrainOptions
from lineguard.training.sensor_data import read_table
from lineguard.training.synthetic_sensor import write_csv
from tests.support import debian_tool, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_answers_go_on_while_the_gcs_is_away_and_it_comes_back_whole(tmp_path: Path) -> None:
    redis = debian_tool("redis-server", "redis-server")
    port = free_port()
    server = subprocess.Popen(
        [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: subprocess.run([redis.replace("-server", "-cli"), "-p", str(port), "ping"],
                                        capture_output=True, text=True).stdout.strip() == "PONG")  # fmt: skip
        uri = f"file://{tmp_path}/store"
        data = write_csv(tmp_path / "line.csv", rows=1500, seed=4)
        options = SensorFitOptions(train=SensorTrainOptions(epochs=30, workers=0))
        fit_sensor_line("cell-9", data, options, ModelStore(uri))
        reading = ",".join(f"{v:.4f}" for v in read_table(data).values[0])
        out = tmp_path / "result.json"
        command = [sys.executable, "-m", "tests.integration.gcs_fault", "--store", uri, "--line", "cell-9"]
        command += ["--reading", reading, "--redis", f"127.0.0.1:{port}", "--out", str(out)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-4000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = json.loads(out.read_text())
    print(json.dumps(result, indent=1))
    away = result["while_away"]
    assert away["answered"] > 0 and away["failed"] == 0, result  # the data path needs no GCS
    assert result["recovered_s"] is not None and result["applications"] == ["lineguard"], result
    assert result["after"] == 200 and result["failed_total"] == 0, result
