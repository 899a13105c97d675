"""The built-in actor in numpy: served straight from a checkpoint's arrays.

For ``sac_actor`` a node builds no ``nn.Module`` to serve it (SPEC §12's default network):
:func:`actor_arrays` takes the float32 numpy views of the loaded tensors (zero-copy for
float32, one conversion for float16, bfloat16 or float64) after checking every name and
shape against the config, and :class:`NumpyRunner` computes

    deterministic: tanh(Wm·relu(…relu(W1·x + b1)…) + bm)
    sampled:       tanh(mean + exp(clamp(Ws·h + bs)) · N(0, 1))

exactly as ``SACActor.act`` does, in float32 numpy (no torch dispatch at all). Building it
costs microseconds: no module, no initialisation, no ``load_state_dict``, no copy. The loader
checks it against torch's own forward over the same tensors before it is served
(``subscriber/model/probe.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from common.errors import CheckpointRejected
from common.policy import PolicyConfig, SACActor, state_shapes

__all__ = ["ActorArrays", "NumpyRunner", "actor_arrays"]

Array = npt.NDArray[np.float32]
Layer = tuple[Array, Array]  # (weight (out, in), bias (out,))


@dataclass(frozen=True, slots=True)
class ActorArrays:
    """The weights of one ``sac_actor``, read-only float32 arrays laid out as torch's."""

    config: PolicyConfig
    trunk: tuple[Layer, ...]
    mean: Layer
    log_std: Layer


def actor_arrays(
    config: PolicyConfig, state_dict: Mapping[str, Tensor], path: Path | str = "<memory>"
) -> ActorArrays:
    """``state_dict`` as :class:`ActorArrays`; CheckpointRejected (``shape_mismatch``) if a
    tensor is missing, unexpected or of another shape than ``config`` gives."""
    expected = state_shapes(config)
    shapes = {name: tuple(t.shape) for name, t in state_dict.items()}
    if shapes != expected:
        wrong = sorted(set(shapes.items()) ^ set(expected.items()))
        detail = ", ".join(f"{name} {list(shape)}" for name, shape in wrong[:4])
        raise CheckpointRejected(
            f"{path}: weights do not fit the declared config: {detail}", reason="shape_mismatch"
        )
    arrays = {name: _float32(t) for name, t in state_dict.items()}

    def layer(prefix: str) -> Layer:
        return arrays[f"{prefix}.weight"], arrays[f"{prefix}.bias"]

    trunk = tuple(layer(f"trunk.{2 * i}") for i in range(len(config.hidden)))
    return ActorArrays(config, trunk, layer("mean"), layer("log_std"))


def _float32(tensor: Tensor) -> Array:
    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        tensor = tensor.float()
    array: Array = tensor.numpy()
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    array.flags.writeable = False  # a served model is never written to
    return array


class NumpyRunner:
    """The actor's forward pass in float32 numpy, batch ``(rows, state_dim)`` in and out."""

    backend = "numpy"

    def __init__(self, arrays: ActorArrays, *, compiled: bool = True) -> None:
        self.arrays = arrays
        self.compiled = compiled
        # ``h @ w.T`` on the transposed view: BLAS reads it in place (no copy, same speed).
        self._trunk = tuple((w.T, b) for w, b in arrays.trunk)
        self._mean = (arrays.mean[0].T, arrays.mean[1])
        self._log_std = (arrays.log_std[0].T, arrays.log_std[1])
        self._bounds = (arrays.config.log_std_min, arrays.config.log_std_max)
        layers = (*arrays.trunk, arrays.mean, arrays.log_std)
        self.parameters = sum(w.size + b.size for w, b in layers)
        # Every array a pass allocates for one row (an upper bound of what it holds at once):
        # each hidden layer's output, then the mean, log-std, noise and their product.
        widths = sum(w.shape[0] for w, _ in arrays.trunk) + 4 * arrays.config.action_dim
        self.row_bytes = 4 * widths
        self._rng = np.random.default_rng()  # its own lock makes it safe across threads

    @classmethod
    def from_policy(cls, policy: SACActor) -> NumpyRunner:
        """The runner of a built module (the torch path's numpy backend, benchmarks)."""
        return cls(actor_arrays(policy.config, policy.state_dict()))

    def __call__(self, states: Array, deterministic: bool = True) -> Array:
        # Hostile states (±3e38) overflow to inf/NaN: the route refuses a non-finite action
        # with a 400, so numpy's warning would only be noise (and an error under -W error).
        with np.errstate(over="ignore", invalid="ignore"):
            return self._forward(states, deterministic)

    def _forward(self, states: Array, deterministic: bool) -> Array:
        h = states
        for weight_t, bias in self._trunk:
            h = h @ weight_t
            h += bias
            np.maximum(h, 0.0, out=h)
        out = h @ self._mean[0]
        out += self._mean[1]
        if not deterministic:
            log_std = h @ self._log_std[0]
            log_std += self._log_std[1]
            np.clip(log_std, *self._bounds, out=log_std)
            noise = self._rng.standard_normal(out.shape, dtype=np.float32)
            out += np.exp(log_std, out=log_std) * noise
        result: Array = np.tanh(out, out=out)
        return result
