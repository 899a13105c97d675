"""Verify before swap, for any architecture: the probe pass and the choice of runner.

The probe feeds ``PROBE_ROWS`` seeded states of the module's declared input shape (the first
all zeros) through torch; the output must be finite (``non_finite``) and of the declared
output shape (``probe_failed``, as is any exception). With ``STAT_PAIR_RL_JIT=true`` an
architecture that describes itself as an MLP is then served by the numpy fast path, once it
agrees with torch within ``COMPILE_ATOL`` on the probe states; anything else runs in torch.
The probe pass also measures what a request costs (``subscriber/model/activations.py``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.architectures.mlp import MLPLayers
from common.errors import CheckpointRejected
from common.limits import CheckpointLimits
from subscriber.model.activations import declared_cost, measured_pass
from subscriber.model.inference import COMPILE_ATOL, Runner
from subscriber.model.model_io import ModelIO
from subscriber.model.module_runner import Array, NumpyMLPRunner, TorchRunner

__all__ = ["PROBE_ROWS", "probe_states", "verified_runner"]

log = logging.getLogger(__name__)

PROBE_ROWS = 8


def probe_states(io: ModelIO, rows: int = PROBE_ROWS) -> Array:
    """Seeded float32 states ``(rows, *input_shape)``, the first all zeros."""
    generator = torch.Generator().manual_seed(1234)
    states = torch.randn(rows, *io.input_shape, generator=generator)
    states[0] = 0.0
    out: Array = states.numpy()
    return out


def verified_runner(
    path: Path, module: nn.Module, io: ModelIO, *, jit: bool, limits: CheckpointLimits
) -> tuple[ModelIO, Runner]:
    """The probe pass of ``module``, then its runner; ``CheckpointRejected`` on a failure.
    Returns ``io`` with the output shape the probe confirmed and the cost it measured (within
    ``limits``' activation budget and batch rows)."""
    states = probe_states(io)
    eager = TorchRunner(module, io)
    try:
        out, cost = measured_pass(
            eager, states, budget=limits.max_activation_bytes, max_rows=limits.max_batch_rows
        )
    except Exception as exc:  # noqa: BLE001 - any failure of the probe is a rejection
        raise CheckpointRejected(
            f"{path}: probe forward pass failed: {str(exc)[:300]}", reason="probe_failed"
        ) from exc
    declared = io.output_shape or tuple(out.shape[1:])
    if tuple(out.shape) != (PROBE_ROWS, *declared) or len(declared) != 1:
        raise CheckpointRejected(
            f"{path}: probe output shape {tuple(out.shape)}, expected {(PROBE_ROWS, *declared)}",
            reason="probe_failed",
        )
    if not bool(np.isfinite(out).all()):
        raise CheckpointRejected(f"{path}: probe output is not finite", reason="non_finite")
    io = replace(io, output_shape=declared, cost=cost)
    eager = TorchRunner(module, io)
    describe = getattr(module, "mlp_layers", None)
    layers = describe() if jit and callable(describe) else None
    if not isinstance(layers, MLPLayers):
        return io, eager
    runner = _fast_or_eager(path, layers, eager, states, out)
    if isinstance(runner, NumpyMLPRunner):  # it samples in torch: both may serve a request
        io = replace(io, cost=cost.at_least(declared_cost(runner.row_bytes, states)))
    return io, runner


def _fast_or_eager(
    path: Path, layers: MLPLayers, eager: TorchRunner, states: Array, expected: Array
) -> Runner:
    try:
        fast = NumpyMLPRunner(layers, eager)
        error = float(np.abs(fast(states) - expected).max())
    except Exception as exc:  # noqa: BLE001 - the fast path is optional; torch always works
        log.warning("%s: the numpy fast path failed (%s); serving in torch", path, exc)
        return eager
    if not error <= COMPILE_ATOL:
        log.warning("%s: numpy differs from torch by %.3g; serving in torch", path, error)
        return eager
    return fast
