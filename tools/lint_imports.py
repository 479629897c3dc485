"""import-linter's contracts (``[tool.importlinter]`` in ``pyproject.toml``) over the ``lineguard`` package
(``python -m tools.lint_imports``; ``make lint`` runs it).

import-linter finds a package by walking its folder, and ``lineguard``'s subpackages live in the
repository's top-level folders; so the check runs on a view of the package made of symbolic links
(``build/package-view/lineguard``, rebuilt each time), where every ``lineguard.*`` module is where its
dotted name says. Extra arguments go to ``lint-imports`` (``--show-timings``, ``--verbose``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tools.layout import ROOT, link_view


def run(
    argv: list[str], view: Path = ROOT / "build" / "package-view", overrides: Mapping[str, Path] | None = None
) -> subprocess.CompletedProcess[str]:
    """lint-imports over a fresh view of the package (``overrides``: see :func:`tools.layout.link_view`)."""
    link_view(view, overrides=overrides)
    path = os.pathsep.join(p for p in (str(view), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    command = [str(Path(sys.executable).with_name("lint-imports")), str(ROOT / "pyproject.toml"), *argv]
    # lint-imports puts its working folder first on sys.path
    return subprocess.run(command, env=env, cwd=view, capture_output=True, text=True, check=False)


def main(argv: list[str]) -> int:
    done = run(argv)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
