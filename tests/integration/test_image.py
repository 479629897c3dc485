"""The container image, proven without Docker: what ``cluster/Dockerfile`` copies (its ``COPY`` lines and
``.dockerignore``, read as ``docker build`` reads them) installs on its own, imports the Serve application
with nothing of the checkout on the path, and (slow) serves a store with the image's own command."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from lineguard.registry.store import ModelStore
from lineguard.training.fit_image import fit_image_line
from lineguard.training.options import FitOptions
from tests.image import assemble, command, instructions
from tests.support import free_port, private_serve_env

SOURCE = "/tmp/lineguard-src"  # where the Dockerfile copies the build context
DEPENDENCIES = sysconfig.get_paths()["purelib"]  # the image's own packages (torch, ray, ...) stand in for these

IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
site, dependencies = sys.argv[1], sys.argv[2]
sys.path[:0] = [site]
sys.path.append(dependencies)  # added as a path, so its .pth files (the checkout's editable install) are not run
import lineguard
assert lineguard.__file__.startswith(site), lineguard.__file__
names = [m.name for m in pkgutil.walk_packages(lineguard.__path__, "lineguard.")
         if ".migrations" not in m.name]  # Alembic's scripts, which Alembic loads by path with its context
for name in names:
    importlib.import_module(name)
from lineguard.deployments.app import build_app
leaked = [m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None) and "/lineguard/" in m.__file__
          and not m.__file__.startswith(site)]
assert not leaked, leaked
print(len(names))
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


def source_of(tmp_path: Path) -> Path:
    folders = assemble(tmp_path / "image")
    assert list(folders) == [SOURCE], f"cluster/Dockerfile copies into {list(folders)}; this test follows {SOURCE}"
    return folders[SOURCE]


def test_the_images_files_alone_install_and_import_the_serve_application(tmp_path: Path) -> None:
    source = source_of(tmp_path)
    assert (source / "serve_config.yaml").is_file() and (source / "pyproject.toml").is_file()
    assert not {"tests", "benchmarks", ".git", ".venv"} & {p.name for p in source.iterdir()}
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    done = subprocess.run([*install, "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # -S: no site-packages, so nothing of the checkout (its editable install) is on the path
    probe = [sys.executable, "-S", "-c", IMPORT_EVERYTHING, str(site), DEPENDENCIES]
    done = subprocess.run(probe, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=clean_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert int(done.stdout.split()[-1]) > 50  # every module of every layer imported


SCRIPTS = {"serve": "ray.serve.scripts:cli", "ray": "ray.scripts.scripts:main"}  # ray's, as pip writes them


def fresh_environment(venv: Path) -> Path:
    """A virtual environment with the image's packages (ray, torch, ...) on a path and their commands."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(venv / "bin/python"), "-c", purelib], text=True).strip())
    (site / "image-packages.pth").write_text(DEPENDENCIES + "\n")
    for name, target in SCRIPTS.items():
        module, function = target.split(":")
        script = venv / "bin" / name
        script.write_text(
            f"#!{venv / 'bin/python'}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
        )
        script.chmod(0o755)
    return venv / "bin"


@pytest.mark.slow
def test_the_images_command_serves_a_store(synthetic_line: Path, tmp_path: Path) -> None:
    """The Dockerfile's RUN in a fresh virtual environment (its paths mapped to this test's folders), then its
    ENV and its CMD against a small store, until a predict answers."""
    source = source_of(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = fresh_environment(tmp_path / "venv")
    paths = {SOURCE: str(source), "/home/ray/anaconda3/bin": str(bin_dir), "/home/ray": str(home)}

    def mapped(text: str) -> str:
        for image_path, here in paths.items():
            text = text.replace(image_path, here)
        return text

    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    pip = f"{sys.executable} -m pip --python {bin_dir / 'python'} install --no-deps --no-build-isolation "
    for word, rest in instructions():
        if word == "RUN":  # the image's packages are there already: pip installs LineGuard alone
            script = mapped(rest).replace("pip install ", pip)
            done = subprocess.run(
                ["bash", "-c", script], cwd=home, env=env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, f"RUN {rest}\n{done.stdout}{done.stderr}"
        elif word == "ENV":
            env.update(pair.partition("=")[::2] for pair in mapped(rest).split())
    assert not source.exists(), "the RUN should remove the source it installed"

    store = tmp_path / "store"
    options = FitOptions(head_params={"bank_size": 256}, evaluate=False, progress=False)
    fit_image_line("line-1", synthetic_line, options, ModelStore(store))
    port = free_port()
    haproxy = Path(tempfile.mkdtemp(prefix="lg-image-", dir="/tmp"))  # short: a socket path has 107 bytes
    env.update(private_serve_env(haproxy))
    argv = [mapped(a).replace("/store", str(store)) for a in command()] + ["--host", "127.0.0.1", "--port", str(port)]
    argv[0] = str(bin_dir / argv[0])
    process = subprocess.Popen(argv, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url, started, answer = f"http://127.0.0.1:{port}", time.monotonic(), None
    image = sorted((synthetic_line / "test" / "scratch").glob("*.png"))[0]
    try:
        while time.monotonic() - started < 240 and process.poll() is None and answer is None:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    files = {"file": (image.name, image.read_bytes())}
                    answer = httpx.post(f"{url}/v1/lines/line-1/predict", files=files, timeout=60)
            except httpx.HTTPError:
                time.sleep(1)
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=90)[0].decode(errors="replace")
        shutil.rmtree(haproxy, ignore_errors=True)
    assert answer is not None, f"the image's command did not serve within 240 s\n{output[-3000:]}"
    assert answer.status_code == 200 and answer.json()["is_anomaly"] is True, answer.text
    assert process.returncode == 0, output[-3000:]
