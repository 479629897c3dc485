"""The HTTP API: one router per resource (scoring, lines, history, the web page, health), the dependencies
they share, and :func:`create_api`, which puts them together with the middleware for one replica's
services. The Ingress deployment only calls it; the unit tests call it with fake services."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from lineguard.deployments.api import errors, health, history, lines, predict, web
from lineguard.deployments.api.security import (
    CORS_SETTINGS,
    AdmissionMiddleware,
    AuthMiddleware,
    BodyLimitMiddleware,
)
from lineguard.deployments.services import Services
from lineguard.deployments.telemetry import MetricsMiddleware


def create_api(services: Services) -> FastAPI:
    """The application of one ingress replica. Middleware, outermost first: CORS (answers preflights from
    allowed origins) -> body limit -> metrics -> admission (requests in flight) -> API keys -> the routes."""
    app = FastAPI(
        title="LineGuard",
        version="1",
        description="Anomaly detection for production lines: every line's model behind one API.",
        docs_url="/docs",
    )
    app.state.services = services
    for module in (predict, lines, history, web, health):
        app.include_router(module.router)
    errors.install(app)
    app.add_middleware(AuthMiddleware, keys=services.keys)  # added innermost first
    app.add_middleware(AdmissionMiddleware, limit=lambda: services.max_in_flight)
    app.add_middleware(MetricsMiddleware, metrics=services.metrics)
    app.add_middleware(
        BodyLimitMiddleware, limit=services.args.max_request_bytes, timeout_s=services.args.body_timeout_s
    )
    if services.args.security.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=services.args.security.cors_origins, **CORS_SETTINGS)
    return app


__all__ = ["create_api"]
