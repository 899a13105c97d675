"""Inference: batch-1 policy latency, eager vs each compiled path; RSS around a swap.

Each runner is the one the server builds (``compile_runner``), timed on the same state, in the
same process, interleaved over several rounds (best round kept); outputs are compared with
eager on 256 random states.

Run: ``.venv/bin/python -m bench.inference``
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from bench._util import best_us, make_checkpoint, table
from common.checkpoint import build_policy, load_checkpoint
from common.notification import CheckpointNotification
from common.settings import Settings
from subscriber import ModelHolder
from subscriber.model.inference import EagerRunner, Runner, compile_runner
from subscriber.pipeline.decider import Decider


def latency(n: int = 2000) -> list[list[object]]:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        policy = build_policy(load_checkpoint(make_checkpoint(Path(tmp), 1).path))
    runners: dict[str, Runner] = {
        "eager (torch)": EagerRunner(policy),
        "numpy (the default, with or without JIT)": compile_runner(policy, "numpy"),
        "torchscript (FKS_COMPILE_BACKEND=torchscript, JIT)": compile_runner(policy, "torchscript"),
    }
    state = np.random.default_rng(0).standard_normal((1, 28)).astype(np.float32)
    probe = np.random.default_rng(1).standard_normal((256, 28)).astype(np.float32)
    reference = runners["eager (torch)"](probe)
    timings = {name: best_us(r, state, n) for name, r in runners.items()}
    eager = timings["eager (torch)"]
    return [
        [name, timings[name], eager / timings[name], float(np.abs(r(probe) - reference).max())]
        for name, r in runners.items()
    ]


def swap_rss() -> list[list[object]]:
    """RSS of this process before, during (peak) and after swapping a 4 MB policy in."""
    from common.policy import PolicyConfig

    torch.set_num_threads(1)
    process = psutil.Process()
    big = PolicyConfig(hidden=(1024, 1024))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = [make_checkpoint(root, v, config=big) for v in (1, 2)]
        holder = ModelHolder(Settings(model_dir=root, default_model_dir=root))
        decider = Decider(holder)
        decider.apply(CheckpointNotification(model_path=str(files[0].path), version=1))
        before = process.memory_info().rss / 2**20
        peak = [before]
        holder.on_swap(lambda _: peak.append(process.memory_info().rss / 2**20))
        decider.apply(CheckpointNotification(model_path=str(files[1].path), version=2))
        while holder.trim.pending:  # freed memory is returned ~1 s after a swap
            time.sleep(0.05)
        after = process.memory_info().rss / 2**20
        size = files[0].size / 2**20
    return [["model file", size], ["RSS before", before], ["RSS at the swap (peak)", max(peak)],
            ["RSS after", after]]  # fmt: skip


def main() -> None:
    rows = latency()
    print(table(["runner", "batch-1 µs", "x eager", "max |Δ| vs eager"], rows))
    print()
    print(table(["RSS around one swap", "MB"], swap_rss()))


if __name__ == "__main__":
    main()
