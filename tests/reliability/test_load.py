"""Load during swaps: 16 clients predicting while checkpoints are published
(``FKS_LOAD_PUBLICATIONS``: 500 in ``make reliability``, 150 in ``make test``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier
from tests.helpers import wait_for, write_checkpoint
from tests.reliability.harness import Clients, record, start_server, wait_version

PUBLICATIONS = int(os.environ.get("FKS_LOAD_PUBLICATIONS", "150"))  # make reliability: 500


def test_swaps_under_16_clients(aof_redis: EmbeddedRedis, tmp_path: Path) -> None:
    """No non-2xx, no response mixing two models, no client seeing a version go back."""
    root = tmp_path / "models"
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    files = [write_checkpoint(incoming, v) for v in range(1, PUBLICATIONS + 1)]
    server = start_server(aof_redis.url, root, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.url) as probe, CheckpointNotifier(aof_redis.url) as pub:
            wait_for(lambda: probe.get("/sac/health").json()["redis_connected"], timeout=15)
            pub.notify(files[0].path, version=1, sha256=files[0].sha256)
            wait_for(lambda: probe.get("/sac/ready").status_code == 200, timeout=15)
            with Clients(server.url, n=16) as clients:
                start = time.monotonic()
                for saved in files[1:]:
                    pub.notify(saved.path, version=saved.version, sha256=saved.sha256)
                    time.sleep(0.01)
                published = time.monotonic() - start
                caught_up = wait_version(clients, PUBLICATIONS, start, timeout=20)
                time.sleep(0.2)
            swaps = probe.get("/sac/model/info").json()["generation"]
    finally:
        server.stop()
    responses = clients.responses
    mixed = [
        r
        for r in responses
        if r.status == 200 and r.path != str(incoming / f"model_{r.version}.pt")
    ]
    failures = clients.failures()
    record(
        f"load: 16 clients x {PUBLICATIONS} publications",
        requests=len(responses),
        non_2xx=len(failures),
        transport_errors=len(clients.errors),
        mixed=len(mixed),
        regressions=clients.regressions(),
        swaps=swaps,
        publish_seconds=published,
        newest_served_after_s=caught_up,
        rps=len(responses) / (published + 0.2),
    )
    assert failures == [] and clients.errors == []
    assert mixed == []
    assert clients.regressions() == 0
    assert len({r.version for r in responses}) > 50, "clients should see many of the swaps"
