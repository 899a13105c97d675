"""Hostile .safetensors files (issue 13, "Bad input"): each refused with its reason, before
the library or a tensor is reached where the header alone tells, never an unexpected type."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

import common.checkpoint.safetensors as reader
from common import CheckpointError, CheckpointNotification, Settings
from common.checkpoint import CheckpointLimits, load_checkpoint, save_checkpoint
from common.policy import SACActor
from subscriber import ModelHolder
from subscriber.pipeline.decider import Decider
from tests.helpers import write_checkpoint
from tests.safetensors_files import SMALL, Parts, saved_parts, tensors

Edit = Callable[[Parts], None]


def entry(parts: Parts, name: str) -> dict[str, Any]:
    value: dict[str, Any] = parts.header[name]
    return value


def ordered(parts: Parts) -> list[str]:
    """Tensor names by data offset."""
    return sorted(tensors(parts), key=lambda n: tensors(parts)[n]["data_offsets"])


def overlap(p: Parts) -> None:
    first, second = ordered(p)[:2]
    entry(p, second)["data_offsets"] = list(entry(p, first)["data_offsets"])


def gap(p: Parts) -> None:
    last = entry(p, ordered(p)[-1])
    last["data_offsets"] = [last["data_offsets"][0] + 4, last["data_offsets"][1] + 4]
    p.data += b"\0" * 4


def out_of_range(p: Parts) -> None:
    last = entry(p, ordered(p)[-1])
    last["data_offsets"] = [last["data_offsets"][0], len(p.data) + 1 << 40]


def wrong_size(p: Parts) -> None:
    entry(p, ordered(p)[0])["shape"] = [3]  # a 1-element bias's bytes, declared as 3


def reversed_offsets(p: Parts) -> None:
    first = entry(p, ordered(p)[0])
    first["data_offsets"] = first["data_offsets"][::-1]


def trailing_bytes(p: Parts) -> None:
    p.data += b"\0" * 8


def negative_offset(p: Parts) -> None:
    entry(p, ordered(p)[0])["data_offsets"][0] = -4


def float_offset(p: Parts) -> None:
    entry(p, ordered(p)[0])["data_offsets"][1] = 4.0


def unknown_field(p: Parts) -> None:
    entry(p, ordered(p)[0])["note"] = "x"


def too_many_dims(p: Parts) -> None:
    entry(p, ordered(p)[0])["shape"] = [1] * 9


def duplicate_name(p: Parts) -> None:
    """The same entry twice: safetensors keeps the last one silently; this reader refuses."""
    name = ordered(p)[0]
    text = json.dumps(p.header, separators=(",", ":"))
    again = json.dumps({name: p.header[name]}, separators=(",", ":"))[1:-1]
    p.raw_header = ("{" + again + "," + text[1:]).encode()


def not_json(p: Parts) -> None:
    p.raw_header = b"{not json" + b" " * 10


def not_utf8(p: Parts) -> None:
    p.raw_header = b'{"\xff":1}'


def length_zero(p: Parts) -> None:
    p.length = 0


def length_2_60(p: Parts) -> None:
    p.length = 1 << 60


def length_past_the_file(p: Parts) -> None:
    p.length = len(p.to_bytes()) + 1


def length_short(p: Parts) -> None:
    p.length = len(p.to_bytes()) - len(p.data) - 8 - 1  # the JSON is cut by one byte


def int_dtype(p: Parts) -> None:
    entry(p, ordered(p)[0])["dtype"] = "I32"  # 4 bytes like F32: the offsets still fit


def bool_dtype(p: Parts) -> None:
    first = entry(p, ordered(p)[0])
    first["dtype"], first["shape"] = "BOOL", [4]  # 4 bytes: the offsets still fit


def f8_dtype(p: Parts) -> None:
    first = entry(p, ordered(p)[0])
    first["dtype"], first["shape"] = "F8_E4M3", [4]


def huge_shape(p: Parts) -> None:
    entry(p, ordered(p)[0])["shape"] = [2**31, 2**31]


def zero_size_huge_shape(p: Parts) -> None:
    """[0, 2**62] holds no bytes, so safetensors accepts it: not the config's shape."""
    last = entry(p, ordered(p)[-1])["data_offsets"][1]
    p.header["extra"] = {"dtype": "F32", "shape": [0, 2**62], "data_offsets": [last, last]}


def missing_tensor(p: Parts) -> None:
    name = ordered(p)[-1]
    size = entry(p, name)["data_offsets"][1] - entry(p, name)["data_offsets"][0]
    del p.header[name]
    p.data = p.data[:-size]


def renamed_tensor(p: Parts) -> None:
    name = ordered(p)[0]
    p.header[name + "x"] = p.header.pop(name)


def lone_surrogate(p: Parts) -> None:
    """Python's json reads a lone surrogate; safetensors' parser refuses it, and so do we."""
    p.header["__metadata__"]["model_name"] = "\ud800"


def lone_surrogate_in_user_metadata(p: Parts) -> None:
    """Escaped twice: the header is plain text, the JSON inside one of its values is not."""
    p.header["__metadata__"]["metadata"] = '{"note": "\\ud800"}'


def lone_surrogate_in_config(p: Parts) -> None:
    p.header["__metadata__"]["config"] = p.header["__metadata__"]["config"].replace(
        '"hidden"', '"\\udfffhidden"'
    )


def lone_surrogate_name(p: Parts) -> None:
    """The same in a tensor's name."""
    p.header["mean.\udfff"] = p.header.pop("mean.bias")


CASES: dict[str, tuple[Edit, str]] = {
    "overlapping offsets": (overlap, "bad_header"),
    "a gap between tensors": (gap, "bad_header"),
    "an offset out of range": (out_of_range, "bad_header"),
    "offsets not matching dtype x shape": (wrong_size, "bad_header"),
    "end before begin": (reversed_offsets, "bad_header"),
    "bytes after the last tensor": (trailing_bytes, "bad_header"),
    "a negative offset": (negative_offset, "bad_header"),
    "a float offset": (float_offset, "bad_header"),
    "a field safetensors ignores": (unknown_field, "bad_header"),
    "nine dimensions": (too_many_dims, "bad_header"),
    "a duplicate tensor name": (duplicate_name, "bad_header"),
    "a header that is not JSON": (not_json, "bad_header"),
    "a header that is not UTF-8": (not_utf8, "bad_header"),
    "a header length of 0": (length_zero, "bad_header"),
    "a header length of 2**60": (length_2_60, "bad_header"),
    "a header length past the file": (length_past_the_file, "truncated"),
    "a header length one short": (length_short, "bad_header"),
    "an int tensor": (int_dtype, "bad_dtype"),
    "a bool tensor": (bool_dtype, "bad_dtype"),
    "a float8 tensor": (f8_dtype, "bad_dtype"),
    "a huge declared shape": (huge_shape, "too_many_parameters"),
    "a zero-size tensor of huge shape": (zero_size_huge_shape, "shape_mismatch"),
    "a missing tensor": (missing_tensor, "shape_mismatch"),
    "a renamed tensor": (renamed_tensor, "shape_mismatch"),
    "a lone surrogate in the metadata": (lone_surrogate, "bad_header"),
    "a lone surrogate in a tensor name": (lone_surrogate_name, "bad_header"),
    "a lone surrogate in the user metadata": (lone_surrogate_in_user_metadata, "bad_metadata"),
    "a lone surrogate in the config": (lone_surrogate_in_config, "bad_config"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_lying_file_is_refused_with_its_reason(tmp_path: Path, case: str) -> None:
    edit, reason = CASES[case]
    parts = saved_parts(tmp_path)
    edit(parts)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(parts.write(tmp_path / "model.safetensors"))
    assert info.value.reason == reason, info.value


HEADER_ALONE = list(CASES)


@pytest.mark.parametrize("case", HEADER_ALONE)
def test_the_header_alone_refuses_them_before_the_library_reads_a_tensor(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """None of those files reaches the making of tensors: no view of the buffer is ever made
    (nor, on a big-endian host, does the library read one)."""
    monkeypatch.setattr(reader, "_tensors", lambda *args: pytest.fail("materialised"))
    edit, reason = CASES[case]
    parts = saved_parts(tmp_path)
    edit(parts)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(parts.write(tmp_path / "model.safetensors"))
    assert info.value.reason == reason


def test_a_header_length_of_2_60_is_judged_from_eight_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of the header is decoded or parsed: the length alone refuses it."""
    monkeypatch.setattr(reader, "strict_json", lambda text: pytest.fail("parsed"))
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 60) + b"{}" + b"\0" * 64)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert info.value.reason == "bad_header" and str(1 << 60) in str(info.value)


@pytest.mark.parametrize("keep", [0, 4, 8, 20, 0.5, 0.9, -1])
def test_a_truncated_file_is_refused(tmp_path: Path, keep: float) -> None:
    """Any prefix: empty, inside the length, inside the header, inside the data."""
    data = saved_parts(tmp_path).to_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert info.value.reason == "truncated"


def test_a_genuine_safetensors_file_of_int_tensors_is_refused(tmp_path: Path) -> None:
    """Integer weights written by safetensors itself (offsets all true): bad_dtype."""
    state = {k: v.to(torch.int32) for k, v in SACActor(SMALL).state_dict().items()}
    safetensors.torch.save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "model.safetensors")
    assert info.value.reason == "bad_dtype"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(tmp_path: Path, dtype: torch.dtype, value: float) -> None:
    actor = SACActor(SMALL).to(dtype)
    with torch.no_grad():
        actor.mean.bias[0] = value
    save_checkpoint(tmp_path / "model.safetensors", actor)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "model.safetensors")
    assert info.value.reason == "non_finite"


def test_more_parameters_than_the_limit_are_refused_from_the_header(tmp_path: Path) -> None:
    """A true file over max_parameters is refused before a tensor is made."""
    path = save_checkpoint(tmp_path / "model.safetensors", SACActor(SMALL)).path
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, limits=CheckpointLimits(max_parameters=100))
    assert info.value.reason == "too_many_parameters"


def test_a_file_over_the_byte_limit_is_refused_from_its_size(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "model.safetensors", SACActor(SMALL)).path
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, limits=CheckpointLimits(max_bytes=path.stat().st_size - 1))
    assert info.value.reason == "too_large"


NODE_CASES = ["a header length of 2**60", "an int tensor", "overlapping offsets",
              "a huge declared shape", "a header length past the file"]  # fmt: skip


@pytest.mark.parametrize("case", [*NODE_CASES, "NaN weights"])
def test_a_node_refuses_them_counts_them_and_keeps_serving(
    settings_for: Callable[..., Settings], model_root: Path, tmp_path: Path, case: str
) -> None:
    """Announced to a serving holder (forced, no sha256): refused with the reason, counted,
    the served model untouched."""
    holder = ModelHolder(settings_for())
    decider = Decider(holder)
    assert decider.apply(
        CheckpointNotification(model_path=str(write_checkpoint(model_root, 1).path), version=1)
    ).applied
    served = holder.current()
    path = model_root / "model_2.safetensors"
    if case == "NaN weights":
        actor = SACActor()
        with torch.no_grad():
            actor.mean.weight.fill_(float("nan"))
        save_checkpoint(path, actor)
        reason = "non_finite"
    else:
        edit, reason = CASES[case]
        parts = saved_parts(tmp_path)
        edit(parts)
        parts.write(path)
    outcome = decider.apply(CheckpointNotification(model_path=str(path), version=2, force=True))
    assert not outcome.applied and outcome.reason == reason
    assert holder.current() is served
    labels = {"model": holder.metrics.model, "reason": reason}
    count = holder.metrics.registry.get_sample_value("fks_rejections_total", labels)
    assert count == 1.0


def test_the_tensors_are_views_of_the_bytes_read_and_equal_to_the_library_s(
    tmp_path: Path,
) -> None:
    """No copy: every tensor shares the one buffer the file was read into, and holds what
    safetensors' own reader gives for the same file (the reference)."""
    saved = write_checkpoint(tmp_path, 1, name="model_1.safetensors")
    loaded = load_checkpoint(saved.path)
    reference = safetensors.torch.load_file(saved.path)
    spans = sorted((t.data_ptr(), t.nbytes) for t in loaded.state_dict.values())
    for (at, size), (following, _) in zip(spans, spans[1:], strict=False):
        assert following == at + size  # one buffer, the tensors tiling it as in the file
    assert loaded.state_dict.keys() == reference.keys()
    for name, tensor in loaded.state_dict.items():
        assert tensor.dtype == reference[name].dtype
        assert torch.equal(tensor, reference[name]), name


def test_views_of_an_unaligned_tensor_are_read_right(tmp_path: Path) -> None:
    """Three float16 values first make the float32 tensor after them start on a 2-byte
    boundary (a file safetensors itself would not write, but may be given): the view still
    reads the values that were written."""
    a, b = torch.arange(3, dtype=torch.float16), torch.arange(5.0) / 3
    header = {
        "a": {"dtype": "F16", "shape": [3], "data_offsets": [0, 6]},
        "b": {"dtype": "F32", "shape": [5], "data_offsets": [6, 26]},
    }
    raw = json.dumps(header).encode()
    data = bytearray(struct.pack("<Q", len(raw)) + raw + a.numpy().tobytes() + b.numpy().tobytes())
    entries = [reader._entry(tmp_path, name, value) for name, value in header.items()]
    got = reader._tensors(tmp_path, data, 8 + len(raw), entries)
    assert torch.equal(got["a"], a) and torch.equal(got["b"], b)
