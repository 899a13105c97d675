"""Request bodies read under bounds, by plain ASGI middleware, before the app parses them.

:class:`BodyGuard` reads the whole body itself and hands it to the app in one message:

- over ``max_bytes`` (8 MiB), declared or streamed: 413, before any parsing;
- not complete within ``timeout`` seconds of the request (``FKS_BODY_TIMEOUT_SECONDS``): 408;
  a client can no longer hold a half-sent body, and its memory, for as long as it likes;
- large (declared or streamed over 64 KiB): at most ``max_large`` of them are read at once
  (``FKS_MAX_LARGE_BODIES``); one more is answered 503 with ``Retry-After`` at once, never
  queued. The slot is held while the body is read, not while the app works on it.

Each early answer closes the connection: the rest of that body is never read. It sits behind
:class:`~subscriber.web.auth.ApiKeyGuard`, so a client without the key never gets this far.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from subscriber.web.asgi import (
    LARGE_BODY_BYTES,
    declared_length,
    error_key,
    has_body,
    replaying,
    reply,
    route_path,
)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "RETRY_AFTER_SECONDS", "BodyGuard"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
RETRY_AFTER_SECONDS = 1


class _Refused(Exception):
    """A body the guard will not read further; the answer is sent by the guard."""

    def __init__(self, status: int, detail: str, *headers: tuple[bytes, bytes]) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


@dataclass(eq=False, repr=False)
class BodyGuard:
    """Bounds on size, time and concurrency of the request bodies of ``guarded`` paths."""

    app: ASGIApp
    _: KW_ONLY
    max_bytes: int = DEFAULT_MAX_BODY_BYTES
    timeout: float = 10.0
    max_large: int = 4
    guarded: Callable[[str], bool] | None = None
    # one event loop: checked and counted with no await between
    reading_large: int = field(init=False, default=0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not has_body(scope)
            or (self.guarded is not None and not self.guarded(route_path(scope)))
        ):
            await self.app(scope, receive, send)
            return
        try:
            message = await self._read(scope, receive)
        except _Refused as refused:
            key = error_key(route_path(scope))
            await reply(
                send, refused.status, refused.detail, headers=refused.headers, close=True, key=key
            )
            return
        if message is None:  # the client went away while sending: nobody to answer
            return
        await self.app(scope, replaying(message, receive), send)

    async def _read(self, scope: Scope, receive: Receive) -> Message | None:
        """The whole body as one ``http.request`` message; None if the client disconnected."""
        length = declared_length(scope)
        if length is not None and not 0 <= length <= self.max_bytes:
            raise self._too_large()
        large = length is not None and length > LARGE_BODY_BYTES
        if large:
            self._take_slot()
        try:
            with anyio.move_on_after(self.timeout):
                chunks: list[bytes] = []
                size = 0
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return None
                    chunk: bytes = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise self._too_large()
                    if size > LARGE_BODY_BYTES and not large:
                        self._take_slot()
                        large = True
                    if not message.get("more_body", False):
                        if not chunks:
                            return message  # the common case: the whole body at once
                        chunks.append(chunk)
                        return {"type": "http.request", "body": b"".join(chunks)}
                    chunks.append(chunk)
            raise _Refused(
                408,
                f"request body not received within {self.timeout:g} s (FKS_BODY_TIMEOUT_SECONDS)",
            )
        finally:
            if large:
                self.reading_large -= 1

    def _take_slot(self) -> None:
        if self.reading_large >= self.max_large:
            raise _Refused(
                503,
                f"{self.max_large} large request bodies are being read already "
                f"(FKS_MAX_LARGE_BODIES); retry in {RETRY_AFTER_SECONDS} s",
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
            )
        self.reading_large += 1

    def _too_large(self) -> _Refused:
        return _Refused(413, f"request body over {self.max_bytes} bytes")
