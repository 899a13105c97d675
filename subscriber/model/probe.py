"""The probe pass: what a checkpoint's network computes on fixed states, before it is served.

:func:`reference_pass` is ``SACActor.forward`` written out over the loaded weights, read by
name in their stored ``(out, in)`` layout, one column per state (``W @ Hᵀ + b``), in float32
as a built module holds them: the probe's checks (the right shape, a finite pre-squash mean
and log-std) and the reference the served runner must reproduce within ``COMPILE_ATOL``.
It shares no code with the runner (which multiplies rows by the transposed weights,
``H @ Wᵀ``: another BLAS call), so a runner that computes anything but the network (a layer
skipped or transposed, a bias or a clamp lost) is caught; the tests also hold the runner to
torch's own ``SACActor`` (tests/test_fast_load.py).

Why this reference: it is the cheapest independent check measured. Timed between 5 ms
pauses, as loads arrive, on the 2-core development machine, for the 300 KB / 4 MB actor:
this pass ~0.2 / ~0.8 ms; torch's ``F.linear`` over the same tensors ~0.5 / ~0.9 ms (the
dispatcher's code is cold by then); a float64 numpy pass ~0.23 / ~1.7 ms (it converts every
weight first).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import numpy.typing as npt

from common.errors import CheckpointRejected
from subscriber.model.numpy_runner import ActorArrays

__all__ = ["COMPILE_ATOL", "PROBE_ROWS", "probe_states", "reference_pass", "runner_error"]

COMPILE_ATOL = 1e-5
PROBE_ROWS = 8
Array = npt.NDArray[np.float32]


@functools.lru_cache(maxsize=8)
def probe_states(state_dim: int) -> Array:
    """``PROBE_ROWS`` fixed states (the first all zeros), the same for every load; read-only."""
    states = np.random.default_rng(1234).standard_normal((PROBE_ROWS, state_dim))
    states[0] = 0.0
    out = states.astype(np.float32)
    out.flags.writeable = False
    return out


def reference_pass(path: Path, arrays: ActorArrays, states: Array) -> Array:
    """The deterministic actions ``tanh(mean)`` on ``states``; CheckpointRejected if the pass
    fails (``probe_failed``) or overflows (``non_finite``)."""
    config = arrays.config
    try:
        with np.errstate(all="ignore"):  # an overflow is judged below, not warned about
            h = states.T
            for weight, bias in arrays.trunk:
                h = weight @ h
                h += bias[:, None]
                np.maximum(h, 0.0, out=h)
            mean = arrays.mean[0] @ h + arrays.mean[1][:, None]
            log_std = arrays.log_std[0] @ h + arrays.log_std[1][:, None]
            np.clip(log_std, config.log_std_min, config.log_std_max, out=log_std)
            finite = bool(np.isfinite(mean).all() and np.isfinite(log_std).all())
            actions: Array = np.tanh(mean).T
    except Exception as exc:  # noqa: BLE001 - any failure of the probe is a rejection
        raise CheckpointRejected(
            f"{path}: probe forward pass failed: {exc}", reason="probe_failed"
        ) from exc
    expected = (states.shape[0], config.action_dim)
    if actions.shape != expected or log_std.T.shape != expected:
        raise CheckpointRejected(
            f"{path}: probe output shape {actions.shape}, expected {expected}",
            reason="probe_failed",
        )
    if not finite:
        raise CheckpointRejected(
            f"{path}: probe overflows (non-finite pre-squash mean or log-std)", reason="non_finite"
        )
    return actions


def runner_error(out: Array, reference: Array) -> str | None:
    """Why ``out`` is not ``reference`` within ``COMPILE_ATOL``, or None if it is."""
    if out.shape != reference.shape:
        return f"gives shape {out.shape}, not {reference.shape}"
    error = float(np.abs(out - reference).max())
    if not error <= COMPILE_ATOL:
        return f"differs from the reference by {error:.3g}"
    return None
