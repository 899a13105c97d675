"""`fks train --algo dqn` and `fks demo --algo dqn` (SPEC §12): a DQN on the discretised pair
spread, saved as architecture dqn and swapped live like the SAC actor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis

from common import CheckpointNotification, RedisKeys
from common.architectures.dqn import DQNConfig
from common.checkpoint import load_checkpoint
from fks.cli import main
from fks.dqn_agent import LEVELS, DQNAgent
from fks.redis_server import free_port

KEYS = RedisKeys("default")


def test_train_algo_dqn_saves_and_announces_dqn_checkpoints(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Every N steps a dqn checkpoint (3 actions: short, flat, long) is saved and announced,
    with the DQN's training figures as metadata."""
    argv = [
        "train", "--algo", "dqn", "--steps", "120", "--every", "40", "--warmup", "20",
        "--dir", str(tmp_path), "--redis-url", redis_url, "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    latest = CheckpointNotification.from_message(redis_client.get(KEYS.latest) or "")
    assert latest.version == 3 and latest.model_name == "dqn_stat_pair"
    assert {"eval_return", "td_loss", "mean_q", "epsilon"} <= set(latest.metadata)
    loaded = load_checkpoint(latest.model_path, expected_sha256=latest.sha256)
    assert loaded.architecture == "dqn" and loaded.format == "safetensors"
    assert isinstance(loaded.config, DQNConfig) and loaded.config.n_actions == len(LEVELS)


def test_the_agent_explores_then_acts_greedily_on_the_levels() -> None:
    """Actions are always one of the levels; epsilon decays from 1 to its floor."""
    agent = DQNAgent(28, seed=0)
    state = np.zeros(28, dtype=np.float32)
    assert agent.epsilon == 1.0
    actions = {agent.act(state) for _ in range(3000)}
    assert actions == set(LEVELS) and agent.epsilon == pytest.approx(0.05)
    greedy = {agent.act(state, deterministic=True) for _ in range(10)}
    assert len(greedy) == 1 and greedy <= set(LEVELS)


@pytest.mark.slow
def test_dqn_training_visibly_improves_the_evaluation_return(tmp_path: Path) -> None:
    """Over 1,500 steps the greedy policy's return rises well above the one after warm-up."""
    from fks.trainer import TrainConfig, train
    from publisher import CheckpointNotifier

    config = TrainConfig(
        directory=tmp_path, steps=1500, every=500, progress=False, algo="dqn", seed=2
    )
    with CheckpointNotifier(f"redis://127.0.0.1:{free_port()}/0") as offline:
        summary = train(config, offline)
    returns = [r.eval_return for r in summary.checkpoints]
    assert returns[-1] > returns[0] + 5.0, returns


@pytest.mark.slow
def test_the_short_dqn_demo_swaps_live(tmp_path: Path) -> None:
    """`fks demo --short --algo dqn`: the same live swaps with the dqn trainer, exit 0."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "fks", "demo", "--short", "--algo", "dqn"],
        env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trainer: dqn" in result.stdout
    assert result.stdout.count("  swap  version") >= 2
    assert "failed 0" in result.stdout and result.stdout.rstrip().endswith("OK")
