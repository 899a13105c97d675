"""Serving-side lookups that fail (torch-free, so the HTTP layer can import them)."""

from __future__ import annotations

__all__ = ["NoPreviousModel", "NothingToLoad"]


class NothingToLoad(LookupError):
    """No checkpoint is found by the tier 1/2/3 resolution."""


class NoPreviousModel(LookupError):
    """Rollback asked for while no previous model is kept."""
