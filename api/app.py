"""The FastAPI application of a node: `create_app(node)`.

Routes are thin: they validate input and call :class:`mainstream.services.Services`. Errors
become HTTP answers in one place (:mod:`api.errors`). With `manage_node` the application's
lifespan starts the node and stops it on shutdown (SIGTERM/SIGINT under uvicorn), which closes
open events before the process exits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from api.errors import install_error_handlers
from api.metrics import metrics_registry
from api.routes import apps, cameras, events, packages, schedule, system
from mainstream import __version__
from mainstream.node import Node
from mainstream.services import Services


def create_app(node: Node, manage_node: bool = True) -> FastAPI:
    """The API of `node`. With `manage_node`, the app starts and stops the node itself."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_node:
            await run_in_threadpool(node.start)
        try:
            yield
        finally:
            if manage_node:
                await run_in_threadpool(node.stop)

    app = FastAPI(
        title="Mainstream",
        version=__version__,
        description=(
            "Edge video analytics with shared CNN stems. Send `Authorization: Bearer <token>`; "
            "viewer tokens read, admin tokens change."
        ),
        lifespan=lifespan,
    )
    app.state.node = node
    app.state.services = Services(node)
    app.state.metrics = metrics_registry(node)
    install_error_handlers(app)
    for module in (packages, apps, cameras, schedule, events, system):
        app.include_router(module.router)
    return app
