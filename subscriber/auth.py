"""Optional API key: with ``FKS_API_KEY`` set, routes need ``Authorization: Bearer <key>``
or ``X-API-Key: <key>``, compared in constant time. Health and ready never need it.

The dependency is ``async`` and reads ``request.headers`` itself on purpose: FastAPI runs
plain ``def`` dependencies in its threadpool, and validating ``Header()`` parameters cost
more than the check (bench/http_throughput.py).
"""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request, status

from common.settings import Settings

__all__ = ["require_api_key"]


def _settings(request: Request) -> Settings | None:
    return getattr(request.app.state, "fks_settings", None)


async def require_api_key(request: Request) -> None:
    settings = _settings(request)
    if settings is None or settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    headers = request.headers
    given = headers.get("x-api-key")
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        given = token.strip()
    if given is None or not hmac.compare_digest(given.encode(), expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong API key (Authorization: Bearer <key> or X-API-Key)",
            headers={"WWW-Authenticate": "Bearer"},
        )


ApiKey = Depends(require_api_key)
