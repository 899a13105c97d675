"""Old import paths of modules that moved into packages (issue 25), kept working for a while.

An old name (``loader`` of the serving side's flat layout, before its stages) gives the very
module object now at its new name (``model.loader`` there), not a copy, and says once, as a
``DeprecationWarning``, where it lives now. Nothing else is aliased: a name that never existed
still fails to import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Mapping, Sequence
from types import ModuleType

__all__ = ["alias_moved_modules"]


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{self.old} moved to {self.new}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """The module is the one already imported under its new name: nothing to run."""


class _MovedFinder(importlib.abc.MetaPathFinder):
    def __init__(self, moved: Mapping[str, str]) -> None:
        self.moved = dict(moved)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        new = self.moved.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(fullname, new))


def alias_moved_modules(moved: Mapping[str, str]) -> None:
    """Let each old dotted name in ``moved`` import the module at its new name."""
    sys.meta_path.append(_MovedFinder(moved))
