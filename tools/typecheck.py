"""mypy over the ``lineguard`` package as it is laid out, and over ``tools``, ``tests`` and ``benchmarks``
(``python -m tools.typecheck``; ``make lint`` runs it).

mypy names a module after its path, so ``models/heads/base.py`` would be ``models.heads.base``; the code
imports ``lineguard.models.heads.base``. This hands mypy every file with its real module name (from the
``package-dir`` mapping), the settings of ``[tool.mypy]`` in ``pyproject.toml``, and reports with the real
paths. Extra arguments are passed to mypy (``--no-incremental``, say).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

from tools.layout import ROOT, modules

CHECKED_TOO = ("tools", "tests", "benchmarks")  # checked with the package, under their own names


def _others() -> list[tuple[str, Path]]:
    named = []
    for top in CHECKED_TOO:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            named.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return named


def main(argv: list[str]) -> int:
    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), *argv, "-c", "pass"])
    named = [*modules(), *_others()]
    sources = [BuildSource(str(path.relative_to(ROOT)), name, None) for name, path in named]
    try:
        result = build.build(sources, options)
    except CompileError as err:
        print("\n".join(err.messages), file=sys.stderr)
        return 2
    for line in result.errors:
        print(line)
    files = len({s.path for s in sources})
    if result.errors:
        print(f"mypy: {sum(': error:' in e for e in result.errors)} error(s) in {files} files", file=sys.stderr)
        return 1
    print(f"mypy: no issues in {files} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
