"""HTTP errors with a detail that names the problem and, where there is one, the fix."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail}


def unknown_line(line: str) -> APIError:
    return APIError(404, f"unknown line {line!r}: GET /v1/lines lists the lines this service knows")


def overloaded(retry_after_s: int = 1) -> APIError:
    return APIError(503, "the service is at capacity: retry shortly", {"Retry-After": str(retry_after_s)})
