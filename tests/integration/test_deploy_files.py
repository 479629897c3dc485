"""The files of deploy/: the systemd unit is valid for systemd and runs a command the CLI takes, with a stop
that lets the history outbox flush (tests/integration/test_serve_run.py stops ``lineguard serve`` with the
same SIGTERM and counts the history's rows afterwards); Prometheus's configuration and rules load, the
alerts fire on made-up series and every dashboard query parses (tests/integration/test_prometheus.py runs
them against the live service); the compose file renders with every file it mounts."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lineguard.cli.main import build_parser
from tests.support import debian_tool

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "lineguard.service"
VENV = "/opt/lineguard/venv"  # where the unit's comments install LineGuard


def service_section() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return dict(parser["Service"])


def test_the_unit_runs_lineguard_serve_on_loopback_and_stops_it_gently() -> None:
    service = service_section()
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == f"{VENV}/bin/lineguard"
    args = build_parser().parse_args(argv[1:])  # flags the CLI really has
    assert args.command == "serve" and args.host == "127.0.0.1" and args.store == "/var/lib/lineguard/store"
    assert service["User"] != "root" and service["Restart"] == "on-failure"
    # SIGTERM to the launcher alone (it stops Serve, then Ray); the rest of the cgroup only after the timeout
    assert service["KillMode"] == "mixed" and service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > 20 + 30  # the outbox's flush (20 s) and Serve's graceful shutdown


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package has it)")
    unit = tmp_path / "lineguard.service"
    unit.write_text(UNIT.read_text().replace(VENV, sys.prefix))  # ExecStart must name a real executable
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on an unknown key or a bad value, and only says so: any word from it is a failure
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "lineguard.json"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def test_the_rules_load_and_their_alerts_fire_on_made_up_series() -> None:
    promtool = debian_tool("promtool", "prometheus")
    for command in (["check", "rules", "lineguard-rules.yml"], ["test", "rules", "lineguard-rules.test.yml"]):
        done = subprocess.run([promtool, *command], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_the_scrape_configuration_and_every_dashboard_expression_parse(tmp_path: Path) -> None:
    promtool = debian_tool("promtool", "prometheus")
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["rule_files"] = [str(PROMETHEUS / "lineguard-rules.yml")]  # where the compose file mounts it
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    # each panel's query as a recording rule: promtool parses it as Prometheus would
    rules = [{"record": f"lineguard:panel_{i}", "expr": expr} for i, expr in enumerate(dashboard_expressions())]
    (tmp_path / "panels.yml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    for command in (["check", "config", "prometheus.yml"], ["check", "rules", "panels.yml"]):
        done = subprocess.run([promtool, *command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_shows_what_an_operator_needs() -> None:
    titles = " | ".join(p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"])
    for topic in ("per second", "flagged", "p50 / p99", "drift", "outbox", "cpu per replica", "memory per replica"):
        assert topic in titles, f"no panel on {topic!r}: {titles}"


def test_the_compose_file_renders_with_every_file_it_mounts() -> None:
    compose = debian_tool("docker-compose", "docker-compose")
    env = {**os.environ, "POSTGRES_PASSWORD": "test-only"}
    done = subprocess.run([compose, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    assert set(rendered["services"]) == {"lineguard", "postgres", "prometheus", "grafana"}
    for service in rendered["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("/") and "/store" not in source:  # a file or folder of this checkout
                assert Path(source).exists(), f"compose mounts {source}, which does not exist"
    assert (ROOT / rendered["services"]["lineguard"]["build"]["dockerfile"]).is_file()
    lineguard = rendered["services"]["lineguard"]["command"][-1]
    assert "--history-url env:LINEGUARD_HISTORY_URL" in " ".join(lineguard.split())
    unset = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    refused = subprocess.run(
        [compose, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=120, env=unset
    )
    assert refused.returncode != 0 and "set it in .env" in refused.stderr
