"""The swap storm: predict latency while a trainer saves (and announces) 20 checkpoints a
second, ours (push) beside seed 000's design (``bench/baseline_app.py``), in one run.

Servers, each one uvicorn worker, 16 ``wrk`` connections:

- ours (push), default configuration and ``STAT_PAIR_RL_JIT=true`` (two instances);
- ours with stale notices: the same saves and announcements, each with an old version, so
  everything runs but the load (the control: the floor of our storm);
- ours with a 0.5 ms switch interval (``FKS_SWITCH_INTERVAL_MS=0.5``; the default leaves
  Python's 5 ms);
- the seed design, tier 1 (one ``os.stat`` per request; reload inline), both configurations;
- the seed design, tier 2 (glob + stat of a directory of 30 dated files per request).

Every side's trainer does the same I/O: each tick saves a 300 KB actor atomically (ours: 30
rotating names, announced with a new version and its sha256; the seed's tier 1: its one
fixed path; tier 2: a new dated file, the oldest beyond 30 deleted). Each round measures
every side in turn, a quiet period then a storm right after it; the table keeps the medians
over rounds, and each ratio is the median of the rounds' own ratios (one round swings by
±0.3 on a shared machine).

Run: ``.venv/bin/python -m bench.storm [--seconds 3] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

from bench._util import table
from bench.http import Uvicorn, load, median, started, with_swaps
from common.checkpoint import SavedCheckpoint, save_checkpoint
from common.policy import SACActor
from fks.redis_server import EmbeddedRedis
from publisher import CheckpointNotifier

OURS, OURS_JIT, CONTROL = "ours (push)", "ours (push), JIT", "ours, stale notices (control)"
OURS_FINE = "ours (push), switch interval 0.5 ms"
SEED1, SEED1_JIT = "seed design, tier 1 (one stat)", "seed design, tier 1, JIT"
SEED2 = "seed design, tier 2 (30 files)"
HEADERS = ["server", "quiet p50 ms", "quiet p99 ms", "storm p50 ms", "storm p99 ms",
           "storm/quiet p99", "loads/s in storm", "errors"]  # fmt: skip

Samples = list[dict[str, float]]


@dataclass
class Side:
    """One server under the storm: a trainer tick, and how to count the loads it caused."""

    name: str
    app: Uvicorn
    tick: Callable[[], None]
    loads: Callable[[], int]
    quiet: Samples = field(default_factory=list)
    storm: Samples = field(default_factory=list)


@dataclass
class Storm:
    rows: list[list[object]]
    sides: dict[str, Side]

    def ratio(self, top: str, bottom: str, *, quiet: bool = False) -> float:
        """The median over rounds of ``top``'s storm p99 / ``bottom``'s (storm, or quiet)."""
        t, b = self.sides[top], self.sides[bottom]
        pairs = zip(t.storm, b.quiet if quiet else b.storm, strict=True)
        return statistics.median(x["p99"] / y["p99"] for x, y in pairs)


class Trainer:
    """Saves three pre-built actors in turn, each tick with the next version."""

    def __init__(self) -> None:
        self.actors: list[SACActor] = []
        for seed in range(3):
            torch.manual_seed(seed)
            self.actors.append(SACActor())
        self.version = 1

    def save(self, path: Path) -> SavedCheckpoint:
        self.version += 1
        actor = self.actors[self.version % 3]
        return save_checkpoint(path, actor, version=self.version)

    def announcing(
        self,
        notifier: CheckpointNotifier,
        directory: Path,
        *,
        stale: bool = False,
    ) -> Callable[[], None]:
        """Ours: save under one of 30 names, announce it (or, stale, with version 1)."""
        directory.mkdir(exist_ok=True)

        def tick() -> None:
            saved = self.save(directory / f"model_{self.version % 30}.safetensors")
            notifier.notify(saved.path, version=1 if stale else saved.version, sha256=saved.sha256)

        return tick

    def dated(self, directory: Path) -> None:
        """Tier 2: a new dated file, and the oldest beyond 30 deleted."""
        self.save(
            directory / f"model_{time.strftime('%Y%m%dT%H%M%S')}_{self.version:08d}.safetensors"
        )
        for old in sorted(directory.glob("model_*"))[:-30]:
            old.unlink(missing_ok=True)


def run(seconds: float = 3.0, rate: float = 20.0, rounds: int = 5) -> Storm:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(persistent=False) as server:
        root = Path(tmp)
        trainer = Trainer()
        with contextlib.ExitStack() as stack:
            sides = _sides(stack, root, server.url, trainer)
            for _ in range(rounds):
                for side in sides:
                    url = side.app.url + "/sac/predict"
                    side.quiet.append(load(url, seconds))
                    before, began = side.loads(), time.perf_counter()
                    storm = with_swaps(lambda u=url: load(u, seconds), side.tick, rate)  # type: ignore[misc]
                    elapsed = time.perf_counter() - began
                    storm["loads/s"] = (side.loads() - before) / elapsed
                    side.storm.append(storm)
    rows: list[list[object]] = [
        [s.name, median(s.quiet, "p50"), median(s.quiet, "p99"), median(s.storm, "p50"),
         median(s.storm, "p99"), 0.0, median(s.storm, "loads/s"),
         sum(x["errors"] for x in s.quiet + s.storm)]
        for s in sides
    ]  # fmt: skip
    result = Storm(rows, {s.name: s for s in sides})
    for row in rows:
        row[5] = result.ratio(str(row[0]), str(row[0]), quiet=True)
    return result


def _sides(stack: contextlib.ExitStack, root: Path, url: str, trainer: Trainer) -> list[Side]:
    sides: list[Side] = []
    for jit in (False, True):
        env = {"STAT_PAIR_RL_JIT": "true" if jit else "false"}
        instance = "jit" if jit else "default"
        notifier = stack.enter_context(CheckpointNotifier(url, instance))  # kept, as a trainer
        ours_dir = root / f"ours-{instance}"
        trainer.save(ours_dir / "model_0.safetensors")
        ours = started(stack, "subscriber.web.app:create_app", {
            **env, "REDIS_URL": url, "FKS_INSTANCE_ID": instance,
            "STAT_PAIR_RL_DIR": str(ours_dir), "FKS_DEFAULT_DIR": str(ours_dir)})  # fmt: skip
        seed_file = root / f"seed-{instance}" / "model.safetensors"
        trainer.save(seed_file)
        seed = started(stack, "bench.baseline_app:create",
                       {**env, "STAT_PAIR_RL_MODEL": str(seed_file)})  # fmt: skip
        sides.append(Side(OURS_JIT if jit else OURS, ours,
                          trainer.announcing(notifier, ours_dir), _generations(ours)))  # fmt: skip
        if not jit:
            control = trainer.announcing(notifier, ours_dir / "control", stale=True)
            sides.append(Side(CONTROL, ours, control, _generations(ours)))
            # the same server with a finer switch interval (FKS_SWITCH_INTERVAL_MS=0.5)
            slow_notifier = stack.enter_context(CheckpointNotifier(url, "switch05"))
            slow_dir = root / "ours-switch05"
            trainer.save(slow_dir / "model_0.safetensors")
            slow = started(stack, "subscriber.web.app:create_app", {
                **env, "REDIS_URL": url, "FKS_INSTANCE_ID": "switch05",
                "FKS_SWITCH_INTERVAL_MS": "0.5", "STAT_PAIR_RL_DIR": str(slow_dir),
                "FKS_DEFAULT_DIR": str(slow_dir)})  # fmt: skip
            sides.append(Side(OURS_FINE, slow, trainer.announcing(slow_notifier, slow_dir),
                              _generations(slow)))  # fmt: skip
        sides.append(Side(SEED1_JIT if jit else SEED1, seed,
                          _resaving(trainer, seed_file), _reloads(seed)))  # fmt: skip
    dated = root / "dated"
    dated.mkdir()
    for _ in range(30):
        trainer.dated(dated)
    tier2 = started(stack, "bench.baseline_app:create", {"STAT_PAIR_RL_DIR": str(dated)})
    sides.append(Side(SEED2, tier2, lambda: trainer.dated(dated), _reloads(tier2)))
    return sides


def _resaving(trainer: Trainer, path: Path) -> Callable[[], None]:
    """Tier 1: the one fixed path, saved again."""
    return lambda: None if trainer.save(path) is None else None


def _generations(app: Uvicorn) -> Callable[[], int]:
    return lambda: int(httpx.get(app.url + "/sac/model/info").json()["generation"])


def _reloads(app: Uvicorn) -> Callable[[], int]:
    return lambda: int(httpx.get(app.url + "/sac/reloads").json()["reloads"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    storm = run(args.seconds, rounds=args.rounds)
    print(table(HEADERS, storm.rows))
    for top, bottom in ((OURS, SEED1), (OURS_JIT, SEED1_JIT), (CONTROL, SEED1), (OURS_FINE, SEED1)):
        print(f"{top} storm p99 / {bottom} storm p99: {storm.ratio(top, bottom):.3f}")


if __name__ == "__main__":
    main()
