"""The tensors of a loaded checkpoint: real floats, laid out as torch.save writes them, bounded.

``torch.save`` writes dense CPU tensors, each a contiguous view of a storage; views sharing a
storage never overlap (``packed_state_dict`` puts every weight side by side in one). Anything
else is refused before a model is built from it:

- a dtype other than float16, bfloat16, float32, float64 (``bad_dtype``): a complex tensor
  of inf would skip the finite check and be copied into a float weight;
- a sparse, quantized or non-CPU tensor, a non-contiguous one (zero strides: one 4-byte
  storage expanded to a 32768 x 32768 weight), a view past its storage (``bad_layout``);
- views of one storage that overlap (``aliased_storage``);
- more parameters in all than ``max_parameters`` (``too_many_parameters``);
- NaN or inf anywhere (``non_finite``).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from common.errors import CheckpointLoadError, CheckpointRejected

__all__ = ["REAL_FLOATS", "check_finite", "check_tensors"]

REAL_FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
_NUMPY_FLOATS = frozenset({torch.float16, torch.float32, torch.float64})


def check_tensors(target: Path, state_dict: Mapping[str, Tensor], max_parameters: int) -> None:
    """Refuse a state_dict whose tensors are not what torch.save writes, or too many."""
    total = 0
    spans: dict[int, list[tuple[int, int, str]]] = {}
    for name, tensor in state_dict.items():
        if tensor.dtype not in REAL_FLOATS:
            raise CheckpointLoadError(
                f"{target}: {name} is {tensor.dtype}, not a real floating dtype",
                reason="bad_dtype",
            )
        if (
            tensor.layout != torch.strided
            or tensor.device.type != "cpu"
            or not tensor.is_contiguous()
        ):
            raise CheckpointLoadError(
                f"{target}: {name} is not a dense contiguous CPU tensor "
                f"(strides {tuple(tensor.stride())[:8]})",
                reason="bad_layout",
            )
        size = tensor.element_size()
        start = int(tensor.storage_offset()) * size
        end = start + tensor.numel() * size
        storage = tensor.untyped_storage()
        if start < 0 or end > storage.nbytes():
            raise CheckpointLoadError(
                f"{target}: {name} lies outside its storage", reason="bad_layout"
            )
        if end > start:
            spans.setdefault(storage.data_ptr(), []).append((start, end, name))
        total += tensor.numel()
    if total > max_parameters:
        raise CheckpointRejected(
            f"{target}: {total} parameters (at most {max_parameters})",
            reason="too_many_parameters",
        )
    for views in spans.values():
        views.sort()
        for (_, end, first), (start, _, second) in pairwise(views):
            if start < end:
                raise CheckpointLoadError(
                    f"{target}: {first} and {second} overlap in one storage",
                    reason="aliased_storage",
                )


def check_finite(target: Path, state_dict: Mapping[str, Tensor]) -> None:
    """Refuse NaN or inf in any weight (of a state_dict that passed :func:`check_tensors`)."""
    for name, tensor in state_dict.items():
        if tensor.dtype in _NUMPY_FLOATS:
            # numpy's check costs ~5 us a tensor, torch's ~50 us (dispatch overhead).
            finite = bool(np.isfinite(tensor.detach().numpy()).all())
        else:
            finite = bool(torch.isfinite(tensor).all())
        if not finite:
            raise CheckpointRejected(f"{target}: non-finite values in {name}", reason="non_finite")
