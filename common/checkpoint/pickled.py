"""The pickle of a checkpoint: only the globals ``torch.save`` writes for a dict of tensors.

``torch.load(weights_only=True)`` runs no code, but it allows ~140 globals, and some of them
allocate whatever the pickle asks: ``bytearray(2**31)`` costs 2 GiB from a 1 KB file before
any check sees a tensor, ``torch.FloatTensor(h, w)`` or ``UntypedStorage(n)`` make a tensor
of any size with no bytes of the file behind it. So the pickle (at most 1 MiB, see
:mod:`common.checkpoint.archive`) is first run by Python's C unpickler with stand-ins, the
"restricting globals" recipe of the pickle documentation: a global other than the few
``torch.save`` writes for dense tensors and parameters is ``unsafe_pickle``, and nothing
but plain data is built. Only then does ``torch.load(weights_only=True)`` run.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path

import torch

from common.checkpoint.file import Buffer
from common.errors import CheckpointError, CheckpointLoadError

__all__ = ["check_globals", "torch_load"]

_STORAGES = (
    "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
    "ComplexFloat", "ComplexDouble",
)  # fmt: skip
# Storage types only name a dtype (the bytes come from the archive); the dtype is judged later.
_STAND_INS = frozenset(
    {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter")}
    | {("torch", f"{kind}Storage") for kind in _STORAGES}
)


def _stand_in(*args: object, **kwargs: object) -> None:
    return None


class _Scan(pickle.Unpickler):
    """Unpickles plain data; tensors become ``None``; any other global is refused."""

    def __init__(self, target: Path, record: bytes) -> None:
        super().__init__(io.BytesIO(record))
        self.target = target

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) in _STAND_INS:
            return _stand_in
        raise CheckpointLoadError(
            f"{self.target}: refused, the file is not served: Unsupported global: "
            f"{module[:80]}.{name[:80]} (a checkpoint holds tensors and plain data only)",
            reason="unsafe_pickle",
        )

    def persistent_load(self, pid: object) -> None:
        return None


def check_globals(target: Path, record: bytes) -> None:
    """Refuse the pickle ``record`` if it names a global that torch.save never writes."""
    try:
        _Scan(target, record).load()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - the unpickler raises many types on junk
        raise CheckpointLoadError(
            f"{target}: corrupt pickle ({type(exc).__name__}: {str(exc)[:200]})",
            reason="corrupt",
        ) from None


def torch_load(target: Path, data: Buffer) -> object:
    """``torch.load(weights_only=True)`` of a checked archive, its failures with a reason."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise CheckpointLoadError(
                f"{target}: refused by torch.load(weights_only=True), the file is not served: "
                + _unpickler_reason(str(exc)),
                reason="unsafe_pickle",
            ) from None
        raise CheckpointLoadError(f"{target}: corrupt: {exc}", reason="corrupt") from None
    except Exception as exc:  # torch.load on arbitrary bytes raises anything (KeyError, ...)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointLoadError(
            f"{target}: corrupt ({type(exc).__name__}: {first})", reason="corrupt"
        ) from None


def _unpickler_reason(text: str) -> str:
    """The line of torch's refusal that names what was refused (not its advice to bypass)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("WeightsUnpickler error:"):
            return line.split(". Please use", 1)[0]
    return "the pickle holds objects other than tensors and plain data"
