"""Serving-side lookups that fail (torch-free, so the HTTP layer can import them)."""

from __future__ import annotations

__all__ = ["ModelChanged", "NoPreviousModel", "NotEveryWorker", "NothingToLoad"]


class NothingToLoad(LookupError):
    """No checkpoint is found by the tier 1/2/3 resolution."""


class NoPreviousModel(LookupError):
    """Rollback asked for while no previous model is kept."""


class ModelChanged(LookupError):
    """A rollback on condition (asked by a sibling worker) found other models served or kept
    than the ones it was asked for: a decision landed meanwhile."""


class NotEveryWorker(RuntimeError):
    """An operator's reload or rollback did not reach every worker of ``fks serve --workers N``
    (``subscriber/process/operations.py``): the message names the workers that did not follow and
    what the port serves now; ``status`` is the HTTP status to answer (409 or 503, or the
    status of a sibling's failed reload)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
