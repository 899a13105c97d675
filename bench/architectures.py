"""Architectures (SPEC §12): batch-1 latency of each built-in, eager vs the fast path, and
notify → swapped for a dqn checkpoint beside a sac_actor one, in one run.

- latency: each runner is the one a node builds (``prepare_checkpoint``, with
  ``STAT_PAIR_RL_JIT`` off then on), timed on the same state in the same process, interleaved
  over several rounds (best round kept), one torch thread (``FKS_TORCH_THREADS=1``); outputs
  are compared with eager on 256 random inputs. The MLPs (``sac_actor``, ``dqn``) must reach
  3x eager on the numpy fast path; a windowed ``dqn`` (LSTM) runs in torch either way.
- notify → swapped: one serving node in this process (real redis-server), one publisher in a
  separate process (as a trainer is), announcing sac_actor and dqn checkpoints in turn, so
  both kinds share the machine's conditions. Both sides stamp ``time.perf_counter()``
  (CLOCK_MONOTONIC). Beside it, each kind's own verify+load+build time (its floor).

Run: ``.venv/bin/python -m bench.architectures [--n 100]`` (not part of ``make bench``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench._util import SwapWatch, best_us, child_process, listening, summary_ms, table
from bench.swap_latency import publisher_process
from common.architectures.dqn import DQN, DQNConfig
from common.checkpoint import SavedCheckpoint, save_checkpoint
from common.policy import SACActor
from common.settings import Settings
from fks.redis_server import EmbeddedRedis
from subscriber import ServingNode
from subscriber.fetching.roots import ModelRoots
from subscriber.model.loader import LoadOptions, prepare_checkpoint

MODELS: dict[str, tuple[str, nn.Module]] = {
    "sac_actor 28→256→256→1": ("sac_actor", SACActor()),
    "dqn 28→256→256→3": ("dqn", DQN()),
    "dqn window 8, LSTM 128": ("dqn", DQN(DQNConfig(window=8, lstm_hidden=128))),
}
TARGET = 3.0


def latency(n: int = 2000) -> list[list[object]]:
    """Per built-in: eager µs, fast-path µs, speed-up, verdict, max |Δ| vs eager."""
    torch.set_num_threads(1)
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        roots = ModelRoots(Settings(model_dir=root, default_model_dir=root))
        for index, (label, (_, module)) in enumerate(MODELS.items()):
            torch.manual_seed(index)
            path = save_checkpoint(root / f"model_{index}.safetensors", module).path
            # eager: the torch module (the numpy backend serves sac_actor from its arrays)
            eager = prepare_checkpoint(path, roots, LoadOptions(jit=False, backend="torchscript"))
            fast = prepare_checkpoint(path, roots, LoadOptions(jit=True))
            rng = np.random.default_rng(index)
            state = rng.standard_normal((1, *eager.io.input_shape)).astype(np.float32)
            probe = rng.standard_normal((256, *eager.io.input_shape)).astype(np.float32)
            timings = {"eager": 0.0, "fast": 0.0}
            for _ in range(3):  # interleaved: both share the same moments of the machine
                for name, prepared in (("eager", eager), ("fast", fast)):
                    us = best_us(prepared.runner, state, n // 3 or 1)
                    timings[name] = min(timings[name] or us, us)
            ratio = timings["eager"] / timings["fast"]
            error = f"{float(np.abs(fast.runner(probe) - eager.runner(probe)).max()):.1e}"
            mlp = fast.runner.compiled
            verdict = (
                ("met" if ratio >= TARGET else "NOT met") + f" (≥ {TARGET:.0f}x)"
                if mlp
                else "torch (LSTM)"
            )
            rows.append(
                [label, fast.runner.backend, timings["eager"], timings["fast"], ratio, verdict,
                 error]
            )  # fmt: skip
    return rows


def _checkpoints(root: Path, n: int) -> list[tuple[str, SavedCheckpoint]]:
    files = []
    for version in range(1, 2 * n + 1):
        torch.manual_seed(version)
        kind = "sac_actor" if version % 2 else "dqn"
        module: nn.Module = SACActor() if kind == "sac_actor" else DQN()
        path = root / f"model_{version}.safetensors"
        files.append((kind, save_checkpoint(path, module, version=version)))
    return files


def swap(n: int = 100) -> dict[str, dict[str, float]]:
    """notify → swapped and the load floor per architecture, alternating sac_actor and dqn."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(persistent=False) as server:
        root = Path(tmp)
        incoming = root / "incoming"
        incoming.mkdir()
        files = _checkpoints(incoming, n)
        node = ServingNode(Settings(redis_url=server.url, model_dir=root, default_model_dir=root))
        watch = SwapWatch()
        node.holder.on_swap(watch)
        lags: dict[str, list[float]] = {"sac_actor": [], "dqn": []}
        loads: dict[str, list[float]] = {"sac_actor": [], "dqn": []}
        with listening(node), child_process(publisher_process, server.url) as ours:
            for kind, saved in files:
                start = time.perf_counter()
                prepare_checkpoint(saved.path, node.holder.roots, node.holder.options)
                loads[kind].append(time.perf_counter() - start)
                time.sleep(0.005)
                watch.expect(saved.version)
                ours.send((str(saved.path), saved.version, saved.sha256))
                # the first job waits for the spawned publisher to import torch: on a busy
                # machine that alone can take seconds (the lag is stamped by the child)
                if not watch.wait(60):
                    raise RuntimeError(f"version {saved.version} was not swapped in")
                done = time.perf_counter()
                lags[kind].append(done - ours.recv())
                time.sleep(0.005)
    return {
        **{f"{kind}: load (floor)": summary_ms(v) for kind, v in loads.items()},
        **{f"{kind}: notify → swapped": summary_ms(v) for kind, v in lags.items()},
    }


LATENCY_HEADERS = ["batch 1, 1 thread", "fast path", "eager µs", "fast µs", "x eager",
                   "3x target", "max |Δ| vs eager"]  # fmt: skip


def section(quick: bool) -> tuple[str, list[str], list[tuple[bool, str]]]:
    """What ``make bench`` writes: the command, the tables, and the verdicts."""
    rows = latency(200 if quick else 3000)
    results = swap(5 if quick else 100)
    body = [
        table(LATENCY_HEADERS, rows),
        "",
        table(["ms", "p50", "p90", "p99", "mean"], [[k, *r.values()] for k, r in results.items()]),
    ]
    verdicts = [
        (str(row[5]).startswith("met"), f"{row[0]}: numpy {float(str(row[4])):.1f}x eager ≥ 3x")
        for row in rows
        if row[1] == "numpy"
    ]
    command = "python -m bench.architectures --n 100"
    return command, body, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="checkpoints of each kind (100)")
    parser.add_argument("--calls", type=int, default=3000, help="batch-1 calls timed (3000)")
    args = parser.parse_args()
    print(table(LATENCY_HEADERS, latency(args.calls)))
    print()
    results = swap(args.n)
    print(
        table(["ms", "p50", "p90", "p99", "mean"], [[k, *r.values()] for k, r in results.items()])
    )


if __name__ == "__main__":
    main()
