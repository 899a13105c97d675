"""Where checkpoints may come from: the model roots and the tier 1/2/3 resolution (SPEC §4).

- tier 1: ``STAT_PAIR_RL_MODEL``, an explicit file;
- tier 2: ``STAT_PAIR_RL_DIR``, the newest ``model_*.pt`` or ``model_*.safetensors`` by
  mtime (SPEC §8);
- tier 3: ``cache/models/rl/stat_pair/``, likewise.

The roots are the directories of the three tiers. A path from a notification is confined to
them after resolving symlinks and ``..``; a relative path is looked up in each root in order.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from common.errors import CheckpointLoadError, CheckpointRejected
from common.settings import Settings

__all__ = ["CHECKPOINT_SUFFIXES", "ModelRoots", "Resolved", "checkpoints_newest_first"]

CHECKPOINT_SUFFIXES = (".pt", ".safetensors")


@dataclass(frozen=True, slots=True)
class Resolved:
    """The checkpoint the tiers point at, and the path whose mtime tells when to look again."""

    path: Path | None
    watch: Path
    tier: int


class ModelRoots:
    """The confinement rule and the tier resolution for one server's settings."""

    def __init__(self, settings: Settings) -> None:
        self.explicit = settings.model_path.expanduser().absolute() if settings.model_path else None
        self.directory = settings.model_dir.expanduser().absolute() if settings.model_dir else None
        self.default = settings.default_model_dir.expanduser().absolute()
        self.roots = [p.absolute() for p in settings.model_roots()]
        # Resolved once: a root is configuration, and realpath costs a syscall per component.
        self._real_roots = [_realpath(root) for root in self.roots]

    def _holding(self, real: Path) -> list[Path]:
        """The (resolved) roots that ``real`` lies in."""
        return [root for root in self._real_roots if real.is_relative_to(root)]

    def _inside(self, real: Path) -> bool:
        return bool(self._holding(real))

    def root_of(self, real: Path) -> Path:
        """The (resolved) model root that ``real``, a path :meth:`confine` returned, lies
        in: the deepest, if roots nest. What a load reaches it from, through real
        directories only (``common/checkpoint/file.py``)."""
        inside = self._holding(real)
        if not inside:
            raise CheckpointRejected(f"{real} is outside the model roots", reason="outside_roots")
        return max(inside, key=lambda root: len(root.parts))

    def confine(self, path: str | os.PathLike[str]) -> Path:
        """The real path of ``path`` if it lies inside a model root, else CheckpointRejected.

        Symlinks and ``..`` are resolved first. A relative path is tried in each root in
        order; the first existing one wins.
        """
        raw = Path(path).expanduser()
        candidates = [raw] if raw.is_absolute() else [root / raw for root in self.roots]
        try:
            inside = [real for real in map(_realpath, candidates) if self._inside(real)]
        except OSError as exc:  # EINVAL, ELOOP, ...: a path changing while it is resolved
            raise CheckpointLoadError(
                f"{os.fspath(path)!r} could not be resolved: {exc.strerror or exc}",
                reason="unreadable",
            ) from None
        if len(inside) == 1:  # an absolute path, or one root: nothing to choose between
            return inside[0]
        if inside:
            # os.path.exists, not Path.exists: a name over the file system's limit is False
            # there (the stat that follows says why), where Path.exists raises ENAMETOOLONG
            return next((real for real in inside if os.path.exists(real)), inside[0])
        shown = ", ".join(str(r) for r in self.roots)
        raise CheckpointRejected(
            f"{os.fspath(path)!r} resolves outside the model roots ({shown})",
            reason="outside_roots",
        )

    def candidates(self, limit: int = 8, *, only_tier: int | None = None) -> list[Path]:
        """What may be served, best first: tier 1, then tiers 2 and 3 newest first (a cold
        start tries them in this order); ``only_tier`` keeps one tier's files."""
        found: list[Path] = []
        if only_tier in (None, 1) and self.explicit is not None and self.explicit.is_file():
            found.append(self.explicit)
        for tier, directory in ((2, self.directory), (3, self.default)):
            if directory is not None and only_tier in (None, tier):
                found += checkpoints_newest_first(directory)
        return found[:limit]

    def resolve(self) -> Resolved:
        """Tier 1, else the newest ``model_*`` checkpoint of tier 2, else of tier 3."""
        if self.explicit is not None and self.explicit.is_file():
            return Resolved(self.explicit, self.explicit, 1)
        for tier, directory in ((2, self.directory), (3, self.default)):
            if directory is None:
                continue
            newest = newest_checkpoint(directory)
            if newest is not None:
                return Resolved(newest, directory, tier)
        watch = self.explicit or self.directory or self.default
        return Resolved(None, watch, 0)


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key under which ``model_10.pt`` follows ``model_9.pt``."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(name))


_DIGITS = re.compile(r"(\d+)")


def checkpoints_newest_first(directory: Path) -> list[Path]:
    """The ``model_*.pt`` and ``model_*.safetensors`` files of ``directory``, newest mtime
    first (ties: by name, with numbers compared as numbers: ``model_10.pt`` is newer than
    ``model_9.safetensors``, and of one stem ``.safetensors`` is newer than ``.pt``)."""
    found: list[tuple[tuple[int, tuple[tuple[int, int | str], ...]], Path]] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        if not (entry.name.startswith("model_") and entry.name.endswith(CHECKPOINT_SUFFIXES)):
            continue
        try:
            if entry.is_file():
                found.append(((entry.stat().st_mtime_ns, _natural(entry.name)), Path(entry.path)))
        except OSError:
            continue
    return [path for _, path in sorted(found, reverse=True)]


def _realpath(path: Path) -> Path:
    return Path(os.path.realpath(path))


def newest_checkpoint(directory: Path) -> Path | None:
    """The ``model_*`` checkpoint with the newest mtime in ``directory`` (ties: by name)."""
    ordered = checkpoints_newest_first(directory)
    return ordered[0] if ordered else None
