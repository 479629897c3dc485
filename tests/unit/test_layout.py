"""The layout the tools rely on: every package folder is declared for setuptools, and the import contracts
of docs/architecture.md hold and catch a module that breaks them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools.layout import ROOT, declared_packages, mapping, package_folders
from tools.lint_imports import run


def test_every_package_folder_is_declared_for_setuptools() -> None:
    assert sorted(package_folders()) == sorted(declared_packages())


def test_the_import_contracts_hold() -> None:
    done = run([])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("package", "module", "line", "contract"),
    [
        ("lineguard.models", "serving.py", "import ray", "The math knows nothing of serving"),
        ("lineguard.registry", "upward.py", "from lineguard.training import fit_image", "Layers:"),
        ("lineguard.deployments", "recorder.py", "import lineguard.models.tensors", "Light processes never import"),
        ("lineguard.deployments", "services.py", "import lineguard.deployments.api.errors", "Serving:"),
        ("lineguard.deployments", "keys.py", "import lineguard.deployments.api.errors", "No import cycles"),
        ("lineguard_edge", "model.py", "import lineguard.models.tensors", "The edge runtime stands alone"),
        ("lineguard_edge", "runtime.py", "import torch", "The edge runtime stands alone"),
        ("lineguard.deployments", "heavy.py", "import torch", None),  # only the light processes may not
    ],
)
def test_a_module_that_breaks_a_contract_is_caught(
    tmp_path: Path, package: str, module: str, line: str, contract: str | None
) -> None:
    """``line`` added to ``module`` (a new one, or the top of an existing one) in a copy of ``package``."""
    copy = tmp_path / "copy"
    shutil.copytree(mapping()[package], copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(line + "\n" + (target.read_text() if target.exists() else ""))
    done = run([], view=tmp_path / "view", overrides={package: copy})
    if contract is None:
        assert done.returncode == 0, done.stdout
    else:
        assert done.returncode != 0 and contract in done.stdout and "BROKEN" in done.stdout, done.stdout


def test_the_container_image_holds_every_layer_folder(tmp_path: Path) -> None:
    """What cluster/Dockerfile copies (its COPY lines and .dockerignore) holds every folder the package maps;
    tests/integration/test_image.py installs that file set and imports the application from it alone."""
    from tests.image import assemble

    (source,) = assemble(tmp_path).values()
    for folder in mapping().values():
        name = folder.relative_to(ROOT).as_posix()
        assert (source / name / "__init__.py").is_file(), f"the image built from cluster/Dockerfile has no {name}/"
