"""Errors under ``/v2`` as the Open Inference Protocol writes them: ``{"error": "…"}``.

Clients of the protocol (``tritonclient`` among them) read an error's ``error`` key and nothing
else; FastAPI answers ``{"detail": …}``. The routes answer their own refusals
(``routes.protocol_errors``); :func:`install_error_handlers` answers the HTTP errors raised
before a route runs (an unknown path, a wrong method) in the protocol's shape under ``/v2``;
every other path keeps the handler it had. The guards in front of the app do the same
(``subscriber/web/asgi.py``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from subscriber.web.asgi import error_key, route_path
from subscriber.web.oip.tensors import OipError

__all__ = ["install_error_handlers", "protocol_errors"]

Route = TypeVar("Route", bound=Callable[..., Awaitable[Response]])


def _answer(exc: HTTPException) -> JSONResponse:
    return JSONResponse(
        {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


def protocol_errors(route: Route) -> Route:
    """Answer what ``route`` refuses as ``{"error": …}`` itself: an OipError, and the shared
    checks' HTTPException (the key, no model yet, the limits). Not through the app's
    exception handlers, which an app that mounts us may have replaced."""

    @functools.wraps(route)
    async def answered(*args: Any, **kwargs: Any) -> Response:
        try:
            return await route(*args, **kwargs)
        except OipError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except HTTPException as exc:
            return _answer(exc)

    return answered  # type: ignore[return-value]


def install_error_handlers(app: FastAPI) -> None:
    """Answer errors under ``/v2`` as ``{"error": …}``; leave every other path's as it was."""
    before = app.exception_handlers.get(HTTPException, http_exception_handler)

    async def http_error(request: Request, exc: Exception) -> Response:
        if error_key(route_path(request.scope)) != "error":
            answer = before(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        assert isinstance(exc, HTTPException)
        return _answer(exc)

    app.add_exception_handler(HTTPException, http_error)
