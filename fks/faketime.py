"""libfaketime, for the tests of a node whose clock is off (issue 24, f1/f2).

A process started with ``LD_PRELOAD=<libfaketime> FAKETIME=+400`` sees its wall clock 400 s
ahead (its monotonic clock untouched): a real node on a machine whose clock is wrong. Looked
for in the system's library folders, then in ``~/.cache/fks/faketime`` (``$FKS_CACHE_HOME``),
where :func:`ensure_libfaketime` unpacks Debian's ``libfaketime`` when it is missing
(``fks/debian.py``).
"""

from __future__ import annotations

from pathlib import Path

from fks.debian import CACHE_HOME, DebianUnavailable, fetch_lock, unpack_packages

__all__ = ["FaketimeUnavailable", "ensure_libfaketime", "skewed_clock"]

CACHE = CACHE_HOME / "faketime"
_NAME = "faketime/libfaketimeMT.so.1"
_SYSTEM = (Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib/aarch64-linux-gnu"), Path("/usr/lib"))


class FaketimeUnavailable(RuntimeError):
    """No libfaketime here, and none could be fetched."""


def _found() -> Path | None:
    for base in (*_SYSTEM, *sorted((CACHE / "root" / "usr" / "lib").glob("*-linux-gnu"))):
        if (base / _NAME).is_file():
            return base / _NAME
    return None


def ensure_libfaketime() -> Path:
    """The multi-threaded libfaketime: found, or unpacked from Debian into :data:`CACHE`."""
    with fetch_lock():
        found = _found()
        if found is not None:
            return found
        try:
            unpack_packages(["libfaketime"], CACHE / "root")
        except DebianUnavailable as exc:
            raise FaketimeUnavailable(str(exc)) from None
        found = _found()
    if found is None:
        raise FaketimeUnavailable(f"unpacked Debian's libfaketime into {CACHE}, no {_NAME} in it")
    return found


def skewed_clock(seconds: int) -> dict[str, str]:
    """The environment that puts a process' wall clock ``seconds`` off (monotonic kept)."""
    return {
        "LD_PRELOAD": str(ensure_libfaketime()),
        "FAKETIME": f"{seconds:+d}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
