"""A simulated pair-spread market for the demo trainer.

The spread follows an Ornstein–Uhlenbeck process ``s' = s + θ(μ − s) + σ·ε``. The action is
the target position in [-1, 1] (short … long the spread); the reward is the position's P&L on
the next move minus a transaction cost on the position change, in units of σ. Mean reversion
pays a policy that leans against the spread's z-score; costs punish churning.

The 28-dim state: the last 20 z-scores of the spread (newest first), the current position,
the z-score's deviation from its 5-, 10- and 20-step means, the realised volatility of the
last 20 moves (in σ), the fraction of the episode elapsed, and the last reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["STATE_DIM", "PairSpreadEnv", "SpreadConfig"]

STATE_DIM = 28
WINDOW = 20
Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class SpreadConfig:
    theta: float = 0.08
    mu: float = 0.0
    sigma: float = 1.0
    cost: float = 0.02
    episode_len: int = 200


class PairSpreadEnv:
    state_dim = STATE_DIM
    action_dim = 1

    def __init__(self, config: SpreadConfig | None = None, seed: int | None = None) -> None:
        self.config = config or SpreadConfig()
        self.rng = np.random.default_rng(seed)
        self.stationary_std = self.config.sigma / np.sqrt(2 * self.config.theta)
        self.history = np.zeros(WINDOW + 1, dtype=np.float64)
        self.position = 0.0
        self.t = 0
        self.last_reward = 0.0

    def reset(self, seed: int | None = None) -> Array:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        c = self.config
        spread = c.mu + self.rng.normal() * self.stationary_std
        history = [spread]
        for _ in range(WINDOW):  # a warm history, walked backwards in distribution
            spread = spread + c.theta * (c.mu - spread) + c.sigma * self.rng.normal()
            history.append(spread)
        self.history = np.array(history[::-1], dtype=np.float64)  # newest first
        self.position, self.t, self.last_reward = 0.0, 0, 0.0
        return self._state()

    def step(self, action: float) -> tuple[Array, float, bool]:
        c = self.config
        target = float(np.clip(action, -1.0, 1.0))
        spread = self.history[0]
        nxt = spread + c.theta * (c.mu - spread) + c.sigma * self.rng.normal()
        reward = float(target * (nxt - spread) - c.cost * abs(target - self.position)) / c.sigma
        self.history = np.roll(self.history, 1)
        self.history[0] = nxt
        self.position, self.t, self.last_reward = target, self.t + 1, reward
        return self._state(), reward, self.t >= c.episode_len

    def _state(self) -> Array:
        z = (self.history - self.config.mu) / self.stationary_std
        moves = np.diff(self.history[::-1]) / self.config.sigma
        state = np.empty(STATE_DIM, dtype=np.float32)
        state[:WINDOW] = z[:WINDOW]
        state[20] = self.position
        state[21] = z[0] - z[:5].mean()
        state[22] = z[0] - z[:10].mean()
        state[23] = z[0] - z[:20].mean()
        state[24] = moves.std()
        state[25] = self.t / self.config.episode_len
        state[26] = self.last_reward
        state[27] = 1.0  # bias feature
        return state
