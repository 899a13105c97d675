"""Runners for any architecture (SPEC §12), beside the ``sac_actor`` ones of ``inference.py``.

``TorchRunner`` calls the module under ``torch.inference_mode`` (torch's threads are
``FKS_TORCH_THREADS``, set when the node starts): a continuous policy through its ``act``
(or its forward pass when it has none), a discrete one through its forward pass, which gives
the Q-values. ``NumpyMLPRunner`` is the fast path of an architecture that describes itself
as an MLP (``mlp_layers()``): float32 matrices, no torch dispatch.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from common.architectures.mlp import MLPLayers
from subscriber.model.model_io import ModelIO

__all__ = ["NumpyMLPRunner", "TorchRunner"]

Array = npt.NDArray[np.float32]


class TorchRunner:
    """``states`` is ``(batch, *input_shape)``; returns ``(batch, *output_shape)``."""

    compiled = False
    backend = "eager"

    def __init__(self, module: nn.Module, io: ModelIO) -> None:
        self.module = module
        self.io = io
        act = getattr(module, "act", None)
        self._act = act if callable(act) and not io.discrete else None

    def __call__(self, states: Array, deterministic: bool = True) -> Array:
        with torch.inference_mode():
            x = torch.from_numpy(states)
            if self._act is not None:
                out: Tensor = self._act(x, deterministic=deterministic)
            else:
                out = self.module(x)
        result: Array = out.float().numpy()
        return result


class NumpyMLPRunner:
    """``output(W_n·relu(…relu(W_1·x + b_1)…) + b_n)`` in float32 numpy; sampling
    (``deterministic=False``) goes to ``sampler``."""

    compiled = True
    backend = "numpy"

    def __init__(self, layers: MLPLayers, sampler: TorchRunner) -> None:
        self._sampler = sampler
        self._tanh = layers.output == "tanh"
        self._layers = [
            (
                np.ascontiguousarray(layer.weight.detach().numpy().T, dtype=np.float32),
                layer.bias.detach().numpy().astype(np.float32),
            )
            for layer in layers.linears
        ]
        # Every array a deterministic pass allocates for one row: each layer's output.
        self.row_bytes = 4 * sum(bias.size for _, bias in self._layers)

    def __call__(self, states: Array, deterministic: bool = True) -> Array:
        if not deterministic:
            return self._sampler(states, deterministic=False)
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite: refused by the route
            return self._forward(states)

    def _forward(self, states: Array) -> Array:
        h = states
        *hidden, (w_out, b_out) = self._layers
        for weight, bias in hidden:
            h = h @ weight
            h += bias
            np.maximum(h, 0.0, out=h)
        out = h @ w_out
        out += b_out
        if self._tanh:
            np.tanh(out, out=out)
        return out
