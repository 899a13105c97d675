"""Optional API key: with ``FKS_API_KEY`` set, protected paths need ``Authorization: Bearer
<key>`` or ``X-API-Key: <key>``, compared in constant time.

:class:`ApiKeyGuard` is plain ASGI middleware in front of everything: it decides from the
request headers alone and answers 401 before the app reads a byte of the body, so a client
without the key can make the server neither parse nor buffer anything (issue 12). Which
paths are protected is a :class:`Protection`: for ``create_app()`` every path but
``/sac/health`` and ``/sac/ready`` (and the docs with ``FKS_PUBLIC_DOCS=true``); for
``mount(app)`` only ours (``/sac/*`` but health and ready, ``/metrics``), never the host
app's own routes.

:func:`require_api_key` repeats the check inside the protected routes (defence in depth, for
a router included without :func:`~subscriber.web.app.mount`); it reads the same ``Settings``
object from ``app.state.fks_settings``. It is an ``async`` function reading
``request.headers`` itself: plain ``def`` dependencies run in the threadpool, and ``Header()``
parameters cost more than the check (bench/http.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request, status
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from common.settings import Settings
from subscriber.web.asgi import error_key, reply, route_path, unread_may_be_large

__all__ = [
    "PUBLIC_PATHS", "ApiKey", "ApiKeyGuard", "Protection", "first_headers", "key_allows",
    "require_api_key",
]  # fmt: skip

# liveness and readiness probes, ours and the Open Inference Protocol's (SPEC §14)
PUBLIC_PATHS = frozenset({"/sac/health", "/sac/ready", "/v2/health/live", "/v2/health/ready"})
DETAIL = "missing or wrong API key (Authorization: Bearer <key> or X-API-Key)"
CHALLENGE = (b"www-authenticate", b"Bearer")


@dataclass(frozen=True, slots=True)
class Protection:
    """The paths that need the key: every path under ``prefixes`` (all paths when None)
    except the ``public`` ones."""

    prefixes: tuple[str, ...] | None = None
    public: frozenset[str] = PUBLIC_PATHS

    def covers(self, path: str) -> bool:
        """Whether ``path`` is ours: under one of the prefixes."""
        if self.prefixes is None:
            return True
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    def needs_key(self, path: str) -> bool:
        return path not in self.public and self.covers(path)


def key_matches(authorization: bytes | None, x_api_key: bytes | None, expected: bytes) -> bool:
    """``Authorization: Bearer`` wins over ``X-API-Key``; the compare takes constant time."""
    given = x_api_key
    if authorization is not None:
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() == b"bearer":
            given = token.strip()
    return given is not None and hmac.compare_digest(given, expected)


class ApiKeyGuard:
    """401 from the headers alone for a protected path without the right key."""

    def __init__(self, app: ASGIApp, *, api_key: SecretStr | None, protection: Protection):
        self.app = app
        self.expected = api_key.get_secret_value().encode() if api_key is not None else None
        self.protection = protection

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.expected is None
            or scope["type"] != "http"
            or not self.protection.needs_key(route_path(scope))
            or key_matches(*_key_headers(scope["headers"]), self.expected)
        ):
            await self.app(scope, receive, send)
            return
        # The body is never read: a big one is not drained either, the connection closes.
        path = route_path(scope)
        await reply(
            send,
            401,
            DETAIL,
            headers=(CHALLENGE,),
            close=unread_may_be_large(scope),
            key=error_key(path),
        )


def first_headers(
    headers: Iterable[tuple[bytes, bytes]], *names: bytes
) -> tuple[bytes | None, ...]:
    """The first value of each of ``names`` (lower-case) in ASGI ``headers``, None where
    absent: what Starlette's ``Headers.get`` (and so every route) reads of a repeated one."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in names and name not in found:
            found[name] = value
    return tuple(found.get(name) for name in names)


def _key_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    authorization, x_api_key = first_headers(headers, b"authorization", b"x-api-key")
    return authorization, x_api_key


def key_allows(
    settings: Settings | None, authorization: bytes | None, x_api_key: bytes | None
) -> bool:
    """The routes' own key check (beside the guard's): no key configured, or the right one."""
    key = settings.api_key if settings is not None else None
    return key is None or key_matches(authorization, x_api_key, key.get_secret_value().encode())


async def require_api_key(request: Request) -> None:
    settings: Settings | None = getattr(request.app.state, "fks_settings", None)
    headers = request.headers
    authorization, x_api_key = headers.get("authorization"), headers.get("x-api-key")
    if not key_allows(
        settings,
        authorization.encode("latin-1") if authorization is not None else None,
        x_api_key.encode("latin-1") if x_api_key is not None else None,
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail=DETAIL, headers={"WWW-Authenticate": "Bearer"}
        )


ApiKey = Depends(require_api_key)
