"""Who may call the service and how much they may send: API keys, CORS and the request-body limit.

Pure ASGI middleware around the ingress's FastAPI app, outermost first::

    CORS (answers preflights from allowed origins) -> body limit -> metrics -> API keys -> routes

- **API keys** (:mod:`lineguard.deployments.keys` makes them): when any active key exists, every route
  except ``/healthz`` and the web page (``/``, ``/ui/*``: no data) needs one, sent as ``Authorization:
  Bearer <key>`` or ``X-API-Key: <key>``. ``predict`` keys score and read; ``admin`` keys also change
  thresholds, severity and alarm rules and give feedback. A key limited to lines is refused (403) on any other
  line: routes with ``/v1/lines/{line}`` in the path are checked here, and the routes that find their line
  later (``/predict``, a prediction by id) call :func:`check_line` with the request's principal, which
  this middleware leaves in the request's state (:func:`principal_of`). Keys are re-read from the store
  every ``security.keys_refresh_s``; if the store cannot be read the last table stays in force (and with
  none yet, requests get a 503: closed, not open).
- **Body limit**: a declared ``Content-Length`` over ``max_request_bytes`` is refused before anything
  is read; a streamed body is counted and refused as soon as it passes the limit.
- **CORS** (Starlette's middleware, :data:`CORS_SETTINGS`): only origins in ``security.cors_origins`` get
  CORS headers (none by default).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
from starlette.exceptions import HTTPException

from lineguard.deployments.api.errors import APIError
from lineguard.deployments.keys import KeyCache, KeyTable, Principal, Scope
from lineguard.deployments.telemetry import noting_status
from lineguard.errors import UnavailableError

OPEN_PATHS = frozenset({"/healthz", "/"})
OPEN_PREFIX = "/ui/"  # the web page's assets (they hold no data)
_ADMIN = re.compile(r"^/v1/(?:lines/[^/]+/(?:threshold|severity|alarm)|predictions/[^/]+/feedback)$")
_LINE = re.compile(r"^/v1/lines/([^/]+)")
MAX_KEY_CHARS = 200

Scope_ = dict[str, Any]  # an ASGI scope (not a key scope)
PRINCIPAL = "principal"  # where AuthMiddleware leaves the caller in the request's state
log = logging.getLogger("ray.serve")


def principal_of(scope: MutableMapping[str, Any]) -> Principal | None:
    """The caller of a request (None: the service runs open, or the route is open)."""
    principal: Principal | None = scope.get("state", {}).get(PRINCIPAL)
    return principal


def required_scope(method: str, path: str) -> Scope:
    return "admin" if method in ("POST", "PUT", "PATCH", "DELETE") and _ADMIN.match(path) else "predict"


def _limited(principal: Principal, why: str) -> APIError:
    lines = sorted(principal.lines or ())
    return APIError(403, f"API key {principal.id} ({principal.name}) is limited to lines {lines}: {why}")


def check_line(principal: Principal | None, line: str) -> None:
    """Refuse (403) a line the caller's key is not allowed to use; open service or no limit: pass."""
    if principal is not None and not principal.allows(line):
        raise _limited(principal, f"it cannot use line {line!r}")


def allowed(principal: Principal | None, line: str) -> bool:
    """Whether the caller's key may see ``line`` (lists show a limited key its lines only)."""
    return principal is None or principal.allows(line)


def check_every_line(principal: Principal | None, route: str) -> None:
    """Refuse (403) a route over all lines to a key limited to some."""
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


async def send_json(send: Any, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    raw = orjson.dumps(body)
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": raw})


class AuthMiddleware:
    """API keys: authenticate, check the route's scope and the path's line, and remember the principal."""

    def __init__(self, app: Any, keys: KeyCache | None) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope_, receive: Any, send: Any) -> None:
        keys = self.keys
        path = scope.get("path", "")
        if scope.get("type") != "http" or keys is None or path in OPEN_PATHS or path.startswith(OPEN_PREFIX):
            await self.app(scope, receive, send)
            return
        try:
            principal = self._principal(await keys.table(), scope, path)
        except (UnavailableError, APIError) as err:  # unavailable: no keys read yet (closed, not open)
            refusal = APIError.of(err) if isinstance(err, UnavailableError) else err
            await send_json(send, refusal.status, refusal.body(), refusal.headers)
            return
        scope.setdefault("state", {})[PRINCIPAL] = principal
        if principal is None:
            await self.app(scope, receive, send)
            return
        noted, status = noting_status(send)
        try:
            await self.app(scope, receive, noted)
        finally:  # who did what: Serve's own access line does not name the key
            log.info("key %s (%s) %s %s %d", principal.id, principal.name, scope.get("method"), path, status["code"])

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
    """Refuse bodies over ``max_request_bytes`` (at once when declared, as soon as passed when streamed), and
    bodies that take longer than ``body_timeout_s`` to arrive: a client sending a byte a second holds one of
    the ingress's request slots for that long at most, then gets a 408."""

    def __init__(self, app: Any, limit: int | None, timeout_s: float | None = None) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope_, receive: Any, send: Any) -> None:
        limit = self.limit
        if scope.get("type") != "http" or limit is None:
            await self.app(scope, receive, send)
            return
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
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
            try:
                waited = receive() if deadline is None else asyncio.wait_for(receive(), deadline - time.monotonic())
                message: dict[str, Any] = await waited
            except TimeoutError:
                raise HTTPException(
                    408, f"the request body did not arrive within {self.timeout_s} s (body_timeout_s): send it faster"
                ) from None
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"request body is over the limit of {limit} bytes (max_request_bytes)")
            return message

        await self.app(scope, counted, send)


class AdmissionMiddleware:
    """At most ``max_in_flight`` requests with a body at once on this replica (the ingress's ``user_config``);
    beyond, a JSON 503 with ``Retry-After`` at once, rather than a wait in Ray's queue (whose refusals are
    plain text, and whose waits add to ``request_timeout_s``). Reads always pass: the line list, a history
    page and ``/healthz`` stay available while uploads crowd the replica."""

    BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

    def __init__(self, app: Any, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope_, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") not in self.BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        if self.in_flight >= limit:
            detail = f"the service is at capacity ({limit} requests in flight on this replica): retry shortly"
            await send_json(send, 503, {"detail": detail}, {"Retry-After": "1"})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


CORS_SETTINGS: dict[str, Any] = {  # for the origins in security.cors_origins (none: no CORS headers at all)
    "allow_methods": ["GET", "POST", "PUT"],
    "allow_headers": ["Authorization", "X-API-Key", "Content-Type"],
    "expose_headers": ["Server-Timing", "X-Next-Cursor", "Retry-After"],
    "max_age": 600,
}
