"""Head-node fault tolerance on this machine: Ray's GCS keeps its state in an external Redis, the GCS
process is killed under load, the running replicas keep answering, and a new GCS takes the cluster back
with the application intact (what KubeRay's ``gcsFaultToleranceOptions`` gives a RayService when its head
pod restarts).

Run by ``test_gcs_fault.py`` in its own process (it starts its own Ray):

    python -m tests.integration.gcs_fault --store file:///tmp/store --line L --reading 1,2,... \
        --redis 127.0.0.1:6379 --out result.json
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import httpx

from tests.integration.multinode import scenario_flags
from tests.support import free_port

AWAY_S = 10.0  # how long the GCS stays dead


def run(store: str, line: str, reading: list[float], redis: str) -> dict[str, Any]:
    os.environ.update(
        RAY_SERVE_ENABLE_HA_PROXY="0",  # Serve's proxy: HAProxy's fixed side ports are the session's
        RAY_REDIS_ADDRESS=redis,  # the GCS writes its tables there, and a new GCS reads them back
        RAY_external_storage_namespace="lineguard-gcs-test",
        RAY_gcs_rpc_server_reconnect_timeout_s="60",  # raylets and workers wait this long for a GCS
    )
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from lineguard.deployments import config_file
    from lineguard.deployments.app import bind_graph

    app = config_file.application(config_file.read())
    os.environ.update(config_file.env_vars(app))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
    head = cluster.head_node
    assert head is not None
    ray.init(address=cluster.address, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = config_file.app_args(app, store=store, history={"enabled": False})
    serve.run(bind_graph(args, config_file.deployment_options(app)), name="lineguard", route_prefix="/")
    url = f"http://127.0.0.1:{port}/v1/lines/{line}/predict"

    outcomes: list[tuple[float, bool]] = []
    stop = threading.Event()

    def load() -> None:  # one client without pause: the bounded load
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    ok = client.post(url, json={"values": reading}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                outcomes.append((time.monotonic(), ok))

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(3)
    killed = time.monotonic()
    head.kill_gcs_server()
    time.sleep(AWAY_S)
    restarted = time.monotonic()
    head.start_gcs_server()
    recovered_s = None
    while time.monotonic() - restarted < 120:
        try:  # the control plane answers again: Serve's controller, through the new GCS
            status = serve.status().applications["lineguard"]
            if status.status == "RUNNING" and all(d.status == "HEALTHY" for d in status.deployments.values()):
                recovered_s = round(time.monotonic() - restarted, 2)
                break
        except Exception:
            pass
        time.sleep(0.5)
    time.sleep(2)
    stop.set()
    loader.join()
    away = [ok for at, ok in outcomes if killed <= at < restarted]
    result = {
        "answered_before": sum(ok for at, ok in outcomes if at < killed),
        "while_away": {"answered": sum(away), "failed": len(away) - sum(away), "seconds": AWAY_S},
        "failed_total": sum(not ok for _, ok in outcomes),
        "requests_total": len(outcomes),
        "recovered_s": recovered_s,
        "applications": sorted(serve.status().applications),
        "after": httpx.post(url, json={"values": reading}, timeout=30).status_code,
    }
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()
    return result


def main() -> None:
    parser = scenario_flags()
    parser.add_argument("--redis", required=True, help="host:port of the Redis the GCS keeps its state in")
    args = parser.parse_args()
    result = run(args.store, args.line, args.reading, args.redis)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
