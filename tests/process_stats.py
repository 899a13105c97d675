"""What this test process has read and held, from /proc/self (Linux)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def bytes_read() -> int:
    """Bytes this process has read with read(2) and friends so far (/proc/self/io rchar)."""
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024


@contextmanager
def peak_memory_growth() -> Iterator[list[float]]:
    """Yields a list that holds, on exit, how far resident memory peaked above its level at
    entry, in MB (the peak is reset by writing 5 to /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    start = _status_mb("VmRSS")
    growth: list[float] = []
    yield growth
    growth.append(_status_mb("VmHWM") - start)
