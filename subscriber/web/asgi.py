"""Plain ASGI helpers for the guards in front of the app: what the headers say of the body,
the path the router sees, and a JSON answer sent before the app has read anything."""

from __future__ import annotations

import json

from starlette.types import Message, Receive, Scope, Send

__all__ = [
    "LARGE_BODY_BYTES", "OIP_PREFIX", "declared_length", "error_key", "has_body", "replaying",
    "reply", "route_path", "unread_may_be_large",
]  # fmt: skip

LARGE_BODY_BYTES = 64 * 1024
"""A body declared or streamed over this is large: a cap bounds how many are read at once."""

OIP_PREFIX = "/v2"
"""The Open Inference Protocol's routes (SPEC §14): their errors are ``{"error": …}``."""


def error_key(path: str) -> str:
    """The key of an error answer for ``path``: the protocol's ``error`` under ``/v2``
    (clients such as ``tritonclient`` read only that), FastAPI's ``detail`` elsewhere."""
    return "error" if path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/") else "detail"


def declared_length(scope: Scope) -> int | None:
    """The Content-Length of the request; None if absent, -1 if it is not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


def has_body(scope: Scope) -> bool:
    """Whether a body may follow the headers (HTTP/1: Content-Length or Transfer-Encoding;
    HTTP/2 streams may carry one without either)."""
    version: str = scope.get("http_version", "1.1")
    if version.startswith("2"):
        return declared_length(scope) != 0
    for name, value in scope["headers"]:
        if name == b"content-length":
            return not value.isdigit() or int(value) > 0
        if name == b"transfer-encoding":
            return True
    return False


def unread_may_be_large(scope: Scope) -> bool:
    """A body of unknown size or over :data:`LARGE_BODY_BYTES` may still be on its way: an
    early answer then closes the connection instead of letting the server drain it."""
    if not has_body(scope):
        return False
    length = declared_length(scope)
    return length is None or not 0 <= length <= LARGE_BODY_BYTES


def route_path(scope: Scope) -> str:
    """The path the router sees: ``scope["path"]`` without the ``root_path`` prefix."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :] or "/"
    return path


async def reply(
    send: Send,
    status: int,
    detail: str,
    *,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    close: bool = False,
    key: str = "detail",
) -> None:
    """Answer ``{key: detail}`` with ``status``; ``close`` ends the connection after it."""
    body = json.dumps({key: detail}, separators=(",", ":")).encode()
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    if close:
        head.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def replaying(first: Message, receive: Receive) -> Receive:
    """``receive`` that hands out ``first`` (a message already read) before anything else."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
