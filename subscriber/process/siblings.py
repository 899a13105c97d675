"""The workers of one ``fks serve --workers N`` talk to each other over Unix sockets.

Each worker listens on ``slot-<slot>.sock`` in the supervisor's slot directory
(``FKS_WORKER_SLOTS``, a temporary directory of mode 0700: only the user running the server
can connect; for the second and later instances of a node of several, SPEC §13, on
``slot-<slot>.<index>.sock``, so each instance's operations reach that instance's siblings)
and answers each connection's one JSON object (one line, at most
``MAX_MESSAGE`` bytes) with one JSON object. :meth:`Siblings.ask` sends a request to every
other worker (the slots ``0 .. FKS_WORKER_COUNT - 1`` but its own) at once and returns, per
worker, its answer or why none came in time. Nothing here touches Redis, so the channel works
while Redis is away, and nothing leaves the machine. What the requests mean is
``subscriber/process/operations.py``'s business; this module moves plain JSON objects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MAX_MESSAGE", "Handler", "Reply", "Siblings"]

log = logging.getLogger(__name__)

MAX_MESSAGE = 64 * 1024
Handler = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Reply:
    """One sibling's answer, or why it gave none (``answer`` None, ``error`` says why)."""

    node: str
    answer: dict[str, Any] | None
    error: str = ""


@dataclass(eq=False, repr=False)
class Siblings:
    """This worker's socket (answering with ``handler``) and the way to its siblings'."""

    directory: Path
    slot: int
    count: int
    _: KW_ONLY
    node_ids: Callable[[int], str]
    handler: Handler
    instance_index: int = 0  # which of the node's instances (SPEC §13): sockets of its own
    _server: _Server | None = field(init=False, default=None)
    _thread: threading.Thread | None = field(init=False, default=None)

    def path(self, slot: int) -> Path:
        if self.instance_index == 0:
            return self.directory / f"slot-{slot}.sock"
        return self.directory / f"slot-{slot}.{self.instance_index}.sock"

    @property
    def others(self) -> list[int]:
        """The siblings' slots."""
        return [slot for slot in range(self.count) if slot != self.slot]

    # -- this worker's side ------------------------------------------------------------------

    def start(self) -> Siblings:
        """Listen on this worker's socket. The slot's lock is ours, so a socket file there is a
        dead predecessor's: it is replaced. A failure is logged, never raised (the siblings
        then report this worker as not answering)."""
        path = self.path(self.slot)
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._server = _Server(path, self.handler)
        except OSError as exc:
            log.warning("worker channel: cannot listen on %s (%s); the other workers of this "
                        "port cannot reach this one", path, exc)  # fmt: skip
            return self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="fks-siblings",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with contextlib.suppress(OSError):
            self.path(self.slot).unlink()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    # -- asking the siblings -------------------------------------------------------------------

    def ask(self, request: dict[str, Any], timeout: float) -> list[Reply]:
        """``request`` sent to every sibling at once; their replies in slot order, each within
        ``timeout`` seconds or reported as not answered."""
        payload = json.dumps(request).encode() + b"\n"
        replies: dict[int, Reply] = {}

        def one(slot: int) -> None:
            replies[slot] = self._ask_one(slot, payload, timeout)

        threads = [
            threading.Thread(target=one, args=(slot,), name="fks-siblings-ask", daemon=True)
            for slot in self.others
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout + 1.0
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [
            replies.get(slot, Reply(self.node_ids(slot), None, f"no answer in {timeout:.0f} s"))
            for slot in self.others
        ]

    def _ask_one(self, slot: int, payload: bytes, timeout: float) -> Reply:
        node = self.node_ids(slot)
        deadline = time.monotonic() + timeout
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(self.path(slot)))
                sock.sendall(payload)
                data = _read_line(sock, deadline)
        except (FileNotFoundError, ConnectionRefusedError):
            return Reply(node, None, "not running (nothing listens on its socket)")
        except TimeoutError:
            return Reply(node, None, f"no answer in {timeout:.0f} s")
        except OSError as exc:
            return Reply(node, None, f"unreachable ({exc})")
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            return Reply(node, None, "answered something that is not a JSON object")
        return Reply(str(answer.get("node") or node), answer)


def _read_line(sock: socket.socket, deadline: float) -> bytes:
    """Bytes up to the first newline (at most MAX_MESSAGE), by ``deadline``."""
    data = b""
    while b"\n" not in data and len(data) <= MAX_MESSAGE:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


class _Connection(socketserver.StreamRequestHandler):
    timeout = 5.0  # for reading the request and writing the answer, not for the handler

    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        try:
            request = json.loads(self.rfile.readline(MAX_MESSAGE + 1))
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
            answer = server.handler(request)
        except Exception as exc:  # noqa: BLE001 - a sibling's request must not kill us
            log.exception("worker channel: a request failed")
            answer = {"ok": False, "status": 500, "error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):  # the asker gave up: nothing to tell
            self.wfile.write(json.dumps(answer).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, handler: Handler) -> None:
        self.handler = handler
        super().__init__(str(path), _Connection)
