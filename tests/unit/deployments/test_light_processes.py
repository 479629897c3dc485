"""The light processes stay light: importing the ingress, the preprocessor, the recorder or the sensor scorer
(and the whole tree of modules each imports) loads no torch, no timm and no torchvision. Each is imported in
a fresh interpreter, as a replica imports it. (The static contract in pyproject.toml says the same of every
import statement, lazy ones included; this proves what a process really loads.)"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "timm", "torchvision")
LIGHT = [
    "lineguard.deployments.ingress",
    "lineguard.deployments.preprocessor",
    "lineguard.deployments.recorder",
    "lineguard.deployments.sensor_scorer",
    "lineguard.deployments.app",  # what Serve's controller imports to build the application
    "lineguard.cli.main",  # `lineguard --help`, `lineguard lines`
]


def _heavy_modules_after_importing(*modules: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after importing ``modules``."""
    probe = "import importlib, json, sys; [importlib.import_module(m) for m in sys.argv[1:]]; "
    probe += f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    done = subprocess.run(
        [sys.executable, "-c", probe, *modules], capture_output=True, text=True, check=True, timeout=120
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_importing_a_light_process_loads_no_torch() -> None:
    """All of them in one interpreter: if none of their import trees together holds torch, none does. When
    one does, each is imported alone to name it."""
    if _heavy_modules_after_importing(*LIGHT):
        culprits = {m: found[:5] for m in LIGHT if (found := _heavy_modules_after_importing(m))}
        raise AssertionError(f"light processes that load torch: {culprits}")
