"""The zip archive ``torch.save`` writes, checked from its central directory before torch.load.

``torch.save`` stores every record uncompressed, and nothing before or after the archive.
``torch.load`` would inflate deflated records, so a 1 MiB file could carry 1 GiB of weights.
From the bytes already in memory, before anything is unpickled:

- the file is one zip archive: it starts with a local header and ends with the
  end-of-central-directory record (no comment), preceded by the zip64 records torch writes,
  all pointing at one central directory right before them, so that ``zipfile`` here and
  miniz in torch cannot read two different directories (``corrupt``, ``truncated``);
- the directory is at most 1 MiB, its entry names unique (ignoring case, as miniz does);
  every entry is stored, not compressed (``compressed_archive``), its size as stored and its
  data inside the file, and the sizes add up to at most ``max_bytes`` (``too_large``);
- the pickle record ``<archive>/data.pkl`` is at most 1 MiB (``too_large``).

Anything else is refused, including torch's legacy pre-1.6 format (``unsupported_format``),
whose storages are allocated at the sizes the pickle declares.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

from common.checkpoint.file import Buffer
from common.errors import CheckpointLoadError

__all__ = ["LEGACY_MAGIC", "MAX_DIRECTORY_BYTES", "MAX_PICKLE_BYTES", "ZIP_MAGIC", "pickle_record"]

MAX_DIRECTORY_BYTES = 1 << 20
MAX_PICKLE_BYTES = 1 << 20

ZIP_MAGIC = b"PK\x03\x04"
_END = struct.Struct("<4s4H2LH")  # signature, disks, entries, directory size, offset, comment
_END_SIG = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sLQL")  # zip64 locator: signature, disk, zip64 end offset, disks
_LOCATOR_SIG = b"PK\x06\x07"
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end: ..., entries, directory size, offset
_END64_SIG = b"PK\x06\x06"
LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def pickle_record(target: Path, data: Buffer, max_bytes: int) -> bytes:
    """Check the archive in ``data``; return its pickle record (``<archive>/data.pkl``)."""
    if not data:
        raise CheckpointLoadError(f"{target}: empty file", reason="truncated")
    if not data.startswith(ZIP_MAGIC):
        if data.startswith(LEGACY_MAGIC):
            raise CheckpointLoadError(
                f"{target}: torch's legacy (pre-1.6) format is not read; re-save it",
                reason="unsupported_format",
            )
        raise CheckpointLoadError(f"{target}: not a zip archive", reason="corrupt")
    directory = _directory(target, data)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except Exception as exc:  # noqa: BLE001 - zipfile raises more than BadZipFile on junk
        raise CheckpointLoadError(f"{target}: corrupt archive: {exc}", reason="corrupt") from None
    names = [entry.filename for entry in entries]
    if not names or len({name.lower() for name in names}) != len(names):
        raise CheckpointLoadError(f"{target}: empty or duplicate entries", reason="corrupt")
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED:
            raise CheckpointLoadError(
                f"{target}: {entry.filename} is compressed (torch.save never compresses)",
                reason="compressed_archive",
            )
        if (
            entry.file_size != entry.compress_size
            or entry.header_offset + entry.compress_size > directory
        ):
            raise CheckpointLoadError(f"{target}: {entry.filename} is malformed", reason="corrupt")
    declared = sum(entry.file_size for entry in entries)
    if declared > max_bytes:
        raise CheckpointLoadError(
            f"{target}: entries declare {declared} bytes, over the {max_bytes} allowed",
            reason="too_large",
        )
    return _read_pickle(target, archive, names[0].split("/")[0] + "/data.pkl")


def _directory(target: Path, data: Buffer) -> int:
    """Where the central directory starts, once it is known to be where every record says."""
    end = len(data) - _END.size
    if end < 0 or data[end : end + 4] != _END_SIG or data[-2:] != b"\0\0":
        reason = "corrupt" if _END_SIG in data[-(65536 + _END.size) :] else "truncated"
        raise CheckpointLoadError(
            f"{target}: the archive does not end with its end record", reason=reason
        )
    _, _, _, _, entries, size, offset, _ = _END.unpack_from(data, end)
    locator = end - _LOCATOR.size
    if locator >= _END64.size and data[locator : locator + 4] == _LOCATOR_SIG:
        end64 = locator - _END64.size
        _, _, where, _ = _LOCATOR.unpack_from(data, locator)
        signature, *_, entries64, size64, offset64 = _END64.unpack_from(data, end64)
        if (
            where != end64
            or signature != _END64_SIG
            or entries not in (entries64, 0xFFFF)
            or size not in (size64, 0xFFFFFFFF)
            or offset not in (offset64, 0xFFFFFFFF)
        ):
            raise CheckpointLoadError(f"{target}: inconsistent zip64 records", reason="corrupt")
        end, size, offset = end64, size64, offset64
    if offset + size != end:
        raise CheckpointLoadError(
            f"{target}: the central directory is not where the end record says", reason="corrupt"
        )
    if size > MAX_DIRECTORY_BYTES:
        raise CheckpointLoadError(
            f"{target}: a central directory of {size} bytes (at most {MAX_DIRECTORY_BYTES})",
            reason="too_large",
        )
    return int(offset)


def _read_pickle(target: Path, archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        entry = archive.getinfo(name)
    except KeyError:
        raise CheckpointLoadError(f"{target}: no {name} in the archive", reason="corrupt") from None
    if entry.file_size > MAX_PICKLE_BYTES:
        raise CheckpointLoadError(
            f"{target}: a pickle of {entry.file_size} bytes (at most {MAX_PICKLE_BYTES})",
            reason="too_large",
        )
    try:
        return archive.read(entry)
    except Exception as exc:  # noqa: BLE001 - a bad CRC, a local header that lies, ...
        raise CheckpointLoadError(f"{target}: corrupt {name}: {exc}", reason="corrupt") from None
