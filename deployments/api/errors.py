"""HTTP errors: the answers of the API when something is refused, always JSON ``{"detail": "..."}`` that
names the problem and, where there is one, the fix.

- :class:`APIError`: what only HTTP knows (a wrong content type, a missing key, a body too large).
- every :class:`lineguard.errors.LineGuardError`: its status from the one table (``lineguard.errors``);
  503s carry ``Retry-After``.
- FastAPI's validation errors: a 422 listing the problems, without echoing the input back.
- a client that goes away while its body is read: a 499 (nginx's "client closed request"), never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from lineguard.errors import LineGuardError, UnavailableError, outcome

log = logging.getLogger("ray.serve")
CLIENT_CLOSED = 499  # nginx's "client closed request": nobody reads the answer, and it is not the server's fault


class APIError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail}

    @classmethod
    def of(cls, err: LineGuardError) -> APIError:
        """The answer the error table gives ``err``."""
        status = outcome(err).http
        retry = err.retry_after_s if isinstance(err, UnavailableError) else 1 if status == 503 else None
        return cls(status, str(err), {"Retry-After": str(retry)} if retry else None)


async def _api_error(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, APIError)
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _lineguard_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, LineGuardError)
    return await _api_error(request, APIError.of(err))


async def _validation_error(_: Request, err: Exception) -> JSONResponse:
    """FastAPI's 422, without echoing the input back (it may be huge, or NaN, which JSON cannot hold)."""
    assert isinstance(err, RequestValidationError)
    problems = [
        {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in err.errors()
    ]
    return JSONResponse({"detail": problems}, status_code=422)


async def _client_gone(request: Request, _: Exception) -> Response:
    """The client went away before its body was read: one line in the log, no traceback, and no 5xx."""
    log.info("client closed the connection before its request was read: %s %s", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED)


def install(app: FastAPI) -> None:
    """The handlers that turn every refusal into JSON with a ``detail``."""
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(LineGuardError, _lineguard_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
