"""Requests and errors since the last swap: what ``fks rollout`` watches on its canaries.

The inference routes call :meth:`Traffic.served` once per request with the generation of the
model it used; a swap (``ModelHolder.on_swap``) starts the counts again. A request that used
an older generation (it began before the swap) is not counted against the new model. An
error is a request the model failed: a non-finite action or an exception while inferring
(a client's bad input, 400 before inference, is not the model's error).
"""

from __future__ import annotations

import threading

__all__ = ["Traffic"]


class Traffic:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.generation = 0
        self.requests = 0
        self.errors = 0

    def swapped(self, generation: int) -> None:
        with self._lock:
            self.generation, self.requests, self.errors = generation, 0, 0

    def served(self, generation: int, *, error: bool = False) -> None:
        with self._lock:
            if generation == self.generation:
                self.requests += 1
                self.errors += error

    def snapshot(self) -> tuple[int, int]:
        """(requests, errors) of the served generation."""
        with self._lock:
            return self.requests, self.errors
