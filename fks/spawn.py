"""Starting the helper processes (``redis-server``, sentinels, ``moto_server``, the server
itself): :func:`spawn` runs a command with its output appended to a log file (or dropped),
and :func:`wait_started` polls until the process answers, as :func:`~fks.waiting.wait_until`
does, but gives up at once, saying so, when the process exits instead.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from fks.waiting import NOT_YET, wait_until

__all__ = ["spawn", "wait_started"]


def spawn(
    args: Sequence[str], log_path: Path | None = None, *, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``args`` as a child process, stdout and stderr appended to ``log_path`` (dropped
    without one); ``env`` replaces the environment when given."""
    if log_path is None:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    with open(log_path, "ab") as log:  # the child holds its own descriptor
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_started(
    process: subprocess.Popen[bytes],
    answers: Callable[[], object],
    timeout: float,
    what: str,
    *,
    exited: Callable[[int], str],
    retry_on: tuple[type[BaseException], ...] = NOT_YET,
    every: float = 0.05,
    give_up: Callable[[], None] | None = None,
) -> None:
    """Return once ``answers()`` is true; ``RuntimeError(exited(returncode))`` as soon as
    ``process`` has exited; ``TimeoutError`` saying ``what`` after ``timeout`` seconds, once
    ``give_up()`` (if given: stop the process that did not answer) has run."""

    def answered() -> object:
        code = process.poll()
        if code is not None:
            raise RuntimeError(exited(code))
        return answers()

    try:
        wait_until(answered, timeout, what, retry_on=retry_on, every=every)
    except TimeoutError:
        if give_up is not None:
            give_up()
        raise
