"""RSS over 1,000 swaps: it must not grow beyond the served + the kept previous model.

Swaps go through ``ModelHolder.apply`` (the same path as a notification) with a larger policy
(hidden 1024x1024, ~4.5 MB of weights) so that a leaked model would show above the noise.

Run: ``.venv/bin/python -m bench.swap_memory [--swaps 1000]``
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

import psutil
import torch

from bench._util import make_checkpoint, table
from common.notification import CheckpointNotification
from common.policy import PolicyConfig
from common.settings import Settings
from subscriber import ModelHolder
from subscriber.pipeline.decider import Decider

CONFIG = PolicyConfig(hidden=(1024, 1024))


def settle(holder: ModelHolder) -> None:
    """Let the trim scheduled by the last swap run (subscriber/runtime/memory.py), then collect."""
    while holder.trim.pending:
        time.sleep(0.05)
    gc.collect()


def run(swaps: int = 1000) -> dict[str, float]:
    torch.set_num_threads(1)
    process = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = [
            make_checkpoint(root, v, name=f"model_{v}.safetensors", config=CONFIG)
            for v in (1, 2, 3)
        ]
        model_mb = files[0].size / 2**20
        holder = ModelHolder(Settings(model_dir=root, default_model_dir=root))
        decider = Decider(holder)

        def swap(version: int) -> None:
            saved = files[version % 3]
            note = CheckpointNotification(model_path=str(saved.path), version=version)
            if not decider.apply(note).applied:
                raise RuntimeError(f"swap {version} failed")

        warmup = min(50, swaps // 4)
        for version in range(1, warmup + 1):
            swap(version)
        settle(holder)
        before = process.memory_info().rss / 2**20
        peak = before
        for version in range(warmup + 1, swaps + 1):
            swap(version)
            if version % 50 == 0:
                peak = max(peak, process.memory_info().rss / 2**20)
        settle(holder)
        after = process.memory_info().rss / 2**20
        return {
            "model file (MB)": model_mb,
            "budget: served + previous (MB)": 2 * model_mb,
            "RSS after warm-up (MB)": before,
            "RSS after all swaps (MB)": after,
            "peak RSS (MB)": peak,
            "growth (MB)": after - before,
            "swaps": float(swaps),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", type=int, default=1000)
    results = run(parser.parse_args().swaps)
    print(table(["measure", "value"], [[k, v] for k, v in results.items()]))
    ok = results["growth (MB)"] <= results["budget: served + previous (MB)"]
    print(f"\ngrowth within served + previous: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
