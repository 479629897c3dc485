"""Names the store and the service agree on: lines, versions and the ``line@version`` model ids.

Line and version names are safe path components (they become folders of the store), so no name can
lead a path out of the store's root.
"""

from __future__ import annotations

import re

from lineguard.errors import ConfigError

LINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
VERSION_NAME = re.compile(r"^v[1-9][0-9]{0,8}$")


def check_line_name(line: str) -> str:
    """Line names: 1-64 letters, digits, '-' and '_', starting with a letter or digit (no dots or slashes)."""
    if not isinstance(line, str) or not LINE_NAME.match(line):
        raise ConfigError(
            f"invalid line name {line!r}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return line


def check_version_name(version: str) -> str:
    if not isinstance(version, str) or not VERSION_NAME.match(version):
        raise ConfigError(f"invalid version {version!r}: versions look like v1, v2, ...")
    return version


def is_line_name(text: str) -> bool:
    return isinstance(text, str) and bool(LINE_NAME.match(text))


def is_version_name(text: str) -> bool:
    return isinstance(text, str) and bool(VERSION_NAME.match(text))


def model_id(line: str, version: str) -> str:
    """The id a served model goes by (Serve's multiplexed model id): ``press-3@v7``."""
    return f"{line}@{version}"


def parse_model_id(text: str) -> tuple[str, str]:
    line, sep, version = text.partition("@")
    if not sep:
        raise ConfigError(f"model id {text!r} is not of the form line@version")
    return check_line_name(line), check_version_name(version)
