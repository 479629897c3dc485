"""mypy over the ``lineguard`` package as it is laid out (``python -m tools.typecheck``; ``make lint`` runs it).

mypy names a module after its path, so ``models/heads/base.py`` would be ``models.heads.base``; the code
imports ``lineguard.models.heads.base``. This hands mypy every file with its real module name (from the
``package-dir`` mapping), the settings of ``[tool.mypy]`` in ``pyproject.toml``, and reports with the real
paths. Extra arguments are passed to mypy (``--no-incremental``, say).
"""

from __future__ import annotations

import sys

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

from tools.layout import ROOT, modules

TOOLS = sorted((ROOT / "tools").glob("*.py"))


def main(argv: list[str]) -> int:
    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), *argv, "-c", "pass"])
    named = [*modules(), *(("tools" if p.stem == "__init__" else f"tools.{p.stem}", p) for p in TOOLS)]
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
