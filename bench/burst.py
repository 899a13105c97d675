"""Burst: 1,000 notifications within one second → how many loads, and the final version.

Run: ``.venv/bin/python -m bench.burst``
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from bench._util import listening, make_checkpoint, table
from common.settings import Settings
from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier
from subscriber import ServingNode


def run(notifications: int = 1000, seconds: float = 1.0) -> dict[str, float]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(persistent=False) as server:
        root = Path(tmp)
        incoming = root / "incoming"
        incoming.mkdir()
        files = [make_checkpoint(incoming, 1, name=f"model_{i}.safetensors") for i in range(5)]
        node = ServingNode(Settings(redis_url=server.url, model_dir=root, default_model_dir=root))
        with listening(node):
            registry = node.metrics.registry
            start = time.perf_counter()
            with CheckpointNotifier(server.url) as notifier:
                for version in range(1, notifications + 1):
                    saved = files[version % 5]
                    notifier.notify(saved.path, version=version, sha256=saved.sha256)
                    delay = start + version * seconds / notifications - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
            published = time.perf_counter() - start
            while (current := node.holder.current()) is None or current.version != notifications:
                time.sleep(0.001)
            final_after = time.perf_counter() - start
            model = {"model": node.metrics.model}
            loads = registry.get_sample_value("fks_load_seconds_count", model) or 0.0
    return {
        "notifications": float(notifications),
        "published over (s)": published,
        "loads": loads,
        "final version": float(current.version),
        "newest served after (s)": final_after,
    }


def main() -> None:
    print(table(["burst", "value"], [[k, v] for k, v in run().items()]))


if __name__ == "__main__":
    main()
