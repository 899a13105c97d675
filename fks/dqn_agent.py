"""A compact DQN on a discretised pair spread: the served ``dqn`` Q-network, a target network
synced every few updates, epsilon-greedy exploration, double-DQN targets (van Hasselt et al.,
2016) and a Huber loss.

The environment is ``PairSpreadEnv`` unchanged; its continuous target position is discretised
into ``LEVELS``: short, flat, long. The replay buffer stores the position (as for SAC) and the
update maps it back to its action index.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from common.architectures.dqn import DQN, DQNConfig
from fks.sac import ReplayBuffer

__all__ = ["LEVELS", "DQNAgent", "DQNStats", "DQNTrainConfig"]

LEVELS = (-1.0, 0.0, 1.0)  # the target positions an action index stands for


@dataclass(frozen=True, slots=True)
class DQNTrainConfig:
    hidden: tuple[int, ...] = (128, 128)
    gamma: float = 0.99
    lr: float = 3e-4
    batch_size: int = 128
    buffer_size: int = 100_000
    target_every: int = 200  # updates between target-network syncs
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_steps: int = 2000  # exploration steps over which epsilon decays linearly


@dataclass(frozen=True, slots=True)
class DQNStats:
    td_loss: float
    mean_q: float
    epsilon: float

    def metadata(self) -> dict[str, object]:
        return {
            "td_loss": round(self.td_loss, 6),
            "mean_q": round(self.mean_q, 6),
            "epsilon": round(self.epsilon, 4),
        }


class DQNAgent:
    """``model`` is the network a checkpoint saves (architecture ``dqn``)."""

    def __init__(self, state_dim: int, config: DQNTrainConfig | None = None, seed: int = 0):
        self.config = c = config or DQNTrainConfig()
        self.q = DQN(DQNConfig(state_dim=state_dim, n_actions=len(LEVELS), hidden=c.hidden))
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.optimiser = torch.optim.Adam(self.q.parameters(), lr=c.lr)
        self.rng = np.random.default_rng(seed)
        self.explored = 0
        self.updates = 0
        self._levels = torch.tensor(LEVELS)

    @property
    def model(self) -> nn.Module:
        return self.q

    @property
    def epsilon(self) -> float:
        c = self.config
        done = min(1.0, self.explored / max(1, c.epsilon_steps))
        return c.epsilon_start + (c.epsilon_end - c.epsilon_start) * done

    def random_action(self, rng: np.random.Generator) -> float:
        return float(rng.choice(LEVELS))

    def act(self, state: npt.NDArray[np.float32], deterministic: bool = False) -> float:
        """The target position: greedy in Q, or epsilon-greedy while exploring."""
        if not deterministic:
            self.explored += 1
            if self.rng.random() < self.epsilon:
                return self.random_action(self.rng)
        with torch.inference_mode():
            q = self.q(torch.from_numpy(state)[None])
        return LEVELS[int(q.argmax())]

    def update(self, buffer: ReplayBuffer) -> DQNStats:
        c = self.config
        states, positions, rewards, next_states, done = buffer.sample(c.batch_size)
        actions = (positions - self._levels).abs().argmin(dim=1, keepdim=True)
        with torch.no_grad():
            best = self.q(next_states).argmax(dim=1, keepdim=True)  # double DQN
            q_next = self.target(next_states).gather(1, best)
            target = rewards + c.gamma * (1 - done) * q_next
        q = self.q(states).gather(1, actions)
        loss = nn.functional.smooth_l1_loss(q, target)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(self.q.parameters(), 10.0)
        self.optimiser.step()
        self.updates += 1
        if self.updates % c.target_every == 0:
            self.target.load_state_dict(self.q.state_dict())
        return DQNStats(float(loss.detach()), float(q.mean().detach()), self.epsilon)
