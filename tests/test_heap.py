"""A serving process freezes its startup objects out of the collector's full passes
(``subscriber/runtime/heap.py``): a real server reports how many, ``FKS_GC_FREEZE=false``
turns it off, and garbage made afterwards is still collected."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fks.server_process import ServerProcess


def frozen_objects(server: ServerProcess) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    match = re.search(r"^fks_gc_frozen_objects (\S+)$", text, re.MULTILINE)
    assert match is not None, "no fks_gc_frozen_objects in /metrics"
    return float(match.group(1))


@pytest.mark.parametrize(("setting", "frozen"), [(None, True), ("false", False)])
def test_a_server_freezes_its_startup_objects_unless_told_not_to(
    redis_url: str, model_root: Path, tmp_path: Path, setting: str | None, frozen: bool
) -> None:
    env = {
        "REDIS_URL": redis_url,
        "STAT_PAIR_RL_DIR": str(model_root),
        "FKS_DEFAULT_DIR": str(tmp_path / "default"),
    }
    if setting is not None:
        env["FKS_GC_FREEZE"] = setting
    with ServerProcess(env, log_path=tmp_path / "server.log") as server:
        count = frozen_objects(server)
    if frozen:
        assert count > 100_000  # torch, numpy, FastAPI, pydantic: hundreds of thousands
    else:
        assert count == 0


def test_garbage_made_after_the_freeze_is_still_collected() -> None:
    """In a fresh interpreter: a reference cycle dropped after the freeze is collected, and
    the frozen objects are not walked again (the collector's count excludes them)."""
    script = """
import gc, weakref
import torch  # what a serving process holds
from subscriber.runtime.heap import freeze_startup_heap

frozen = freeze_startup_heap()
assert frozen > 100_000, frozen
assert gc.get_freeze_count() == frozen

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a
alive = weakref.ref(a)
del a, b
gc.collect()
assert alive() is None, "a cycle made after the freeze was not collected"
assert len(gc.get_objects()) < frozen / 10, len(gc.get_objects())
print("ok", frozen)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")
