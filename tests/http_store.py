"""A loopback HTTP server in a thread that serves checkpoints, well or badly, for the https
path of the fetch seam (plain ``http://`` is allowed to loopback hosts only)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Self

from common.closing import Service

# ok; truncated: a Content-Length, half the body; cut_no_length: no length, half the body;
# no_length: no length, the whole body; wrong_bytes: the length, other bytes; fail_once: a 503
# first; slow: 64 KiB every 50 ms; stall: the length and 64 KiB, then nothing until release
Behaviour = Literal[
    "ok", "truncated", "cut_no_length", "wrong_bytes", "no_length", "fail_once", "slow", "stall"
]


@dataclass
class Entry:
    data: bytes
    behaviour: Behaviour = "ok"


class HttpStore(Service):
    """``http://127.0.0.1:<port>/<name>``: each name served by its :class:`Entry`."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.requests: Counter[str] = Counter()
        self.bytes_sent: Counter[str] = Counter()
        self.release = threading.Event()  # a stalled answer goes on (set at close)
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                store.serve(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def put(self, name: str, data: bytes, behaviour: Behaviour = "ok") -> str:
        self.entries[name] = Entry(data, behaviour)
        return f"{self.url}/{name}"

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        name = handler.path.lstrip("/")
        self.requests[name] += 1
        entry = self.entries.get(name)
        if entry is None:
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        data, how = entry.data, entry.behaviour
        if how == "fail_once" and self.requests[name] == 1:
            handler.send_response(503)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if how == "wrong_bytes":
            data = bytes(b ^ 0x01 for b in data[:64]) + data[64:]
        handler.send_response(200)
        if how not in ("no_length", "cut_no_length"):
            handler.send_header("Content-Length", str(len(data)))
        else:
            handler.send_header("Connection", "close")
        handler.end_headers()
        body = data[: len(data) // 2] if how in ("truncated", "cut_no_length") else data
        step = 64 * 1024
        try:
            for start in range(0, len(body), step):
                if how == "stall" and start:
                    handler.wfile.flush()
                    self.release.wait(60)
                handler.wfile.write(body[start : start + step])
                self.bytes_sent[name] += len(body[start : start + step])
                if how == "slow":
                    time.sleep(0.05)
        except OSError:
            pass  # the client hung up (a byte cap, a timeout)
        if how in ("truncated", "no_length", "cut_no_length"):
            handler.close_connection = True

    def start(self) -> Self:
        self.thread.start()
        return self

    def close(self) -> None:
        self.release.set()
        if self.thread.ident is not None:  # shutdown() waits for a loop that never ran
            self.server.shutdown()
        self.server.server_close()
