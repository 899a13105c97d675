"""Runners: how a served policy turns a batch of states into actions.

A runner is built and checked before a swap, and then only read. The built-in actor is
served by :class:`~subscriber.model.numpy_runner.NumpyRunner`, built from the checkpoint's arrays
with no module at all (``subscriber/model/loader.py``), unless ``FKS_COMPILE_BACKEND=torchscript``
asks for torch: then the ``SACActor`` is built and served by ``EagerRunner`` (under
``torch.inference_mode``), or, with ``STAT_PAIR_RL_JIT=true``, compiled here:

- ``numpy``: the forward pass in float32 numpy matrices, about 5x faster than eager at
  batch 1 on one CPU core (bench/), no torch dispatch at all;
- ``torchscript``: ``torch.jit.script`` + ``freeze``, about 1.8x. TorchScript is deprecated in
  torch 2.13; its DeprecationWarning is filtered here, where it is used, and nowhere else.

A compiled runner must agree with eager within ``COMPILE_ATOL`` on probe states, or the
checkpoint is served eagerly and the reason is logged. TorchScript samples
(``deterministic=false``) eagerly: it is the rare path.
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from common.policy import SACActor
from subscriber.model.numpy_runner import NumpyRunner
from subscriber.model.probe import COMPILE_ATOL

__all__ = [
    "COMPILE_ATOL",
    "Backend",
    "EagerRunner",
    "NumpyRunner",
    "Runner",
    "TorchScriptRunner",
    "compile_runner",
]

log = logging.getLogger(__name__)

Backend = Literal["numpy", "torchscript"]
Array = npt.NDArray[np.float32]


class Runner(Protocol):
    """``states`` is float32 ``(batch, state_dim)``; returns float32 ``(batch, action_dim)``."""

    compiled: bool
    backend: str

    def __call__(self, states: Array, deterministic: bool = True) -> Array: ...


class EagerRunner:
    compiled = False
    backend = "eager"

    def __init__(self, policy: SACActor) -> None:
        self.policy = policy

    def __call__(self, states: Array, deterministic: bool = True) -> Array:
        with torch.inference_mode():
            out = self.policy.act(torch.from_numpy(states), deterministic=deterministic)
        return out.numpy()


class _Deterministic(nn.Module):
    def __init__(self, policy: SACActor) -> None:
        super().__init__()
        self.trunk = policy.trunk
        self.mean = policy.mean

    def forward(self, state: Tensor) -> Tensor:
        return torch.tanh(self.mean(self.trunk(state)))


class TorchScriptRunner:
    compiled = True
    backend = "torchscript"

    def __init__(self, policy: SACActor) -> None:
        self._eager = EagerRunner(policy)
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript; we use it knowingly as an optional backend.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            self._module = torch.jit.freeze(torch.jit.script(_Deterministic(policy).eval()))

    def __call__(self, states: Array, deterministic: bool = True) -> Array:
        if not deterministic:
            return self._eager(states, deterministic=False)
        with torch.inference_mode():
            out: Tensor = self._module(torch.from_numpy(states))
        return out.numpy()


def compile_runner(
    policy: SACActor,
    backend: Backend = "numpy",
    *,
    probe: Array | None = None,
    expected: Array | None = None,
    warmup: int | None = None,
) -> Runner:
    """A compiled runner checked against eager on ``probe`` states, or eager if it disagrees.

    ``expected`` is eager's deterministic output on ``probe`` when the caller already has it
    (the loader's probe pass); ``probe`` defaults to 64 random states. ``warmup`` calls at
    batch 1 follow (default: 2 for numpy, which has nothing to warm, 20 for TorchScript,
    whose profiling executor optimises after its first runs).
    """
    eager = EagerRunner(policy)
    try:
        runner: Runner = (
            NumpyRunner.from_policy(policy) if backend == "numpy" else TorchScriptRunner(policy)
        )
    except Exception as exc:  # noqa: BLE001 - compiling is optional; eager always works
        log.warning("compiling the policy with %s failed (%s); serving eagerly", backend, exc)
        return eager
    if probe is None:
        generator = torch.Generator().manual_seed(0)
        probe = torch.randn(64, policy.state_dim, generator=generator).numpy()
    reference = eager(probe) if expected is None else expected
    try:
        out = runner(probe)
    except Exception as exc:  # noqa: BLE001 - same: fall back to eager, with the reason
        log.warning("the %s runner failed on the probe (%s); serving eagerly", backend, exc)
        return eager
    if out.shape != reference.shape:
        shapes = f"{out.shape}, not {reference.shape}"
        log.warning("%s runner gives shape %s; serving eagerly", backend, shapes)
        return eager
    error = float(np.abs(out - reference).max())
    if not error <= COMPILE_ATOL:
        log.warning("%s runner differs from eager by %.3g; serving eagerly", backend, error)
        return eager
    single = probe[:1]
    for _ in range(warmup if warmup is not None else (2 if backend == "numpy" else 20)):
        runner(single)
    return runner
