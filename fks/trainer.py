"""The demo trainer: SAC (or DQN, ``algo="dqn"``) on the simulated pair spread, saving and
announcing every N steps.

SAC trains the continuous ``sac_actor``; DQN trains a ``dqn`` Q-network over the same
environment with its position discretised to short, flat, long (``fks/dqn_agent.py``).

Each checkpoint is written with ``save_checkpoint`` (atomic; ``.safetensors`` unless the
config asks for the first release's ``.pt``) and announced with the publisher, carrying the
training metrics as metadata (critic and actor loss, mean Q, alpha, evaluation return).
Versions continue from the larger of Redis' ``:version`` counter and the newest checkpoint on
disk (either format), so a restarted trainer never announces an older version; before each
checkpoint the counter is read again, so a version the fleet moved to meanwhile (a node serving
an operator's unversioned message under its file's version raises it) is passed, not announced
under and judged stale by every node. Only the
newest ``keep`` checkpoints stay on disk, of both suffixes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from tqdm import tqdm

from common.checkpoint import (
    CheckpointFormat,
    SavedCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from common.errors import CheckpointError
from common.notification import U64_MAX
from fks.dqn_agent import DQNAgent, DQNStats, DQNTrainConfig
from fks.env import PairSpreadEnv
from fks.sac import ReplayBuffer, SACAgent, SACConfig, UpdateStats
from publisher import CheckpointNotifier, NotifyResult
from subscriber.fetching.roots import checkpoints_newest_first

__all__ = ["Algo", "CheckpointReport", "TrainConfig", "TrainSummary", "evaluate", "train"]

Algo = Literal["sac", "dqn"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    directory: Path
    steps: int = 5000
    every: int = 500
    keep: int = 5
    seed: int = 0
    warmup: int = 500
    update_every: int = 2
    eval_episodes: int = 5
    model_name: str = "sac_stat_pair"
    progress: bool = True
    format: CheckpointFormat = "safetensors"
    sac: SACConfig = field(default_factory=SACConfig)
    algo: Algo = "sac"
    dqn: DQNTrainConfig = field(default_factory=DQNTrainConfig)


class Agent(Protocol):
    """What the training loop needs of SAC and DQN alike."""

    def act(self, state: npt.NDArray[np.float32], deterministic: bool = False) -> float: ...


def _agent(config: TrainConfig, env: PairSpreadEnv) -> SACAgent | DQNAgent:
    if config.algo == "dqn":
        return DQNAgent(env.state_dim, config.dqn, seed=config.seed)
    return SACAgent(env.state_dim, env.action_dim, config.sac)


def _model(agent: SACAgent | DQNAgent) -> nn.Module:
    return agent.model if isinstance(agent, DQNAgent) else agent.actor


@dataclass(frozen=True, slots=True)
class CheckpointReport:
    step: int
    version: int
    saved: SavedCheckpoint
    eval_return: float
    result: NotifyResult


@dataclass
class TrainSummary:
    steps: int = 0
    seconds: float = 0.0
    checkpoints: list[CheckpointReport] = field(default_factory=list)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0


def evaluate(agent: Agent, episodes: int, seed: int = 10_000) -> float:
    """Mean return of the deterministic policy over fixed, seeded episodes."""
    env = PairSpreadEnv()
    total = 0.0  # a Python float: numpy scalars would leak "np.float64(...)" into metadata
    for episode in range(episodes):
        state, done = env.reset(seed=seed + episode), False
        while not done:
            state, reward, done = env.step(agent.act(state, deterministic=True))
            total += float(reward)
    return total / episodes


def _first_version(directory: Path) -> int:
    """Above the newest checkpoint on disk (the counter is read before each checkpoint,
    the first one included: :func:`_next_version`)."""
    newest = 0
    for path in checkpoints_newest_first(directory):
        try:
            newest = max(newest, load_checkpoint(path).version)
        except CheckpointError:
            continue
    return min(newest + 1, U64_MAX)


def _next_version(version: int, notifier: CheckpointNotifier, *, reachable: bool) -> int:
    """``version``, or above the ``:version`` counter if the fleet moved past it meanwhile;
    the counter is not read while Redis is away (``reachable``: the last checkpoint reached
    it), so a paused Redis costs each checkpoint one timeout, the notify's; never past
    2^64 - 1 (there the notify says the version space is exhausted, training goes on)."""
    counter = notifier.current_version() if reachable else None
    if counter is not None:
        version = max(version, counter + 1)
    return min(version, U64_MAX)


def _prune(directory: Path, keep: int) -> None:
    for old in checkpoints_newest_first(directory)[keep:]:
        old.unlink(missing_ok=True)


def train(
    config: TrainConfig,
    notifier: CheckpointNotifier,
    on_checkpoint: Callable[[CheckpointReport], None] | None = None,
) -> TrainSummary:
    """Train for ``config.steps`` environment steps; announce a checkpoint every ``every``."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    config.directory.mkdir(parents=True, exist_ok=True)
    env = PairSpreadEnv(seed=config.seed)
    agent = _agent(config, env)
    size = config.dqn.buffer_size if config.algo == "dqn" else config.sac.buffer_size
    buffer = ReplayBuffer(env.state_dim, env.action_dim, size, config.seed)
    version = _first_version(config.directory)
    summary = TrainSummary()
    stats: UpdateStats | DQNStats | None = None
    state = env.reset()
    start = time.perf_counter()
    bar = tqdm(total=config.steps, unit="step", disable=not config.progress, dynamic_ncols=True)
    for step in range(1, config.steps + 1):
        if step <= config.warmup:
            action = (
                agent.random_action(rng)
                if isinstance(agent, DQNAgent)
                else float(rng.uniform(-1.0, 1.0))
            )
        else:
            action = agent.act(state)
        next_state, reward, done = env.step(action)
        buffer.add(state, np.array([action], dtype=np.float32), reward, next_state, done)
        state = env.reset() if done else next_state
        if step > config.warmup and step % config.update_every == 0:
            stats = agent.update(buffer)
        if step % config.every == 0:
            reachable = not summary.checkpoints or summary.checkpoints[-1].result.sent
            version = _next_version(version, notifier, reachable=reachable)
            report = _checkpoint(config, agent, notifier, step, version, stats)
            summary.checkpoints.append(report)
            version = max(version, report.version) + 1  # capped by _next_version
            bar.set_postfix(version=report.version, eval_return=f"{report.eval_return:.2f}")
            if on_checkpoint is not None:
                on_checkpoint(report)
        bar.update(1)
    bar.close()
    summary.steps = config.steps
    summary.seconds = time.perf_counter() - start
    return summary


def _checkpoint(
    config: TrainConfig,
    agent: SACAgent | DQNAgent,
    notifier: CheckpointNotifier,
    step: int,
    version: int,
    stats: UpdateStats | DQNStats | None,
) -> CheckpointReport:
    eval_return = evaluate(agent, config.eval_episodes)
    metadata: dict[str, object] = {"eval_return": round(float(eval_return), 4)}
    if isinstance(agent, SACAgent):
        metadata["alpha"] = round(agent.alpha, 6)
    if isinstance(stats, DQNStats):
        metadata |= stats.metadata()
    elif stats is not None:
        metadata |= {
            "critic_loss": round(stats.critic_loss, 6),
            "actor_loss": round(stats.actor_loss, 6),
            "mean_q": round(stats.mean_q, 6),
        }
    saved = save_checkpoint(
        config.directory / f"model_{version:06d}.{config.format}",
        _model(agent),
        model_name=config.model_name,
        version=version,
        training_step=step,
        metadata=metadata,
    )
    result = notifier.notify(
        saved.path,
        config.model_name,
        version=version,
        training_step=step,
        metadata=metadata,
        sha256=saved.sha256,
    )
    if result.outcome == "conflict":  # e.g. an operator's `fks notify --force` took it
        log.warning("version %d is taken (%s); announcing under the next free one", version,
                    result.reason)  # fmt: skip
        result = notifier.notify(
            saved.path,
            config.model_name,
            training_step=step,
            metadata=metadata,
            sha256=saved.sha256,
        )
        if result.sent and result.notification is not None:
            version = result.notification.version
    _prune(config.directory, config.keep)
    announced = "announced" if result.sent else f"not announced: {result.reason}"
    log.info(
        "step %d: saved version %d (eval return %.2f), %s", step, version, eval_return, announced
    )
    return CheckpointReport(step, version, saved, eval_return, result)
