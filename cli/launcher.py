"""``lineguard serve``: run ``serve run serve_config.yaml`` with this project's overrides and settings.

The launcher edits a copy of the config (store, host, port, default line) and starts Ray's own
``serve run`` with the environment that makes the request path fast: HAProxy in front of the ingress
replicas (``RAY_SERVE_ENABLE_HA_PROXY=1``, which must be set before Ray starts, so it cannot live in
the config file). Nothing here imports the deployments; Serve imports them from the config.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from lineguard.deployments import config_file
from lineguard.errors import ConfigError, UnavailableError

APP_NAME = "lineguard"
# the checkout's own serve_config.yaml (an editable install runs from the checkout)
CHECKOUT_CONFIG = Path(__file__).resolve().parents[1] / "serve_config.yaml"


CONFIG_HELP = "the Serve config (default: ./serve_config.yaml, else the checkout's own)"


HAPROXY_FILES = {  # Ray's settings for where HAProxy keeps its files ("": the folder itself)
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": "",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
}


def config_path(given: Path | None = None) -> Path:
    """``--config`` if given, else ``serve_config.yaml`` in the working folder, else the checkout's own."""
    path = given or next((p for p in (Path("serve_config.yaml"), CHECKOUT_CONFIG) if p.is_file()), CHECKOUT_CONFIG)
    if not path.is_file():
        raise ConfigError(f"serve config {path} does not exist: pass --config with the path of a serve_config.yaml")
    return path


@contextlib.contextmanager
def prepared_config(
    config: Path,
    store: str | None = None,
    host: str | None = None,
    port: int | None = None,
    default_line: str | None = None,
    sample_roots: list[str] | None = None,
    history_url: str | None = None,
) -> Iterator[Path]:
    """A copy of ``config`` with the overrides applied, in a temporary folder removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="lineguard-serve-"))
    try:
        target = folder / "serve_config.yaml"
        target.write_text(_overridden(config, store, host, port, default_line, sample_roots, history_url))
        yield target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _overridden(
    config: Path,
    store: str | None,
    host: str | None,
    port: int | None,
    default_line: str | None,
    sample_roots: list[str] | None,
    history_url: str | None = None,
) -> str:
    config = config_path(config)
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    apps = [a for a in data.get("applications", []) if a.get("name") == APP_NAME]
    if not apps:
        raise ConfigError(f"{config} has no application named {APP_NAME!r}")
    config_file.with_stream_shards(apps[0])  # an entry per StreamShard: Serve applies options by name
    args = apps[0].setdefault("args", {})
    if store is not None:
        args["store"] = str(Path(store).resolve()) if "://" not in store else store
    if default_line is not None:
        args["default_line"] = default_line
    if history_url is not None:  # a database URL, or env:NAME (read where the Recorder runs)
        args["history"] = {**(args.get("history") or {}), "url": history_url}
    if sample_roots:  # folders the web page's simulator may read
        args.setdefault("web", {})["sample_roots"] = [str(Path(r).resolve()) for r in sample_roots]
    http = data.setdefault("http_options", {})
    if host is not None:
        http["host"] = host
    if port is not None:
        http["port"] = port
    check_timeouts(http, args)
    return yaml.safe_dump(data, sort_keys=False)


def check_timeouts(http: dict[str, Any], args: dict[str, Any]) -> None:
    """The ingress must answer before Serve's proxy gives up on a request: its body time plus its scoring
    time stay under ``http_options.request_timeout_s``, or clients get Ray's plain-text 408 instead of the
    API's JSON answer."""
    outer = http.get("request_timeout_s")
    from lineguard.deployments.config import answer_deadline_s  # here: serve run, not the launcher, imports the app

    inner = answer_deadline_s(args)
    if outer is not None and float(outer) <= inner:
        raise ConfigError(
            f"http_options.request_timeout_s ({outer} s) must be over the application's request_timeout_s "
            f"plus body_timeout_s ({inner:g} s): raise it, or lower those two"
        )


def private_folder(name: str = f"lineguard-haproxy-{os.getuid()}") -> Path:
    """A folder in /tmp only this user can enter (mode 0700; refused if another user owns that name)."""
    folder = Path("/tmp") / name  # short: a socket's path has at most 107 bytes
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if folder.is_symlink() or info.st_uid != os.getuid():
        raise ConfigError(f"{folder} belongs to someone else or is a link: remove it, or set RAY_SERVE_HAPROXY_*")
    folder.chmod(0o700)
    return folder


def haproxy_binary(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings that make Ray start HAProxy through ``lineguard-haproxy`` (:mod:`lineguard.cli.haproxy`:
    stats page on loopback, admin socket 0600, a time limit on headers, JSON error pages). A binary the
    caller chose in ``RAY_SERVE_HAPROXY_BINARY_PATH`` is the one the wrapper runs."""
    wrapper = Path(sys.executable).parent / "lineguard-haproxy"
    if not wrapper.is_file():
        raise ConfigError(f"{wrapper} is missing: reinstall LineGuard (make setup, or pip install -e .)")
    given = environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    settings = {"RAY_SERVE_HAPROXY_BINARY_PATH": str(wrapper)}
    if given and Path(given) != wrapper:
        settings["LINEGUARD_HAPROXY_BINARY"] = given
    return settings


def serve_environment(haproxy: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    if haproxy:
        env.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
        env.update(haproxy_binary(env))
        # Ray makes HAProxy's admin socket mode 666 at admin level, in /tmp/haproxy-serve/: anyone on the
        # machine could drive it (the wrapper makes it 0600). Its files go to a folder only this user can
        # enter, too.
        folder = private_folder()
        for key, name in HAPROXY_FILES.items():
            env.setdefault(key, str(folder / name) if name else str(folder))
        # a client that reads nothing of its answer for this long is gone (Ray's default: an hour)
        env.setdefault("RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S", "90")
    env.setdefault("RAY_SERVE_USE_GRPC_BY_DEFAULT", "1")
    env.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    return env


def start(config: Path, env: dict[str, str], app_dir: Path | None = None) -> subprocess.Popen[bytes]:
    """``serve run`` in the background; the caller owns the process."""
    serve = shutil.which("serve", path=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    if serve is None:
        raise ConfigError("the `serve` command (from ray[serve]) is not installed in this environment")
    command = [serve, "run", str(config)]
    if app_dir is not None:
        command += ["--app-dir", str(app_dir)]
    return subprocess.Popen(command, env=env, start_new_session=True)


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120.0) -> float:
    """Seconds until ``url`` answers 200; raises if the process dies or the time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise UnavailableError(f"serve run exited with status {process.returncode} before the service was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise UnavailableError(f"{url} did not answer 200 within {timeout_s} s")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Stop ``serve run`` gracefully, then make sure nothing it started lives on.

    SIGTERM goes to ``serve run`` alone: it shuts Serve down (HAProxy included) and then its Ray.
    Signalling the whole group instead kills Ray's workers first and orphans HAProxy, which keeps the
    ports. Whatever of the original process tree is still alive afterwards is killed by pid.
    """
    if process.poll() is not None:
        return
    tree = [(pid, _cmdline(pid)) for pid in descendants(process.pid)]
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for pid, cmdline in tree:
        if cmdline and _cmdline(pid) == cmdline:  # same process, not a recycled pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def run_foreground(config: Path, env: dict[str, str], ready_url: str, on_ready: Any = None) -> int:
    """Run until Ctrl-C or SIGTERM; ``on_ready()`` is called once the service answers."""
    process = start(config, env)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a plain SIGTERM still stops Serve below
    try:
        seconds = wait_ready(ready_url, process)
        print(f"LineGuard is ready at {ready_url.rsplit('/', 1)[0]} ({seconds:.1f} s). Ctrl-C stops it.", flush=True)
        if on_ready is not None:
            on_ready()
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        # a second signal (Ctrl-C twice, or `timeout` forwarding SIGTERM after a pkill) must not cut
        # the cleanup short: that orphaned `serve run`, its Ray and HAProxy
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop(process)
