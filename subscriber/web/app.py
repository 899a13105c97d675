"""The FastAPI application: ``create_app()``, or ``mount()`` the ``/sac`` routes into yours.

The lifespan builds the :class:`~subscriber.node.ServingNode`, preloads a checkpoint and
starts the listener; it never fails the startup. No checkpoint, a bad file, Redis down or
even a torch that will not import each log a warning, and ``/sac`` answers 503 until a model
appears (``/sac/health`` always answers). The node lives in ``app.state.fks_node``; on a node
of several instances (SPEC §13) that is the first one's, and ``app.state.fks_nodes`` holds every
instance's by its id (``subscriber/group.py``).

In front of the routes sit two plain ASGI guards, outermost first:
:class:`~subscriber.web.auth.ApiKeyGuard` (401 from the headers alone) and
:class:`~subscriber.web.bodyguard.BodyGuard` (size, time and concurrency bounds on bodies). The
``Settings`` are resolved once, when the app is built, and shared by the guards and the
lifespan (``app.state.fks_settings``): one source of truth.

Serve it with ``fks serve`` or ``uvicorn subscriber.web.app:create_app --factory``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from common.settings import Settings
from subscriber.web.auth import PUBLIC_PATHS, ApiKeyGuard, Protection
from subscriber.web.benchmark import benchmark_router
from subscriber.web.bodyguard import DEFAULT_MAX_BODY_BYTES, BodyGuard
from subscriber.web.hotpath import HotPredict
from subscriber.web.oip.errors import install_error_handlers
from subscriber.web.oip.metadata import server_version
from subscriber.web.oip.routes import oip_router
from subscriber.web.predict import predict_router
from subscriber.web.routes import metrics_router, router
from subscriber.web.strictjson import install_validation_handler

__all__ = ["create_app", "mount", "sac_lifespan"]

log = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


def sac_lifespan(settings: Settings | None = None) -> Lifespan:
    """A lifespan that runs a serving node for the ``/sac`` routes of ``app``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = settings or Settings()
        app.state.fks_settings = cfg
        app.state.fks_node = None
        app.state.fks_nodes = {}
        group = None
        try:
            from subscriber.group import NodeGroup  # torch is imported here, not before
            from subscriber.runtime.heap import freeze_startup_heap

            group = NodeGroup(cfg)
            if cfg.gc_freeze:  # torch and the app are imported, no model is loaded yet
                group.metrics.gc_frozen.set(freeze_startup_heap())
            await run_in_threadpool(group.start)
            app.state.fks_node = group.first
            app.state.fks_nodes = dict(group.nodes)
        except Exception as exc:  # noqa: BLE001 - the server starts whatever happens
            reason = f"serving is unavailable: {type(exc).__name__}: {exc}"
            app.state.fks_unavailable = reason
            log.warning("%s; /sac answers 503", reason)
        try:
            yield
        finally:
            if group is not None:
                await run_in_threadpool(group.stop)
                app.state.fks_node = None
                app.state.fks_nodes = {}

    return lifespan


def mount(
    app: FastAPI,
    settings: Settings | None = None,
    *,
    metrics: bool = True,
    max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """Add the ``/sac`` routes, the Open Inference Protocol's ``/v2`` (and ``/metrics``) and
    their lifespan to an existing app.

    The app's own lifespan keeps running inside ours; its routes never depend on the model,
    and the API key and the body bounds apply to our paths only, never to the app's own.
    ``settings`` default to the environment, read now. Call before the app starts.
    """
    ours = ("/sac", "/v2", "/metrics") if metrics else ("/sac", "/v2")
    protection = Protection(prefixes=ours)
    cfg = settings or Settings()
    return _install(app, cfg, protection, metrics=metrics, max_body_bytes=max_body_bytes)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The whole server: ``/sac/*``, the Open Inference Protocol's ``/v2/*``, ``/metrics``
    and ``/docs``.

    With ``FKS_API_KEY`` set every path but the health and readiness probes (``/sac/health``,
    ``/sac/ready``, ``/v2/health/live``, ``/v2/health/ready``) needs the key, the docs
    included unless ``FKS_PUBLIC_DOCS=true``.
    """
    cfg = settings or Settings()
    app = FastAPI(
        title="fks-checkpoint-notify",
        version=server_version(),
        summary="A SAC policy served with push-driven hot reload of checkpoints over Redis.",
        description=(
            "Trainers announce checkpoints on `fks:<instance>:model_checkpoints`; this server "
            "verifies and swaps them in while requests keep flowing. Every route but "
            "`/sac/health` and `/sac/ready` needs `Authorization: Bearer <key>` (or "
            "`X-API-Key`) when `FKS_API_KEY` is set, before any body is read; so do these "
            "docs unless `FKS_PUBLIC_DOCS=true`."
        ),
    )
    docs = (app.docs_url, app.redoc_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url)
    public = PUBLIC_PATHS | {p for p in docs if p and cfg.public_docs}
    protection = Protection(prefixes=None, public=public)
    return _install(app, cfg, protection, metrics=True, max_body_bytes=DEFAULT_MAX_BODY_BYTES)


def _install(
    app: FastAPI,
    settings: Settings,
    protection: Protection,
    *,
    metrics: bool,
    max_body_bytes: int | None,
) -> FastAPI:
    app.state.fks_max_body_bytes = max_body_bytes  # also what a compressed /v2 body may inflate to
    app.include_router(router)
    app.include_router(predict_router)
    app.include_router(benchmark_router)
    app.include_router(oip_router)
    if metrics:
        app.include_router(metrics_router)
    install_validation_handler(app)
    install_error_handlers(app)
    # add_middleware puts each new one outside the others: the key is checked first, then
    # the body is read under its bounds, then a plain /sac/predict is answered (hotpath.py).
    if max_body_bytes is not None:
        app.add_middleware(HotPredict)
        app.add_middleware(
            BodyGuard,
            max_bytes=max_body_bytes,
            timeout=settings.body_timeout_seconds,
            max_large=settings.max_large_bodies,
            guarded=None if protection.prefixes is None else protection.covers,
        )
    app.add_middleware(ApiKeyGuard, api_key=settings.api_key, protection=protection)
    ours = sac_lifespan(settings)
    theirs = app.router.lifespan_context

    @asynccontextmanager
    async def combined(host: FastAPI) -> AsyncIterator[Any]:
        async with ours(host), theirs(host) as state:
            yield state

    app.router.lifespan_context = combined
    return app
