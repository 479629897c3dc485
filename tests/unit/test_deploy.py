"""The files of deploy/ for one machine: the systemd unit is valid for systemd and runs a command the CLI
takes, with a stop that lets the history outbox flush (tests/integration/test_serve_run.py stops
``lineguard serve`` with the same SIGTERM and counts the history's rows afterwards)."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lineguard.cli.main import build_parser

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
