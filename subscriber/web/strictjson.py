"""Strict JSON answers (RFC 8259: no ``NaN`` or ``Infinity`` tokens), even for bad input.

Python's JSON parser accepts ``NaN`` and ``Infinity``, and a 422 echoes the offending input:
FastAPI's own handler then fails to render it (``allow_nan=False``) and the client gets a
500. :func:`validation_error_handler` answers the same 422 with every non-finite number of
the echo written as a string (``"NaN"``, ``"Infinity"``, ``"-Infinity"``).
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse

__all__ = ["finite", "install_validation_handler", "validation_error_handler"]


def finite(value: Any) -> Any:
    """``value`` (JSON-ready) with each non-finite float written as its JSON token, a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    return value


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 for a body or parameter that fails validation, in strict JSON."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(status_code=422, content={"detail": finite(jsonable_encoder(errors))})


def install_validation_handler(app: FastAPI) -> None:
    """Use :func:`validation_error_handler` unless the app has a 422 handler of its own."""
    current = app.exception_handlers.get(RequestValidationError)
    if current in (None, request_validation_exception_handler):
        app.add_exception_handler(RequestValidationError, validation_error_handler)
