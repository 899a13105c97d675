"""``POST /sac/predict`` with a plain JSON body, answered in front of FastAPI's router.

The route most clients call the most, for one state, is answered here, as plain ASGI, by the
code the FastAPI route runs (:func:`~subscriber.web.predict.answer_one`): the same snapshot,
checks, metrics, traffic counts and JSON. What it skips is FastAPI's per-request machinery
(routing, the request object, dependency solving, body validation, response wrapping): about
a third of the server's CPU for this route (``bench/http.py``).

It only takes what it can read exactly as FastAPI would: a body with ``Content-Type:
application/json`` (FastAPI's strict content type reads no JSON without one) that
``json.loads`` reads into an object whose ``state`` is a non-empty flat list of JSON numbers
(ints within ±2**53) and whose ``deterministic``, if given, is ``true`` or ``false``.
Anything else (another content type, invalid JSON, strings or booleans for numbers, nested
rows, a missing field) is handed to the FastAPI route unchanged, body included, and gets its
usual answer (422, 400…). Refusals raised by the shared code (503 no model, 413, 400) are
rendered as FastAPI renders an HTTPException.

It sits inside the API-key guard and the body guard (``subscriber/web/app.py``): the key was
checked and the body was read under its bounds before anything here runs; the key is checked
again here, as the route checks it again.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from fastapi import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from subscriber.web.asgi import replaying, route_path
from subscriber.web.auth import first_headers, key_allows
from subscriber.web.predict import answer_one, json_text

if TYPE_CHECKING:
    from common.settings import Settings
    from subscriber.node import ServingNode

__all__ = ["PATH", "HotPredict", "plain_request"]

PATH = "/sac/predict"
_EXACT_INT = 2**53  # beyond it an int is not exactly a float: FastAPI's conversion decides


def plain_request(body: bytes) -> tuple[list[float], bool] | None:
    """``(state, deterministic)`` of a body this path answers itself, else None."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if type(obj) is not dict:
        return None
    state = obj.get("state")
    if type(state) is not list or not state:
        return None
    for value in state:
        kind = type(value)
        if kind is not float and not (kind is int and -_EXACT_INT <= value <= _EXACT_INT):
            return None
    deterministic = obj.get("deterministic", True)
    if type(deterministic) is not bool:
        return None
    return state, deterministic


class HotPredict:
    """Plain ASGI middleware: ``POST /sac/predict`` with a plain body answered here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or route_path(scope) != PATH:
            await self.app(scope, receive, send)
            return
        # the first of each repeated header, as the route reads them
        content_type, authorization, x_api_key = first_headers(
            scope["headers"], b"content-type", b"authorization", b"x-api-key"
        )
        if content_type != b"application/json":  # else FastAPI's content-type rules apply
            await self.app(scope, receive, send)
            return
        message = await receive()
        replay = replaying(message, receive)
        if message["type"] != "http.request" or message.get("more_body", False):
            await self.app(scope, replay, send)  # not one whole body: FastAPI reads it
            return
        plain = plain_request(message.get("body", b""))
        state = getattr(scope.get("app"), "state", None)
        node: ServingNode | None = getattr(state, "fks_node", None)
        settings: Settings | None = getattr(state, "fks_settings", None)
        # the route's own key check: a refusal is the route's to answer
        if plain is None or node is None or not key_allows(settings, authorization, x_api_key):
            await self.app(scope, replay, send)
            return
        try:
            answer = await answer_one(scope["app"], node, *plain)
        except HTTPException as exc:
            response: Response = JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        else:
            response = Response(json_text(answer), media_type="application/json")
        await response(scope, replay, send)
