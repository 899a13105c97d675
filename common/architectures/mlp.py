"""What a numpy fast path needs to know of an MLP architecture: its layers and its output.

An architecture whose module has ``mlp_layers()`` returning an :class:`MLPLayers` (``sac_actor``,
``dqn`` without a window) is served deterministically as ``out(W_n ... relu(W_1 x + b_1) ...)``
in float32 numpy, once that agrees with torch within 1e-5 on probe states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

__all__ = ["MLPLayers"]


@dataclass(frozen=True, slots=True)
class MLPLayers:
    """Linear layers with ReLU between them, then ``output`` on the last one's result."""

    linears: list[nn.Linear]
    output: Literal["tanh", "identity"]
