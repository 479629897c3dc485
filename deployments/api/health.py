"""``/healthz``: ready when every deployment answers and the store is readable; the history's state beside
it (a database outage degrades the history, never the service: scoring goes on).

No ``from __future__ import annotations``: FastAPI reads the routes' annotations at import.
"""

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from lineguard.deployments.api.deps import ServicesDep
from lineguard.deployments.api.schemas import Health

router = APIRouter()
PING_TIMEOUT_S = 5.0


@router.get("/healthz", response_model=Health, summary="Ready when every deployment answers and the store is readable")
async def healthz(services: ServicesDep) -> JSONResponse:
    names = list(services.probes)
    pings = await asyncio.gather(
        *(asyncio.wait_for(services.probes[n].ping.remote(), PING_TIMEOUT_S) for n in names), return_exceptions=True
    )
    states = {n: "ok" if p == "ok" else f"unavailable: {type(p).__name__}" for n, p in zip(names, pings, strict=True)}
    store_ok = await asyncio.to_thread(services.store.readable)
    healthy = store_ok and all(s == "ok" for s in states.values())
    history = None if services.history is None else await services.history.health()
    body = Health(status="ok" if healthy else "unavailable", store=store_ok, deployments=states, history=history)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)
