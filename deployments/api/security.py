"""Who may call the service and how much they may send: API keys, CORS and the request-body limit.

Pure ASGI middleware around the ingress's FastAPI app, outermost first::

    CORS (answers preflights from allowed origins) -> body limit -> metrics -> API keys -> routes

- **API keys** (``training/keys.py`` makes them): when any active key exists, every route except
  ``/healthz`` and the web page (``/``, ``/ui/*``: no data) needs one, sent as ``Authorization: Bearer
  <key>`` or ``X-API-Key: <key>``. ``predict`` keys score and read; ``admin`` keys also change thresholds
  and severity rules and give feedback. A key limited to lines is refused (403) on any other line: routes
  with ``/v1/lines/{line}`` in the path are checked here, and the routes that find their line later
  (``/predict``, a prediction by id) call :func:`check_line`. Keys are re-read from the store every
  ``security.keys_refresh_s``; if the store cannot be read the last table stays in force (and with none
  yet, requests get a 503: closed, not open).
- **Body limit**: a declared ``Content-Length`` over ``max_request_bytes`` is refused before anything
  is read; a streamed body is counted and refused as soon as it passes the limit.
- **CORS**: only origins in ``security.cors_origins`` get CORS headers (none by default).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from lineguard.deployments.errors import APIError
from lineguard.deployments.keys import KeyRing, KeyTable, Principal, Scope

log = logging.getLogger("ray.serve")

OPEN_PATHS = frozenset({"/healthz", "/"})
OPEN_PREFIX = "/ui/"  # the web page's assets (they hold no data)
_ADMIN = re.compile(r"^/v1/(?:lines/[^/]+/(?:threshold|severity)|predictions/[^/]+/feedback)$")
_LINE = re.compile(r"^/v1/lines/([^/]+)")
MAX_KEY_CHARS = 200

current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "lineguard_principal", default=None
)

Scope_ = dict[str, Any]  # an ASGI scope (not a key scope)


def required_scope(method: str, path: str) -> Scope:
    return "admin" if method in ("POST", "PUT", "PATCH", "DELETE") and _ADMIN.match(path) else "predict"


def _limited(principal: Principal, why: str) -> APIError:
    lines = sorted(principal.lines or ())
    return APIError(403, f"API key {principal.id} ({principal.name}) is limited to lines {lines}: {why}")


def check_line(line: str) -> None:
    """Refuse (403) a line the request's key is not allowed to use; open service or no limit: pass."""
    principal = current_principal.get()
    if principal is not None and not principal.allows(line):
        raise _limited(principal, f"it cannot use line {line!r}")


def allowed(line: str) -> bool:
    """Whether the request's key may see ``line`` (lists show a limited key its lines only)."""
    principal = current_principal.get()
    return principal is None or principal.allows(line)


def check_every_line(route: str) -> None:
    """Refuse (403) a route over all lines to a key limited to some."""
    principal = current_principal.get()
    if principal is not None and principal.lines is not None:
        raise _limited(principal, f"{route} covers every line; use the per-line routes under /v1/lines/{{line}}")


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key from ``Authorization: Bearer`` or ``X-API-Key`` (first wins), or None."""
    found = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and found is None:
            found = value.decode("latin-1").strip() or None
    return found


class KeyCache:
    """The active keys, re-read from the store at most every ``refresh_s`` (one read at a time)."""

    def __init__(self, ring: KeyRing, refresh_s: float) -> None:
        self.ring = ring
        self.refresh_s = refresh_s
        self._table: KeyTable | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def table(self) -> KeyTable:
        if self._table is not None and time.monotonic() < self._expires:
            return self._table
        async with self._lock:
            if self._table is not None and time.monotonic() < self._expires:
                return self._table
            try:
                self._table = await asyncio.to_thread(self.ring.table)
            except Exception as err:
                log.error("cannot read the API keys from %s: %s", self.ring.store.uri, err)
                if self._table is None:
                    raise APIError(
                        503, "the API keys cannot be read from the model store: retry shortly", {"Retry-After": "2"}
                    ) from err
            self._expires = time.monotonic() + self.refresh_s
            return self._table


async def send_json(send: Any, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    raw = orjson.dumps(body)
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": raw})


class AuthMiddleware:
    """API keys: authenticate, check the route's scope and the path's line, and remember the principal."""

    def __init__(self, app: Any, get_keys: Callable[[], KeyCache | None]) -> None:
        self.app = app
        self.get_keys = get_keys

    async def __call__(self, scope: Scope_, receive: Any, send: Any) -> None:
        keys = self.get_keys()
        path = scope.get("path", "")
        if scope.get("type") != "http" or keys is None or path in OPEN_PATHS or path.startswith(OPEN_PREFIX):
            await self.app(scope, receive, send)
            return
        try:
            principal = self._principal(await keys.table(), scope, path)
        except APIError as err:
            await send_json(send, err.status, err.body(), err.headers)
            return
        token = current_principal.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            current_principal.reset(token)

    @staticmethod
    def _principal(table: KeyTable, scope: Scope_, path: str) -> Principal | None:
        if table.open:
            return None
        presented = presented_key(scope.get("headers", []))
        challenge = {"WWW-Authenticate": 'Bearer realm="lineguard"'}
        if presented is None:
            raise APIError(
                401,
                "this service needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
                "(an administrator makes one with `lineguard keys create`)",
                challenge,
            )
        principal = table.authenticate(presented) if len(presented) <= MAX_KEY_CHARS else None
        if principal is None:
            raise APIError(401, "the API key is not valid: unknown, revoked or mistyped", challenge)
        needed = required_scope(scope.get("method", "GET"), path)
        if not principal.can(needed):
            raise APIError(
                403,
                f"API key {principal.id} ({principal.name}) has scope {principal.scope}: "
                f"{scope.get('method')} {path} needs an {needed} key",
            )
        match = _LINE.match(path)  # refused before the body is read (routes check again where they resolve)
        if match and not principal.allows(match.group(1)):
            raise _limited(principal, f"it cannot use line {match.group(1)!r}")
        return principal


class BodyLimitMiddleware:
    """Refuse bodies over ``max_request_bytes``: at once when declared, as soon as passed when streamed."""

    def __init__(self, app: Any, get_limit: Callable[[], int | None]) -> None:
        self.app = app
        self.get_limit = get_limit

    async def __call__(self, scope: Scope_, receive: Any, send: Any) -> None:
        limit = self.get_limit()
        if scope.get("type") != "http" or limit is None:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                declared = value.decode("latin-1").strip()
                if not declared.isdigit():
                    await send_json(send, 400, {"detail": f"Content-Length {declared[:40]!r} is not a number"})
                    return
                if int(declared) > limit:
                    detail = f"request body is {declared} bytes, over the limit of {limit} (max_request_bytes)"
                    await send_json(send, 413, {"detail": detail})
                    return
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"request body is over the limit of {limit} bytes (max_request_bytes)")
            return message

        await self.app(scope, counted, send)


class CORS:
    """Starlette's CORS middleware with the allow-list from the replica's settings (known only there)."""

    def __init__(self, app: Any, get_origins: Callable[[], list[str] | None]) -> None:
        self.app = app
        self.get_origins = get_origins
        self._cors: Any = None

    async def __call__(self, scope: Scope_, receive: Any, send: Any) -> None:
        if self._cors is None:
            origins = self.get_origins()
            if not origins:
                await self.app(scope, receive, send)
                return
            self._cors = CORSMiddleware(
                self.app,
                allow_origins=origins,
                allow_methods=["GET", "POST", "PUT"],
                allow_headers=["Authorization", "X-API-Key", "Content-Type"],
                expose_headers=["Server-Timing", "X-Next-Cursor", "Retry-After"],
                max_age=600,
            )
        await self._cors(scope, receive, send)
