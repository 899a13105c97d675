"""Errors under ``/v2`` as the Open Inference Protocol writes them: ``{"error": "…"}``.

Clients of the protocol (``tritonclient`` among them) read an error's ``error`` key and nothing
else; FastAPI answers ``{"detail": …}``. :func:`install_error_handlers` answers an
:class:`~subscriber.web.oip.tensors.OipError`, and any HTTP error under ``/v2`` (no key, no
model yet, an unknown path, a wrong method), in the protocol's shape; every other path keeps the
handler it had. The guards in front of the app do the same (``subscriber/web/asgi.py``).
"""

from __future__ import annotations

import inspect

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from subscriber.web.asgi import error_key
from subscriber.web.oip.tensors import OipError

__all__ = ["install_error_handlers"]


async def _oip_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OipError)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


def install_error_handlers(app: FastAPI) -> None:
    """Answer errors under ``/v2`` as ``{"error": …}``; leave every other path's as it was."""
    app.add_exception_handler(OipError, _oip_error)
    before = app.exception_handlers.get(HTTPException, http_exception_handler)

    async def http_error(request: Request, exc: Exception) -> Response:
        if error_key(request.url.path[len(request.scope.get("root_path", "")) :]) != "error":
            answer = before(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        assert isinstance(exc, HTTPException)
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    app.add_exception_handler(HTTPException, http_error)
