"""The ``.safetensors`` format: a header length, a JSON header, then the tensors' raw bytes.

    [n: u64 little-endian][n bytes: {"__metadata__": {str: str}, name: {"dtype": "F32",
    "shape": [256, 28], "data_offsets": [begin, end]}, ...}][data: every tensor's bytes]

Read from the bytes the bounded reader already holds (the hash and the tensors describe the
same bytes), never through pickle. ``safetensors`` (Hugging Face's Rust parser,
``SafeTensors::read_metadata``, whose checks this module's mirror) checks that the header
fits the buffer and is at most 100 MB, that it is UTF-8 JSON naming known dtypes, and that
the offsets, sorted, tile the data exactly: from 0, no gap, no overlap, each
``end - begin == numel * itemsize`` (overflow checked), the last one at the end of the
buffer. It does not refuse a duplicate name (the last one wins), a field it does not know,
integer or bool tensors, a zero-size tensor of enormous declared shape, NaN, or metadata of
any content. So this module reads the header itself first
and refuses, in order:

1. under 8 bytes, or a header running past the file (``truncated``); a header longer than
   ``MAX_HEADER_BYTES``, judged from the 8 bytes alone: a length of 2**60 costs nothing
   (``bad_header``);
2. a header that is not UTF-8, not one JSON object opening at byte 8, with a duplicate key or
   ``NaN`` anywhere, an entry other than exactly ``{dtype, shape, data_offsets}`` of the right
   types, more than ``MAX_DIMS`` dimensions (``bad_header``);
3. a dtype other than F16, BF16, F32, F64 (``bad_dtype``);
4. more parameters declared than ``max_parameters`` (``too_many_parameters``);
5. offsets that do not tile the data exactly, as above (``bad_header``; ``truncated`` when the
   data ends before the last tensor);
6. the ``__metadata__`` (``checkpoint_metadata``), the size its config declares
   (``checkpoint_limits``), and tensor names or shapes other than that config's
   (``shape_mismatch``).

Only then are the tensors made, as views of the buffer the file was read into (no copy: the
checks above are exactly what makes a view safe, every one inside the data and of its
declared size), and they pass :func:`~common.checkpoint.tensors.check_tensors` like those of
a ``.pt``. A string of the header holding a lone surrogate escape (``"\\ud800"``), which
Python's JSON reads and the Rust parser refuses, is ``bad_header``. On a big-endian host the
library (``safetensors.torch.load``) reads the tensors and swaps their bytes; there what it
returns must be what the header said (``corrupt`` if it refuses the file or reads it
otherwise).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor

from common.checkpoint.architecture import check_state_shapes, resolve
from common.checkpoint.fields import CheckpointContents
from common.checkpoint.file import Buffer
from common.checkpoint.metadata import metadata_of, read_metadata, strict_json
from common.checkpoint.tensors import check_tensors
from common.errors import CheckpointLoadError, CheckpointRejected
from common.limits import CheckpointLimits

__all__ = ["DTYPES", "MAX_DIMS", "MAX_HEADER_BYTES", "decode_safetensors", "encode_safetensors"]

MAX_HEADER_BYTES = 1 << 20
MAX_DIMS = 8
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F32": (torch.float32, 4),
    "F64": (torch.float64, 8),
}
_LENGTH = struct.Struct("<Q")
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype][1]


def decode_safetensors(target: Path, data: Buffer, limits: CheckpointLimits) -> CheckpointContents:
    """The contents of the ``.safetensors`` checkpoint in ``data``, every bound checked first."""
    length = _header_length(target, data)
    header = _header(target, data[_LENGTH.size : _LENGTH.size + length])
    metadata = header.pop("__metadata__", None)
    entries = [_entry(target, name, value) for name, value in header.items()]
    declared = sum(math.prod(entry.shape) for entry in entries)
    if declared > limits.max_parameters:
        raise CheckpointRejected(
            f"{target}: the header declares {declared} parameters (at most "
            f"{limits.max_parameters})",
            reason="too_many_parameters",
        )
    _check_offsets(target, entries, len(data) - _LENGTH.size - length)
    shapes = {entry.name: entry.shape for entry in entries}
    architecture, config, fields = read_metadata(target, metadata, shapes)
    resolved = resolve(target, architecture, config, limits)
    check_state_shapes(target, shapes, resolved.shapes)
    state_dict = _tensors(target, data, _LENGTH.size + length, entries)
    check_tensors(target, state_dict, limits.max_parameters)
    return CheckpointContents(resolved.config, state_dict, fields, resolved.architecture.name)


def encode_safetensors(contents: CheckpointContents) -> bytes:
    """The safetensors bytes of ``contents``: its tensors, and everything else as metadata."""
    tensors = {
        name: t.detach().cpu().clone(memory_format=torch.contiguous_format)
        for name, t in contents.state_dict.items()
    }  # one storage each: safetensors refuses tensors that share one
    return _sorted_metadata(safetensors.torch.save(tensors, metadata=metadata_of(contents)))


def _sorted_metadata(data: bytes) -> bytes:
    """``data`` with its ``__metadata__`` keys in sorted order. safetensors writes them in
    hash order, which changes from one map to the next: one checkpoint would get another
    sha256 each time it is saved or converted."""
    (length,) = _LENGTH.unpack_from(data)
    header = json.loads(data[_LENGTH.size : _LENGTH.size + length])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    raw = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the tensors stay 8-byte aligned, as safetensors pads
    return _LENGTH.pack(len(raw)) + raw + data[_LENGTH.size + length :]


def _header_length(target: Path, data: Buffer) -> int:
    if len(data) < _LENGTH.size:
        raise CheckpointLoadError(
            f"{target}: {len(data)} bytes, not even a header length", reason="truncated"
        )
    (length,) = _LENGTH.unpack_from(data)
    if length > MAX_HEADER_BYTES:
        raise CheckpointLoadError(
            f"{target}: a header of {length} bytes (at most {MAX_HEADER_BYTES})",
            reason="bad_header",
        )
    if _LENGTH.size + length > len(data):
        raise CheckpointLoadError(
            f"{target}: a header of {length} bytes in a file of {len(data)}", reason="truncated"
        )
    return int(length)


def _header(target: Path, raw: Buffer) -> dict[str, object]:
    try:
        if not raw.startswith(b"{"):
            raise ValueError("it does not open with '{'")
        parsed = strict_json(raw.decode("utf-8"))  # a lone surrogate escape included
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise _bad_header(target, f"the header is not a JSON object: {str(exc)[:120]}") from None
    if not isinstance(parsed, dict):
        raise _bad_header(target, "the header is not a JSON object")
    return parsed


def _entry(target: Path, name: str, value: object) -> _Entry:
    shown = repr(name[:80])
    if not isinstance(value, dict) or set(value) != _ENTRY_KEYS:
        raise _bad_header(target, f"{shown} is not {{dtype, shape, data_offsets}}")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if not isinstance(dtype, str):
        raise _bad_header(target, f"{shown} has a dtype that is not a string")
    if dtype not in DTYPES:
        raise CheckpointLoadError(
            f"{target}: {shown} is {dtype[:20]}, not a real floating dtype ({', '.join(DTYPES)})",
            reason="bad_dtype",
        )
    if not _counts(shape) or len(shape) > MAX_DIMS:
        raise _bad_header(target, f"{shown} has a shape that is not {MAX_DIMS} sizes at most")
    if not _counts(offsets) or len(offsets) != 2:
        raise _bad_header(target, f"{shown} has data_offsets that are not [begin, end]")
    return _Entry(name, dtype, tuple(shape), offsets[0], offsets[1])


def _counts(value: object) -> bool:
    """A list of ints in [0, 2**63): JSON numbers that are neither bools nor floats."""
    return isinstance(value, list) and all(type(v) is int and 0 <= v < 1 << 63 for v in value)


def _check_offsets(target: Path, entries: list[_Entry], available: int) -> None:
    position = 0
    for entry in sorted(entries, key=lambda e: (e.begin, e.end)):
        shown = repr(entry.name[:80])
        if entry.begin != position:
            what = "leaves a gap before" if entry.begin > position else "overlaps"
            raise _bad_header(target, f"{shown} at {entry.begin} {what} byte {position}")
        if entry.end - entry.begin != entry.nbytes:
            raise _bad_header(
                target,
                f"{shown} spans {entry.end - entry.begin} bytes where its dtype and shape "
                f"need {entry.nbytes}",
            )
        position = entry.end
    if position > available:
        raise CheckpointLoadError(
            f"{target}: the tensors need {position} bytes of data, the file holds {available}",
            reason="truncated",
        )
    if position < available:
        raise _bad_header(target, f"{available - position} bytes after the last tensor")


def _tensors(target: Path, data: Buffer, start: int, entries: list[_Entry]) -> dict[str, Tensor]:
    """Each tensor as a view of ``data`` (its bytes begin at ``start``), no copy: the header
    was checked to tile the data exactly, so every view lies inside the buffer.
    ``safetensors.torch.load`` would copy every tensor out first (a 4 MB policy: 2.6 ms of
    copying into fresh memory, another ~2 ms building the tensors, on this machine); it
    still reads the file on a big-endian host, where the bytes must be swapped."""
    if sys.byteorder != "little":
        return _library_tensors(target, data, entries)
    state_dict: dict[str, Tensor] = {}
    for entry in entries:
        dtype = DTYPES[entry.dtype][0]
        if entry.nbytes == 0:  # torch.frombuffer refuses an empty view
            state_dict[entry.name] = torch.empty(entry.shape, dtype=dtype)
            continue
        flat = torch.frombuffer(
            data, dtype=dtype, count=math.prod(entry.shape), offset=start + entry.begin
        )
        state_dict[entry.name] = flat.view(entry.shape)
    return state_dict


def _library_tensors(target: Path, data: Buffer, entries: list[_Entry]) -> dict[str, Tensor]:
    try:
        loaded = safetensors.torch.load(bytes(data))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, or anything else it raises
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointLoadError(
            f"{target}: refused by the safetensors parser: {first}", reason="corrupt"
        ) from None
    state_dict: dict[str, Tensor] = {}
    for entry in entries:
        tensor = loaded.get(entry.name)
        if (
            tensor is None
            or tensor.dtype != DTYPES[entry.dtype][0]
            or tuple(tensor.shape) != entry.shape
        ):
            raise CheckpointLoadError(
                f"{target}: the safetensors parser reads {entry.name[:80]!r} otherwise",
                reason="corrupt",
            )
        state_dict[entry.name] = tensor
    if len(loaded) != len(state_dict):
        raise CheckpointLoadError(
            f"{target}: the safetensors parser reads other tensors", reason="corrupt"
        )
    return state_dict


def _bad_header(target: Path, what: str) -> CheckpointLoadError:
    return CheckpointLoadError(f"{target}: {what}", reason="bad_header")
