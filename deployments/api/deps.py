"""The routes' dependencies: the replica's services, the caller (the API key's principal), the line a path
names (checked against the caller's key) and the history. A route declares what it needs and gets it.

Every dependency is ``async def``, even those that do not await: FastAPI runs a plain ``def`` dependency
in its thread pool, a thread hop per dependency per request (a third of the ingress's time on a
single-reading sensor request)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lineguard.deployments.api.errors import APIError
from lineguard.deployments.api.security import check_line, principal_of
from lineguard.deployments.history_client import HistoryClient
from lineguard.deployments.keys import Principal
from lineguard.deployments.lines import LineEntry
from lineguard.deployments.services import Services
from lineguard.deployments.telemetry import note_line
from lineguard.registry.names import check_line_name


async def services(request: Request) -> Services:
    """The replica's services (``create_api`` puts them on the app)."""
    found: Services = request.app.state.services
    return found


async def caller(request: Request) -> Principal | None:
    """Who is asking: the API key's principal (None: the service runs open)."""
    return principal_of(request.scope)


ServicesDep = Annotated[Services, Depends(services)]
CallerDep = Annotated[Principal | None, Depends(caller)]


async def line_for(request: Request, name: str, services: Services, who: Principal | None) -> LineEntry:
    """The version in service of line ``name``, if the caller may use it: 422 for a malformed name, 403 for
    a line the key is not allowed, 404 for an unknown line."""
    check_line(who, check_line_name(name))
    entry = await services.lines.get(name)
    note_line(request.scope, entry.line)
    return entry


async def path_line(line: str, request: Request, services: ServicesDep, who: CallerDep) -> LineEntry:
    return await line_for(request, line, services, who)


async def history(services: ServicesDep) -> HistoryClient:
    """The prediction history, or a 409 when this service records none."""
    if services.history is None:
        raise APIError(409, "the prediction history is off in this service: set history.enabled in serve_config.yaml")
    return services.history


LineDep = Annotated[LineEntry, Depends(path_line)]
HistoryDep = Annotated[HistoryClient, Depends(history)]
