"""What a card records of how a version was made: step timings and software versions."""

from __future__ import annotations

import platform
import time
from importlib.metadata import PackageNotFoundError, version


class Timer:
    """Seconds spent in each named step, in order."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.marks: dict[str, float] = {}
        self._last = self.start

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.marks[name] = round(now - self._last, 3)
        self._last = now

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 3)


def software_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("lineguard", "torch", "timm", "ray"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out
