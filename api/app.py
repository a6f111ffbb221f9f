"""The FastAPI application of a node: `create_app(node)`.

Routes are thin: they validate input and call :class:`mainstream.node.services.Services`. Errors
become HTTP answers in one place (:mod:`api.errors`); body size and pace are limited before any
route runs (:mod:`api.limits`). With `manage_node` the application's
lifespan starts the node and stops it on shutdown (SIGTERM/SIGINT under uvicorn), which closes
open events before the process exits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from api.errors import install_error_handlers
from api.limits import RequestLimits, node_request_limits
from api.live_views import LiveViewSlots
from api.metrics import metrics_registry
from api.read_gate import ReadGate
from api.roles import api_description, runtime_router_options
from api.routes import (
    apps,
    bases,
    cameras,
    dashboard,
    events,
    fleet,
    live,
    packages,
    schedule,
    system,
    training,
)
from mainstream import __version__
from mainstream.node.node import Node
from mainstream.node.services import Services


def create_app(node: Node, manage_node: bool = True) -> FastAPI:
    """The API of `node`. With `manage_node`, the app starts and stops the node itself."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_node:
            await run_in_threadpool(app.state.services.start)  # the config file's apps too
        try:
            yield
        finally:
            if manage_node:
                await run_in_threadpool(node.stop)

    role = node.settings.role
    app = FastAPI(
        title="Mainstream registry" if role == "registry" else "Mainstream",
        version=__version__,
        description=api_description(role),
        lifespan=lifespan,
    )
    app.state.node = node
    app.state.services = Services(node)
    app.state.metrics = metrics_registry(node)
    app.state.live_views = LiveViewSlots(node.settings.api.max_live_views)
    install_error_handlers(app)
    # Outside FastAPI's body parsing and the token check: caps and pace apply to every request.
    app.add_middleware(RequestLimits, **node_request_limits(node.settings.api))
    app.add_middleware(ReadGate, max_concurrent=node.settings.api.max_concurrent_reads)
    for module in (packages, bases, system, fleet):
        app.include_router(module.router)
    # Cameras, apps, plan and events need a runtime: 409 on a shared registry (api/roles.py).
    runtime_only = runtime_router_options(role)
    for module in (apps, cameras, schedule, events):
        app.include_router(module.router, **runtime_only)
    app.include_router(live.router, **runtime_only)
    app.include_router(training.calibrations, **runtime_only)
    app.include_router(dashboard.router)  # the web page at /ui/ and GET /api/whoami
    app.include_router(training.router)  # training jobs; their own lifespan starts the service
    return app
