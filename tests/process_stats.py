"""What this test process (or a server it started) has read and held, from /proc (Linux)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def bytes_read() -> int:
    """Bytes this process has read with read(2) and friends so far (/proc/self/io rchar)."""
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("rchar:"))


def _status_mb(field: str, pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024


@contextmanager
def peak_memory_growth(pid: int | str = "self") -> Iterator[list[float]]:
    """Yields a list that holds, on exit, how far resident memory peaked above its level at
    entry, in MB (the peak is reset by writing 5 to /proc/<pid>/clear_refs): of this process,
    or of the process ``pid`` (a server this test started)."""
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")
    start = _status_mb("VmRSS", pid)
    growth: list[float] = []
    yield growth
    growth.append(_status_mb("VmHWM", pid) - start)
