"""Multi-node: the application from serve_config.yaml on a two-node Ray cluster (this machine), with
replicas on both nodes, reading models from a store URI; it keeps answering after a node is lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lineguard.registry.store import ModelStore
from lineguard.training.fit_sensor import fit_sensor_line
from lineguard.training.options import SensorFitOptions
from lineguard.training.options import SensorTrainOptions as TrainOptions
from lineguard.training.sensor_data import read_table
from lineguard.training.synthetic_sensor import write_csv

ROOT = Path(__file__).resolve().parents[2]


def test_two_nodes_serve_and_survive_losing_one(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/store"  # models on shared storage, by URI (s3:// and gs:// on a cluster)
    data = write_csv(tmp_path / "line.csv", rows=1500, seed=2)
    fit_sensor_line("cell-7", data, SensorFitOptions(train=TrainOptions(epochs=30, workers=0)), ModelStore(uri))
    reading = ",".join(f"{v:.4f}" for v in read_table(data).values[0])
    out = tmp_path / "result.json"
    command = [sys.executable, "-m", "tests.integration.multinode", "--store", uri, "--line", "cell-7"]
    command += ["--reading", reading, "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    print(json.dumps(result["after"], indent=1))
    assert len(result["nodes"]) == 2
    assert result["before"]["status"] == 200 and result["before"]["body"]["line"] == "cell-7"
    used = {node for nodes in result["replica_nodes"].values() for node in nodes}
    assert used == set(result["nodes"]), result["replica_nodes"]  # replicas on both nodes
    after = result["after"]
    assert after["recovered_s"] is not None, after  # replicas rescheduled onto the remaining node
    assert after["status"] == 200 and after["successes"] >= 20
    assert result["worker"] not in {n for nodes in after["replica_nodes"].values() for n in nodes}
