"""The house's layout holds: every package says what it does, every exported name imports.

The import rules between the packages themselves are import-linter's contracts
(``[tool.importlinter]`` in pyproject.toml, run by ``make lint``)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from types import ModuleType

import pytest

import common
import fks
import publisher
import subscriber

STAGES = ["web", "process", "pipeline", "model", "fetching", "runtime"]


def _modules() -> list[str]:
    names = []
    for root in (common, publisher, subscriber, fks):
        names.append(root.__name__)
        for info in pkgutil.walk_packages(root.__path__, prefix=root.__name__ + "."):
            if info.name.endswith("__main__"):
                continue
            names.append(info.name)
    return sorted(names)


MODULES = _modules()


def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.parametrize("name", MODULES)
def test_every_name_in_all_imports(name: str) -> None:
    """``from <module> import *`` gives exactly what ``__all__`` promises, nothing missing."""
    module = _module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        return
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not hold: {missing}"


@pytest.mark.parametrize("name", MODULES)
def test_every_module_opens_with_what_it_does(name: str) -> None:
    assert (_module(name).__doc__ or "").strip(), f"{name} has no docstring"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_of_the_node_says_what_it_may_import(stage: str) -> None:
    """``subscriber/<stage>/__init__.py`` is where a newcomer reads what the stage does and
    which stages it may use; the contracts of pyproject.toml enforce the same list."""
    doc = _module(f"subscriber.{stage}").__doc__ or ""
    assert "May import:" in doc


def test_the_node_is_its_stages() -> None:
    """``subscriber/`` holds the stages, the node that assembles them, the group of nodes of
    one process (one per instance, SPEC §13) and the package's errors: nothing else lies flat
    beside them."""
    flat = sorted(info.name for info in pkgutil.iter_modules(subscriber.__path__) if not info.ispkg)
    stages = sorted(info.name for info in pkgutil.iter_modules(subscriber.__path__) if info.ispkg)
    assert flat == ["errors", "group", "node"]
    assert stages == sorted(STAGES)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("subscriber.loader", "subscriber.model.loader"),
        ("subscriber.roots", "subscriber.fetching.roots"),
        ("subscriber.listener", "subscriber.pipeline.listener"),
        ("common.checkpoint_safetensors", "common.checkpoint.safetensors"),
        ("common.redis_connect", "common.redis_io.connect"),
    ],
)
def test_an_old_flat_path_imports_the_moved_module_itself(old: str, new: str) -> None:
    """Code written against the flat layout keeps working: the old name is the same module
    object (not a copy whose classes would differ), and a DeprecationWarning names the new."""
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__name__ == new


def test_a_name_that_never_existed_still_fails_to_import() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("subscriber.nothing_here")


@pytest.mark.parametrize("module", ["publisher", "fks.cli", "subscriber.web.app"])
def test_the_trainer_side_and_the_server_start_without_torch(module: str) -> None:
    """`fks notify` only hashes and publishes, and a server imports torch only once it loads a
    checkpoint: importing torch costs about 3 s of CPU (`fks notify` took 5.1 s with it,
    1.2 s without, on the 2-core development machine, 2026-12-07)."""
    probe = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
