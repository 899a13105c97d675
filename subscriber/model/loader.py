"""Verify before swap: every check a checkpoint passes before it may be served.

Confined to the model roots (symlinks and ``..`` resolved) → sha256 checked when announced →
decoded (``.safetensors``, or ``torch.load(weights_only=True)``) → finite weights → expected
state size → every tensor's name and shape → probe forward pass (finite, right shape) → the
runner that will serve, checked against the probe's actions within ``COMPILE_ATOL``, warm-up
→ what one request row costs in activations, within ``FKS_MAX_ACTIVATION_BYTES``
(``subscriber/model/activations.py``). Any failure raises a :class:`~common.errors.CheckpointError`
with a reason, before anything is swapped.

The fast load (the default): the built-in actor (``sac_actor``) is served by a
:class:`~subscriber.model.numpy_runner.NumpyRunner` made straight from the loaded arrays, and the
probe is the network written out over those same arrays (``subscriber/model/probe.py``): no
``nn.Module`` is built, initialised or filled, no torch op runs, and the Python the load
runs under the GIL (decoding and checking the header and metadata) is what remains. A torch
module is built only for a torch runner (``FKS_COMPILE_BACKEND=torchscript``: eager, or
TorchScript with ``STAT_PAIR_RL_JIT=true``), for another architecture (SPEC §12), or when
the numpy runner disagrees with the probe.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from common.checkpoint import CheckpointLimits, LoadedCheckpoint, build_module, load_checkpoint
from common.checkpoint.fields import SAC_ACTOR
from common.errors import CheckpointRejected
from common.policy import PolicyConfig, SACActor
from subscriber.fetching.roots import ModelRoots
from subscriber.model.activations import check_row_cost, declared_cost, measured_pass
from subscriber.model.inference import Backend, EagerRunner, Runner, compile_runner
from subscriber.model.model_io import ModelIO, declared_io
from subscriber.model.module_probe import verified_runner
from subscriber.model.numpy_runner import NumpyRunner, actor_arrays
from subscriber.model.probe import probe_states, reference_pass, runner_error

__all__ = ["LoadOptions", "Prepared", "prepare_checkpoint", "prepare_confined"]

log = logging.getLogger(__name__)

PROBE_ROWS = 8


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How a node loads: the state size it serves (None: any), whether to compile, the runner
    family (``numpy``: no module for the built-in actor; ``torchscript``: torch), and the
    bounds a checkpoint must keep (FKS_MAX_CHECKPOINT_BYTES, FKS_MAX_PARAMETERS,
    FKS_MAX_ACTIVATION_BYTES for one request, FKS_MAX_BATCH_ROWS)."""

    state_dim: int | None = 28
    jit: bool = False
    backend: Backend = "numpy"
    limits: CheckpointLimits = CheckpointLimits()


@dataclass(frozen=True, slots=True)
class Prepared:
    """A checkpoint that passed every check, ready to be swapped in (``policy`` is None when
    no module was built: the numpy runner serves straight from the arrays)."""

    loaded: LoadedCheckpoint
    policy: nn.Module | None
    runner: Runner
    io: ModelIO = ModelIO((28,), (1,))


def prepare_checkpoint(
    path: str | os.PathLike[str],
    roots: ModelRoots,
    options: LoadOptions,
    *,
    expected_sha256: str | None = None,
) -> Prepared:
    """Run every check on ``path``; raise CheckpointError (with a reason) on the first failure."""
    return prepare_confined(roots.confine(path), roots, options, expected_sha256=expected_sha256)


def prepare_confined(
    real: Path,
    roots: ModelRoots,
    options: LoadOptions,
    *,
    expected_sha256: str | None = None,
) -> Prepared:
    """:func:`prepare_checkpoint` of a path ``roots.confine`` returned (the holder's
    ``locate``): not resolved a second time, it is read from its model root through real
    directories only (``common/checkpoint/file.py``), so a directory on the way swapped for a
    symlink since is refused."""
    prepared = _prepare(real, options, expected_sha256, roots.root_of(real))
    check_row_cost(real, prepared.io.cost, options.limits.max_activation_bytes)
    return prepared


def _prepare(
    real: Path, options: LoadOptions, expected_sha256: str | None, beneath: Path
) -> Prepared:
    loaded = load_checkpoint(
        real, expected_sha256=expected_sha256, limits=options.limits, beneath=beneath
    )
    config = loaded.config
    if loaded.architecture == SAC_ACTOR and isinstance(config, PolicyConfig):
        if options.state_dim is not None and config.state_dim != options.state_dim:
            raise CheckpointRejected(
                f"{real}: state_dim {config.state_dim}, this node serves {options.state_dim}",
                reason="state_dim_mismatch",
            )
        if options.backend == "numpy":
            prepared = _fast(real, loaded, config, options)
            if prepared is not None:
                return prepared
    module = build_module(loaded)
    try:
        io = declared_io(module)
    except ValueError as exc:
        raise CheckpointRejected(f"{real}: {exc}", reason="probe_failed") from None
    if options.state_dim is not None and io.state_dim != options.state_dim:
        raise CheckpointRejected(
            f"{real}: state_dim {io.state_dim}, this node serves {options.state_dim}",
            reason="state_dim_mismatch",
        )
    if not isinstance(module, SACActor):  # any other architecture (SPEC §12)
        io, verified = verified_runner(real, module, io, jit=options.jit, limits=options.limits)
        return Prepared(loaded, module, verified, io)
    policy = module
    states = _probe_states(policy)
    actions = _probe_policy(real, policy, states)
    runner: Runner = EagerRunner(policy)
    limits = options.limits
    _, cost = measured_pass(
        runner, states.numpy(), budget=limits.max_activation_bytes, max_rows=limits.max_batch_rows
    )
    if options.jit:
        runner = compile_runner(policy, options.backend, probe=states.numpy(), expected=actions)
    return Prepared(loaded, policy, runner, replace(io, cost=cost))


def _fast(
    real: Path, loaded: LoadedCheckpoint, config: PolicyConfig, options: LoadOptions
) -> Prepared | None:
    """The numpy runner from the arrays, checked against the probe's reference pass over the
    same arrays; None (logged) if it disagrees, and the module is built instead."""
    arrays = actor_arrays(config, loaded.state_dict, real)
    states = probe_states(config.state_dim)
    actions = reference_pass(real, arrays, states)
    runner = NumpyRunner(arrays, compiled=options.jit)
    with np.errstate(all="ignore"):
        why = runner_error(runner(states), actions)
    if why is not None:
        log.warning("%s: the numpy runner %s; serving it with torch", real, why)
        return None
    cost = declared_cost(runner.row_bytes, states)
    io = ModelIO((config.state_dim,), (config.action_dim,), cost=cost)
    return Prepared(loaded, None, runner, io)


def _probe_states(policy: SACActor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1234)
    states = torch.randn(PROBE_ROWS, policy.state_dim, generator=generator)
    states[0] = 0.0
    return states


def _probe_policy(path: Path, policy: SACActor, states: torch.Tensor) -> npt.NDArray[np.float32]:
    """One forward pass: finite pre-squash mean and log-std of the right shape.

    Returns the deterministic actions, ``tanh(mean)``, the reference a compiled runner must
    reproduce.
    """
    try:
        with torch.inference_mode():
            mean, log_std = policy(states)
    except Exception as exc:  # noqa: BLE001 - any failure of the probe is a rejection
        raise CheckpointRejected(
            f"{path}: probe forward pass failed: {exc}", reason="probe_failed"
        ) from exc
    expected = (PROBE_ROWS, policy.action_dim)
    if tuple(mean.shape) != expected or tuple(log_std.shape) != expected:
        raise CheckpointRejected(
            f"{path}: probe output shape {tuple(mean.shape)}, expected {expected}",
            reason="probe_failed",
        )
    if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(log_std).all())):
        raise CheckpointRejected(
            f"{path}: probe overflows (non-finite pre-squash mean or log-std)", reason="non_finite"
        )
    actions: npt.NDArray[np.float32] = torch.tanh(mean).numpy()
    return actions
