"""The pickle may name only what torch.save writes for tensors: nothing allocates on its say."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch

from common import CheckpointLoadError
from common.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, packed_state_dict
from common.policy import SACActor
from tests.helpers import Call
from tests.process_stats import peak_memory_growth


def checkpoint_with(path: Path, **fields: object) -> Path:
    actor = SACActor()
    payload = {"format": CHECKPOINT_FORMAT, "format_version": 1,
               "policy_config": actor.config.to_dict(),
               "state_dict": packed_state_dict(actor.state_dict())}  # fmt: skip
    torch.save(payload | fields, path)
    return path


@pytest.mark.parametrize(
    "fields",
    [
        {"metadata": {"pad": Call(bytearray, 2**31)}},
        {"state_dict": {"trunk.0.weight": Call(torch.FloatTensor, 20_000, 20_000)}},
        {"extra": Call(torch.UntypedStorage, 2**33)},
    ],
    ids=["bytearray-2GiB", "FloatTensor-1.6GB", "UntypedStorage-8GiB"],
)
def test_globals_that_allocate_on_the_pickles_say_are_refused_before_they_run(
    tmp_path: Path, fields: dict[str, object]
) -> None:
    """weights_only allows bytearray(n), FloatTensor(h, w), UntypedStorage(n): refused unrun."""
    path = checkpoint_with(tmp_path / "model_alloc.pt", **fields)
    assert path.stat().st_size < 400_000
    with peak_memory_growth() as growth, pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(path)
    assert info.value.reason == "unsafe_pickle" and "Unsupported global" in str(info.value)
    assert growth[0] < 100, f"memory peaked {growth[0]:.0f} MB above its level"


def test_parameters_and_every_real_float_dtype_pass_the_scan(tmp_path: Path) -> None:
    """nn.Parameter values and half, bfloat16, double weights are what torch.save writes."""
    actor = SACActor()
    torch.save(dict(actor.named_parameters()), tmp_path / "params.pt")
    assert load_checkpoint(tmp_path / "params.pt").config == actor.config
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        torch.save(SACActor().to(dtype).state_dict(), tmp_path / "typed.pt")
        assert load_checkpoint(tmp_path / "typed.pt").state_dict["mean.bias"].dtype == dtype


def test_a_pickle_that_is_not_one_is_corrupt(tmp_path: Path) -> None:
    """A data.pkl of junk inside a proper archive is refused as corrupt."""
    buffer = io.BytesIO()
    torch.save({"a": 1}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(tmp_path / "junk.pt", "w") as out:
        for entry in source.infolist():
            junk = entry.filename.endswith("data.pkl")
            out.writestr(entry, b"\x80\x02junk" if junk else source.read(entry))
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(tmp_path / "junk.pt")
    assert info.value.reason == "corrupt"
