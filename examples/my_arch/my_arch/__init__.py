"""A user's own network, registered with fks through an entry point (see pyproject.toml).

``GatedPolicy`` is a continuous policy that is not an MLP: a LayerNorm, then a gated (GLU)
hidden layer, then tanh actions. fks serves it in torch and verifies it before each swap with
a probe pass of ``input_shape``; its answers are checked to be finite and ``output_shape``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["GatedPolicy", "build"]


class GatedPolicy(nn.Module):
    """state (state_dim) -> LayerNorm -> GLU(width) -> tanh(action_dim)."""

    def __init__(self, state_dim: int = 28, action_dim: int = 1, width: int = 64) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(state_dim)
        self.gate = nn.Linear(state_dim, 2 * width)
        self.out = nn.Linear(width, action_dim)
        # What fks reads to check requests and answers (SPEC §12):
        self.input_shape = (state_dim,)
        self.output_shape = (action_dim,)

    def forward(self, state: Tensor) -> Tensor:
        hidden = nn.functional.glu(self.gate(self.norm(state)), dim=-1)
        return torch.tanh(self.out(hidden))


def build(config: dict[str, Any]) -> GatedPolicy:
    """The factory fks calls with a checkpoint's config (every key present)."""
    return GatedPolicy(config["state_dim"], config["action_dim"], config["width"])


# The keys a config may hold, with their defaults: a checkpoint naming another key is refused
# (invalid_config), and every integer is capped before anything is built.
build.config_defaults = {"state_dim": 28, "action_dim": 1, "width": 64}  # type: ignore[attr-defined]
