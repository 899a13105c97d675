"""Memory: the server's RSS over many swaps stays within served + kept previous model.

``FKS_MEMORY_SWAPS`` swaps (300 in ``make test``: 200 after the warm-up of 100, 800 MB of
4 MB models through the server, so a leak of 1/50 of a model, 80 KB, per swap would break the
budget twice over; 1,000 in ``make reliability``). RSS is compared once freed memory has been
returned: a swap schedules that ~1 s later.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from common.policy import PolicyConfig
from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier
from subscriber.runtime.memory import TRIM_DELAY_S
from tests.helpers import wait_for, write_checkpoint
from tests.reliability.harness import record, start_server

SWAPS = int(os.environ.get("FKS_MEMORY_SWAPS", "300"))  # make reliability: 1000
WARM = 100  # imports, arenas and caches have settled by then
BIG = PolicyConfig(hidden=(1024, 1024))  # ~4 MB of weights: a leak would show


def settled_rss(process: psutil.Process) -> float:
    """RSS in MB once the trim scheduled by the last swap has run (subscriber/runtime/memory.py):
    the lowest of the samples over the 2 s after its delay, since on a busy machine (the
    suite's other worker) the trim thread may run late. A leak shows in every sample."""
    time.sleep(TRIM_DELAY_S + 0.3)
    samples = []
    for _ in range(9):
        samples.append(process.memory_info().rss / 2**20)
        time.sleep(0.25)
    return float(min(samples))


def test_rss_flat_over_swaps(tmp_path: Path) -> None:
    """RSS after the last of ``SWAPS`` awaited swaps is within served + previous model of
    RSS after the first 100, or, where a busy machine trims unevenly, does not grow: the
    in-run readings at the end stand within one model of those at the start."""
    assert SWAPS >= 2 * WARM, "too few swaps to tell growth from warm-up"
    root = tmp_path / "models"
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    files = [write_checkpoint(incoming, 1, name=f"model_{i}.pt", config=BIG) for i in range(3)]
    model_mb = files[0].size / 2**20
    with EmbeddedRedis(persistent=False) as server_redis:
        server = start_server(server_redis.url, root, tmp_path / "server.log")
        try:
            assert server.process is not None
            process = psutil.Process(server.process.pid)

            def info() -> dict[str, Any]:
                return dict(httpx.get(server.url + "/sac/model/info").json())

            wait_for(lambda: httpx.get(server.url + "/sac/health").json()["redis_connected"])
            samples: list[tuple[int, float]] = []
            with CheckpointNotifier(server_redis.url) as pub:
                for version in range(1, SWAPS + 1):
                    saved = files[version % 3]
                    pub.notify(saved.path, version=version, sha256=saved.sha256)
                    # Wait for each swap, so that N publications are N swaps.
                    wait_for(lambda v=version: info().get("version") == v, timeout=10, every=0.01)  # type: ignore[misc]
                    if version % 50 == 0:
                        samples.append((info()["generation"], process.memory_info().rss / 2**20))
                    if version == WARM:
                        warm = settled_rss(process)
            generations = info()["generation"]
            end = settled_rss(process)
        finally:
            server.stop()
    peak = max(rss for _, rss in samples)
    record(
        f"memory: server RSS over {SWAPS:,} swaps of a 4 MB policy",
        swaps=generations, model_mb=model_mb, rss_after_100_mb=warm, rss_end_mb=end,
        peak_mb=peak, growth_mb=end - warm, budget_mb=2 * model_mb,
    )  # fmt: skip
    assert generations == SWAPS
    figures = f"after {WARM}: {warm:.1f} MB, end {end:.1f} MB, every 50: {samples}"
    if end - warm > 2 * model_mb:
        # The two settled readings can differ by more than the allocator's own noise on a
        # busy machine (seen under pytest -n 3: 326.1 → 334.6 MB, while the samples taken
        # every 50 swaps stood at 351.9, 352.0, 348.0). A leak keeps growing: the highest of
        # the last two in-run readings (no trim awaited; the highest, as a trim may land on
        # one) must not exceed the highest of the first two by one model.
        first, last = max(r for _, r in samples[:2]), max(r for _, r in samples[-2:])
        assert last - first <= model_mb, f"still growing, {last - first:.1f} MB: {figures}"
