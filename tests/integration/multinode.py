"""A two-node Ray cluster on this machine runs the application of serve_config.yaml; then a node goes.

Run by ``test_multinode.py`` in its own process (it starts its own Ray):

    python -m tests.integration.multinode --store file:///tmp/store --line L --reading 1,2,... --out result.json

Both "nodes" share this machine's address, so HTTP is served by one proxy on the head node (on a
real cluster every node runs one) and Serve's Python proxy is used (HAProxy's fixed side ports would
collide between the two nodes).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import free_port

SPREAD = ("Scorer", "SensorScorer", "Preprocessor")  # two replicas each, so both nodes get some


def replica_nodes() -> dict[str, list[str]]:
    """Node id of every live Serve replica, by deployment name."""
    import ray._private.state as state

    nodes: dict[str, list[str]] = {}
    for actor in state.actors().values():
        name = actor.get("Name") or ""
        if actor.get("State") == "ALIVE" and name.startswith("SERVE_REPLICA::lineguard#"):
            deployment = name.split("#")[1]
            nodes.setdefault(deployment, []).append(actor["Address"]["NodeID"])
    return nodes


def _whole_again(serve: Any, lost_node: str) -> bool:
    status = serve.status().applications["lineguard"]
    healthy = status.status == "RUNNING" and all(d.status == "HEALTHY" for d in status.deployments.values())
    return healthy and lost_node not in {n for nodes in replica_nodes().values() for n in nodes}


def run(store: str, line: str, reading: list[float]) -> dict[str, Any]:
    os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "0"
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from lineguard.deployments import config_file
    from lineguard.deployments.app import bind_graph

    app = config_file.application(config_file.read())
    os.environ.update(config_file.env_vars(app))
    # the head alone must fit every replica once the worker is gone (2.65 CPUs of replicas)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3})
    worker = cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, log_to_driver=False)
    result: dict[str, Any] = {"nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]], "worker": worker.node_id}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port, "location": "HeadOnly"})
    options = config_file.deployment_options(app, **{name: {"num_replicas": 2} for name in SPREAD})
    serve.run(bind_graph(config_file.app_args(app, store=store), options), name="lineguard", route_prefix="/")
    url = f"http://127.0.0.1:{port}/v1/lines/{line}/predict"
    client = httpx.Client(timeout=30)
    answer = client.post(url, json={"values": reading})
    result["before"] = {"status": answer.status_code, "body": answer.json()}
    result["replica_nodes"] = replica_nodes()

    # lose the worker node under light load; every request is counted until the service is whole
    # again (no replica left on the lost node, every deployment healthy) and answers 20 more in a row
    cluster.remove_node(worker, allow_graceful=False)
    removed = time.perf_counter()
    failures, successes, streak = 0, 0, 0
    recovered_s: float | None = None
    while time.perf_counter() - removed < 180:
        try:
            ok = client.post(url, json={"values": reading}).status_code == 200
        except httpx.HTTPError:
            ok = False
        successes, failures = successes + ok, failures + (not ok)
        streak = streak + 1 if ok else 0
        if recovered_s is None and _whole_again(serve, worker.node_id):
            recovered_s = round(time.perf_counter() - removed, 2)
            streak = 0
        if recovered_s is not None and streak >= 20:
            break
        time.sleep(0.05)
    result["after"] = {
        "failures": failures,
        "successes": successes,
        "recovered_s": recovered_s,
        "replica_nodes": replica_nodes(),
        "status": client.post(url, json={"values": reading}).status_code,
    }
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()
    return result


def scenario_flags() -> argparse.ArgumentParser:
    """The flags of a scenario run in its own process: the store, the line, one reading, the result file."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--line", required=True)
    parser.add_argument("--reading", required=True, type=lambda t: [float(x) for x in t.split(",")])
    parser.add_argument("--out", type=Path, required=True)
    return parser


def main() -> None:
    args = scenario_flags().parse_args()
    result = run(args.store, args.line, args.reading)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
