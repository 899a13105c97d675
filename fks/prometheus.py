"""Find (or fetch) Prometheus and ``promtool``, for the test of the monitoring setup.

Looked for, in order: ``$FKS_PROMETHEUS`` (the ``prometheus`` binary; ``promtool`` beside it),
``prometheus`` on ``PATH``, then a copy extracted earlier into ``~/.cache/fks/prometheus``.
Failing those, on a Debian machine, :func:`ensure_prometheus` unpacks Debian's ``prometheus``
package there (``fks/debian.py``: nothing is installed system-wide and no service is
started). Its two binaries are static Go programs: no library to point at.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from fks.debian import CACHE_HOME, DebianUnavailable, fetch_lock, places, unpack_packages

__all__ = ["CACHE", "PrometheusUnavailable", "ensure_prometheus"]

CACHE = CACHE_HOME / "prometheus"
UNPACKED = CACHE / "usr" / "bin" / "prometheus"  # where the package puts it


class PrometheusUnavailable(RuntimeError):
    """No Prometheus here, and none could be fetched; the message says why."""


def _runs(binary: Path) -> bool:
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _usable(prometheus: Path) -> bool:
    return prometheus.is_file() and _runs(prometheus) and _runs(prometheus.with_name("promtool"))


def ensure_prometheus() -> tuple[Path, Path]:
    """``prometheus`` and ``promtool``: found, or fetched from Debian into :data:`CACHE`."""
    with fetch_lock():
        for candidate in places("FKS_PROMETHEUS", "prometheus", UNPACKED):
            if _usable(candidate):
                return candidate, candidate.with_name("promtool")
        try:
            unpack_packages(["prometheus"], CACHE)
        except DebianUnavailable as exc:
            raise PrometheusUnavailable(str(exc)) from exc
    if not _usable(UNPACKED):
        raise PrometheusUnavailable(f"Debian's prometheus package did not give {UNPACKED}")
    return UNPACKED, UNPACKED.with_name("promtool")
