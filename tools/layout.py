"""The package layout, read from ``pyproject.toml``: the ``lineguard.*`` subpackages and the folders they live in.

The installed package is one namespace (``lineguard.models``, ``lineguard.registry``, ...), while the source
keeps one top-level folder per layer (``models/``, ``registry/``, ...), joined by setuptools' ``package-dir``
mapping. Python resolves that mapping through the editable install; static tools (mypy, import-linter) do
not, so the tools here hand them the mapping: :func:`modules` for mypy, :func:`link_view` for import-linter.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = "lineguard"


def mapping(root: Path = ROOT) -> dict[str, Path]:
    """``{"lineguard": lineguard/, "lineguard.models": models/, ...}``: each mapped package and its folder."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {package: root / folder for package, folder in config["package-dir"].items()}


def declared_packages(root: Path = ROOT) -> list[str]:
    return list(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def package_folders(root: Path = ROOT) -> dict[str, Path]:
    """Every package (a folder with ``__init__.py``) under the mapped folders, by its dotted name."""
    found: dict[str, Path] = {}
    for package, folder in mapping(root).items():
        for init in sorted(folder.rglob("__init__.py")):
            parts = init.parent.relative_to(folder).parts
            found[".".join((package, *parts))] = init.parent
    return found


def modules(root: Path = ROOT) -> Iterator[tuple[str, Path]]:
    """``(dotted module name, file)`` for every ``.py`` file of the package."""
    for package, folder in package_folders(root).items():
        for path in sorted(folder.glob("*.py")):
            yield (package if path.name == "__init__.py" else f"{package}.{path.stem}"), path


def link_view(target: Path, root: Path = ROOT, overrides: Mapping[str, Path] | None = None) -> Path:
    """A folder ``target/lineguard/`` that holds the package as one tree of symbolic links (for tools that
    walk the file system), with every other top-level package (``lineguard_edge``) beside it; returns
    ``target``. ``overrides`` puts another folder in place of a mapped package's (a test's altered copy)."""
    view = target / TOP
    for entry in target.glob("*") if target.exists() else ():
        if entry.is_symlink():
            entry.unlink()
    if view.exists():
        shutil.rmtree(view)
    view.mkdir(parents=True)
    for package, folder in (mapping(root) | dict(overrides or {})).items():
        if package == TOP:
            for entry in folder.iterdir():
                if entry.name != "__pycache__":
                    (view / entry.name).symlink_to(entry.resolve())
        elif package.startswith(f"{TOP}."):
            (view / package.removeprefix(f"{TOP}.").replace(".", "/")).symlink_to(folder.resolve())
        else:
            (target / package).symlink_to(folder.resolve())
    return target
