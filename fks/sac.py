"""A compact Soft Actor-Critic: the served ``SACActor``, twin critics with Polyak-averaged
targets, automatic entropy tuning and a uniform replay buffer (Haarnoja et al., 2018)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from common.policy import PolicyConfig, SACActor

__all__ = ["ReplayBuffer", "SACAgent", "SACConfig", "UpdateStats"]


@dataclass(frozen=True, slots=True)
class SACConfig:
    hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (128, 128)
    gamma: float = 0.99
    tau: float = 0.005
    lr: float = 3e-4
    batch_size: int = 128
    buffer_size: int = 100_000


@dataclass(frozen=True, slots=True)
class UpdateStats:
    critic_loss: float
    actor_loss: float
    alpha: float
    mean_q: float


class ReplayBuffer:
    def __init__(self, state_dim: int, action_dim: int, size: int, seed: int = 0) -> None:
        self.states = np.zeros((size, state_dim), dtype=np.float32)
        self.actions = np.zeros((size, action_dim), dtype=np.float32)
        self.rewards = np.zeros((size, 1), dtype=np.float32)
        self.next_states = np.zeros((size, state_dim), dtype=np.float32)
        self.done = np.zeros((size, 1), dtype=np.float32)
        self.size, self.cursor, self.count = size, 0, 0
        self.rng = np.random.default_rng(seed)

    def add(
        self, state: npt.NDArray[np.float32], action: npt.NDArray[np.float32], reward: float,
        next_state: npt.NDArray[np.float32], done: bool,
    ) -> None:  # fmt: skip
        i = self.cursor
        self.states[i], self.actions[i], self.rewards[i] = state, action, reward
        self.next_states[i], self.done[i] = next_state, float(done)
        self.cursor = (i + 1) % self.size
        self.count = min(self.count + 1, self.size)

    def sample(self, batch: int) -> tuple[Tensor, ...]:
        idx = self.rng.integers(0, self.count, size=batch)
        return tuple(
            torch.from_numpy(a[idx])
            for a in (self.states, self.actions, self.rewards, self.next_states, self.done)
        )


def _mlp(inputs: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(inputs, size), nn.ReLU()]
        inputs = size
    layers.append(nn.Linear(inputs, 1))
    return nn.Sequential(*layers)


class SACAgent:
    def __init__(self, state_dim: int, action_dim: int, config: SACConfig | None = None) -> None:
        self.config = c = config or SACConfig()
        self.actor = SACActor(PolicyConfig(state_dim, action_dim, c.hidden))
        self.q1, self.q2 = (_mlp(state_dim + action_dim, c.critic_hidden) for _ in range(2))
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        for target in (self.q1_target, self.q2_target):
            target.requires_grad_(False)
        self.log_alpha = torch.zeros(1, requires_grad=True)
        self.target_entropy = -float(action_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr)
        critic_params = [*self.q1.parameters(), *self.q2.parameters()]
        self.critic_opt = torch.optim.Adam(critic_params, lr=c.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=c.lr)

    @property
    def alpha(self) -> float:
        return float(self.log_alpha.detach().exp())

    def act(self, state: npt.NDArray[np.float32], deterministic: bool = False) -> float:
        with torch.inference_mode():
            action = self.actor.act(torch.from_numpy(state)[None], deterministic=deterministic)
        return float(action[0, 0])

    def update(self, buffer: ReplayBuffer) -> UpdateStats:
        c = self.config
        states, actions, rewards, next_states, done = buffer.sample(c.batch_size)
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_actions, next_log_prob = self.actor.sample(next_states)
            sa_next = torch.cat([next_states, next_actions], 1)
            q_next = torch.min(self.q1_target(sa_next), self.q2_target(sa_next))
            target = rewards + c.gamma * (1 - done) * (q_next - alpha * next_log_prob[:, None])
        sa = torch.cat([states, actions], 1)
        q1, q2 = self.q1(sa), self.q2(sa)
        critic_loss = (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        new_actions, log_prob = self.actor.sample(states)
        sa_new = torch.cat([states, new_actions], 1)
        q_new = torch.min(self.q1(sa_new), self.q2(sa_new))
        actor_loss = (alpha * log_prob[:, None] - q_new).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()  # type: ignore[no-untyped-call]
        self.alpha_opt.step()

        with torch.no_grad():
            for net, target_net in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                for p, tp in zip(net.parameters(), target_net.parameters(), strict=True):
                    tp.mul_(1 - c.tau).add_(p, alpha=c.tau)
        return UpdateStats(
            float(critic_loss.detach()),
            float(actor_loss.detach()),
            self.alpha,
            float(q1.mean().detach()),
        )
