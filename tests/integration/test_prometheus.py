"""Debian's Prometheus against the test session's service, with deploy/prometheus's rules: it scrapes
LineGuard's series, every query of the Grafana dashboard and of the rules runs and the dashboard's return
data, and a burst of defective parts on one line fires LineGuardAnomalyRateHigh."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ray import serve

from tests.integration.conftest import LINES, Service
from tests.support import debian_tool, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "lineguard-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "lineguard.json"
LINE = LINES[1]  # press-b: the burst of defective parts goes there


@pytest.fixture(scope="module")
def prometheus(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = debian_tool("prometheus", "prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    # the shipped rules, evaluated at once rather than after their `for:` (the made-up series of
    # deploy/prometheus/lineguard-rules.test.yml cover the durations)
    (folder / "rules.yml").write_text(re.sub(r"\n(\s+)for: \S+", r"\n\1for: 0s", RULES.read_text()))
    target = f"127.0.0.1:{os.environ['LINEGUARD_TEST_METRICS_PORT']}"  # the session's Ray metrics agent
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(folder / "rules.yml")],
        "scrape_configs": [{"job_name": "lineguard", "static_configs": [{"targets": [target]}]}],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), timeout_s=60)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=30)
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", f"{expr}: {body.get('error')}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(url: str, expr: str) -> float:
    """The one value of ``expr`` (0 while it has none: a series seen once has no increase yet)."""
    result = query(url, expr)
    return float(result[0]["value"][1]) if result else 0.0


def rule_expressions() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_prometheus_scrapes_the_service_and_every_query_runs(prometheus: str, service: Service) -> None:
    defects = sorted((service.data / "test").glob("scratch/*.png"))
    goods = sorted((service.data / "test" / "good").glob("*.png"))

    def post(paths: list[Path]) -> None:
        with service.client() as client:
            for path in paths:
                files = {"file": (path.name, path.read_bytes(), "image/png")}
                assert client.post(f"/v1/lines/{LINE}/predict", files=files).status_code == 200

    post(goods[:2])
    anomalies = f'ray_lineguard_anomalies_total{{line="{LINE}"}}'
    # every ingress replica counts on its own: each must have its series before the burst, or the share it
    # takes of the burst starts a counter that increase() cannot see rise
    replicas = serve.status().applications["lineguard"].deployments["Ingress"].replica_states
    running = sum(n for state, n in replicas.items() if getattr(state, "value", state) == "RUNNING")

    def every_replica_counts() -> bool:
        post(defects[:1])
        time.sleep(0.5)  # Prometheus scrapes every second
        return len(query(prometheus, anomalies)) >= running

    wait_for(every_replica_counts, timeout_s=90, what=f"Prometheus has {anomalies} of {running} ingress replicas")
    post((defects * 8)[:15])  # a burst of defective parts on one line
    burst = f"sum(increase({anomalies}[5m]))"
    wait_for(
        lambda: scalar(prometheus, burst) >= 10,
        timeout_s=90,
        what=lambda: f"{burst} >= 10, now {scalar(prometheus, burst)}",
    )
    assert query(prometheus, "ray_lineguard_requests_total"), "Prometheus has none of LineGuard's series"
    share = f'lineguard:anomaly_share:5m{{line="{LINE}"}}'
    wait_for(lambda: bool(query(prometheus, share)), timeout_s=60, what=f"the recording rule has {share}")
    # some series come on their own clock (the Recorder's drift check each minute, Ray's node metrics every
    # few seconds): every dashboard query and recording rule has data within a minute, not at one instant
    panels = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    recorded = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "record" in r]

    def without_data() -> list[str]:
        return [e for e in panels + recorded if not query(prometheus, e)]

    wait_for(lambda: not without_data(), timeout_s=90, what=lambda: f"queries that return nothing: {without_data()}")
    for expr in rule_expressions():
        query(prometheus, expr)  # every alert's condition runs (it returns data only while it holds)

    def firing() -> bool:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return any(
            a["labels"]["alertname"] == "LineGuardAnomalyRateHigh" and a["labels"].get("line") == LINE
            and a["state"] == "firing" for a in alerts
        )  # fmt: skip

    alerts = f"{prometheus}/api/v1/alerts"
    wait_for(firing, timeout_s=90, what=lambda: f"the alert firing for {LINE}; alerts: {httpx.get(alerts).text[:2000]}")
