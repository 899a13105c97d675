"""The archive is checked before torch.load: stored records only, one unambiguous directory."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from common import CheckpointLoadError
from common.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointLimits,
    build_policy,
    load_checkpoint,
    save_checkpoint,
)
from common.policy import PolicyConfig, SACActor


def rezip(
    data: bytes,
    path: Path,
    *,
    deflate: bool = False,
    rename: dict[str, str] | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """Rewrite the torch.save archive ``data`` to ``path``: weights deflated, names changed,
    ``extra`` entries added after the archive's own."""
    source = zipfile.ZipFile(io.BytesIO(data))
    with zipfile.ZipFile(path, "w") as out:
        for entry in source.infolist():
            method = zipfile.ZIP_DEFLATED if deflate and "/data/" in entry.filename else 0
            name = (rename or {}).get(entry.filename, entry.filename)
            out.writestr(name, source.read(entry), compress_type=method)
        for name, content in (extra or {}).items():
            out.writestr(name, content)
    return path


def test_a_deflated_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    """Zero weights deflated ~1000:1 (as p2b builds them) are refused as compressed_archive."""
    config = PolicyConfig(hidden=(512, 512))
    zeros = {k: torch.zeros(v.shape) for k, v in SACActor(config).state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 1,
                "policy_config": config.to_dict(), "state_dict": zeros}, buffer)  # fmt: skip
    bomb = rezip(buffer.getvalue(), tmp_path / "model_bomb.pt", deflate=True)
    assert bomb.stat().st_size * 50 < len(buffer.getvalue())
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(bomb)
    assert info.value.reason == "compressed_archive"


def test_a_rewritten_but_stored_archive_still_loads(tmp_path: Path) -> None:
    """Re-zipped by Python's zipfile with nothing compressed, a checkpoint still loads."""
    saved = save_checkpoint(tmp_path / "model_1.pt", SACActor(), version=4)
    again = rezip(saved.path.read_bytes(), tmp_path / "model_again.pt")
    assert load_checkpoint(again).version == 4


def patch_entry(data: bytes, name: str, like: str) -> bytes:
    """Point ``name``'s central-directory record at ``like``'s data (overlapping entries)."""
    out = bytearray(data)
    records = {}
    at = data.index(b"PK\x01\x02")
    while data[at : at + 4] == b"PK\x01\x02":
        size = 46 + sum(struct.unpack_from("<3H", data, at + 28))
        records[data[at + 46 : at + 46 + struct.unpack_from("<H", data, at + 28)[0]]] = at
        at += size
    source, target = records[like.encode()], records[name.encode()]
    out[target + 16 : target + 28] = data[source + 16 : source + 28]  # crc, sizes
    out[target + 42 : target + 46] = data[source + 42 : source + 46]  # local header offset
    return bytes(out)


def test_entries_that_declare_more_than_max_bytes_are_refused(tmp_path: Path) -> None:
    """Two records overlapping one weight blob declare twice its size: over max_bytes, too_large."""
    saved = save_checkpoint(tmp_path / "model_1.pt", SACActor())
    data = patch_entry(saved.path.read_bytes(), "archive/version", "archive/data/0")
    (tmp_path / "model_overlap.pt").write_bytes(data)
    limits = CheckpointLimits(max_bytes=int(len(data) * 1.5))
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(tmp_path / "model_overlap.pt", limits=limits)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d + b"trailing bytes",
        lambda d: d[:-2] + b"\x05\x00hello",  # an archive comment
        lambda d: d[:-10] + struct.pack("<L", 0) + d[-6:],  # the 32-bit directory size lies
        lambda d: d[:-34] + struct.pack("<Q", 0) + d[-26:],  # the zip64 locator lies
    ],
    ids=["trailing", "comment", "eocd-size", "zip64-locator"],
)
def test_an_archive_zipfile_and_torch_could_read_differently_is_corrupt(
    tmp_path: Path, mangle: object
) -> None:
    """Bytes after the end record, a comment, or records that disagree: refused as corrupt."""
    saved = save_checkpoint(tmp_path / "model_1.pt", SACActor())
    bad = tmp_path / "model_bad.pt"
    bad.write_bytes(mangle(saved.path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(bad)
    assert info.value.reason == "corrupt"


def test_entry_names_equal_but_for_case_are_refused(tmp_path: Path) -> None:
    """miniz matches names ignoring case: two that differ only so are ambiguous, corrupt."""
    saved = save_checkpoint(tmp_path / "model_1.pt", SACActor())
    bad = rezip(
        saved.path.read_bytes(), tmp_path / "model_case.pt", extra={"archive/DATA/0": b"\0" * 16}
    )
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(bad)
    assert info.value.reason == "corrupt"


def test_a_pickle_over_1_mib_is_refused(tmp_path: Path) -> None:
    """Metadata of 2 MB makes data.pkl too large to be unpickled: too_large."""
    saved = save_checkpoint(
        tmp_path / "model_1.pt", SACActor(), metadata={"notes": "x" * 2_000_000}
    )
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(saved.path)
    assert info.value.reason == "too_large" and "pickle" in str(info.value)


def test_a_central_directory_over_1_mib_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    """20,000 tiny entries (a 1.3 MB directory) are refused as too_large."""
    saved = save_checkpoint(tmp_path / "model_1.pt", SACActor())
    pads = {f"archive/pad/{index:05d}": b"" for index in range(20_000)}
    crowded = rezip(saved.path.read_bytes(), tmp_path / "model_crowded.pt", extra=pads)
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(crowded)
    assert info.value.reason == "too_large" and "central directory" in str(info.value)


def test_the_legacy_torch_format_is_refused_by_name(tmp_path: Path) -> None:
    """A pre-1.6 (non-zip) torch.save file is unsupported_format, never handed to torch.load."""
    torch.save(SACActor().state_dict(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointLoadError) as info:
        load_checkpoint(tmp_path / "old.pt")
    assert info.value.reason == "unsupported_format"


def test_an_unpacked_checkpoint_with_one_record_per_tensor_still_loads(tmp_path: Path) -> None:
    """Older files hold each tensor in its own record: they load and build."""
    actor = SACActor()
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 1, "version": 2,
                "policy_config": actor.config.to_dict(),
                "state_dict": {k: v.clone() for k, v in actor.state_dict().items()}},
               tmp_path / "model_2.pt")  # fmt: skip
    with zipfile.ZipFile(tmp_path / "model_2.pt") as archive:
        assert sum("/data/" in n for n in archive.namelist()) == len(actor.state_dict())
    loaded = load_checkpoint(tmp_path / "model_2.pt")
    state = torch.randn(4, 28)
    assert loaded.version == 2 and torch.equal(build_policy(loaded).act(state), actor.act(state))
