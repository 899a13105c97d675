"""The probe pass: what a checkpoint's network computes on fixed states, before it is served.

:func:`reference_pass` runs ``SACActor.forward`` as torch defines it, ``F.linear`` and
``relu`` over the loaded tensors themselves (float32, as a built module holds them), without
building the module: the reference a served runner must reproduce within ``COMPILE_ATOL``,
and the probe's checks (the right shape, finite pre-squash mean and log-std). It is an
independent check of the numpy runner: another library (torch's kernels, not numpy's BLAS),
another code path (the state_dict read by name, weights in their stored layout), and it costs
~60 µs for the 300 KB actor (~0.45 ms for a 4 MB one), less than a float64 numpy pass (which
converts every weight first: ~0.1 / ~1 ms).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from common.errors import CheckpointRejected
from common.policy import PolicyConfig

__all__ = ["COMPILE_ATOL", "PROBE_ROWS", "probe_states", "reference_pass", "runner_error"]

COMPILE_ATOL = 1e-5
PROBE_ROWS = 8
Array = npt.NDArray[np.float32]


@functools.lru_cache(maxsize=8)
def probe_states(state_dim: int) -> Tensor:
    """``PROBE_ROWS`` fixed states (the first all zeros), the same for every load."""
    generator = torch.Generator().manual_seed(1234)
    states = torch.randn(PROBE_ROWS, state_dim, generator=generator)
    states[0] = 0.0
    return states


def reference_pass(
    path: Path, config: PolicyConfig, state_dict: Mapping[str, Tensor], states: Tensor
) -> Array:
    """The deterministic actions ``tanh(mean)`` on ``states``; CheckpointRejected if the pass
    fails (``probe_failed``) or overflows (``non_finite``)."""
    try:
        with torch.inference_mode():
            h = states
            for i in range(len(config.hidden)):
                h = F.relu(F.linear(h, _w(state_dict, f"trunk.{2 * i}.weight"),
                                    _w(state_dict, f"trunk.{2 * i}.bias")))  # fmt: skip
            mean = F.linear(h, _w(state_dict, "mean.weight"), _w(state_dict, "mean.bias"))
            log_std = F.linear(h, _w(state_dict, "log_std.weight"), _w(state_dict, "log_std.bias"))
            log_std = log_std.clamp(config.log_std_min, config.log_std_max)
            finite = bool(torch.isfinite(mean).all()) and bool(torch.isfinite(log_std).all())
            actions: Array = torch.tanh(mean).numpy()
    except Exception as exc:  # noqa: BLE001 - any failure of the probe is a rejection
        raise CheckpointRejected(
            f"{path}: probe forward pass failed: {exc}", reason="probe_failed"
        ) from exc
    expected = (states.shape[0], config.action_dim)
    if tuple(mean.shape) != expected or tuple(log_std.shape) != expected:
        raise CheckpointRejected(
            f"{path}: probe output shape {tuple(mean.shape)}, expected {expected}",
            reason="probe_failed",
        )
    if not finite:
        raise CheckpointRejected(
            f"{path}: probe overflows (non-finite pre-squash mean or log-std)", reason="non_finite"
        )
    return actions


def _w(state_dict: Mapping[str, Tensor], name: str) -> Tensor:
    tensor = state_dict[name]
    return tensor if tensor.dtype == torch.float32 else tensor.float()


def runner_error(out: Array, reference: Array) -> str | None:
    """Why ``out`` is not ``reference`` within ``COMPILE_ATOL``, or None if it is."""
    if out.shape != reference.shape:
        return f"gives shape {out.shape}, not {reference.shape}"
    error = float(np.abs(out - reference).max())
    if not error <= COMPILE_ATOL:
        return f"differs from the reference by {error:.3g}"
    return None
