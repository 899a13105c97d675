"""fks.waiting.wait_until: the one wait loop of the process helpers."""

from __future__ import annotations

import time

import pytest
import redis

from fks.waiting import wait_until


class Answers:
    """A predicate that gives each of ``answers`` in turn (an exception: raised), the last
    one again from then on; ``calls`` counts the calls."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self) -> bool:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_returns_once_the_predicate_is_true() -> None:
    """Polled until true: the third call ends the wait."""
    third = Answers(False, False, True)
    wait_until(third, 5, "never", every=0.001)
    assert third.calls == 3


def test_the_retried_errors_count_as_not_yet() -> None:
    """A Redis or OS error (the default) is "not yet", until the predicate answers."""
    refused_twice = Answers(redis.ConnectionError("refused"), ConnectionRefusedError(), True)
    wait_until(refused_twice, 5, "never", every=0.001)
    assert refused_twice.calls == 3


def test_any_other_error_ends_the_wait_at_once() -> None:
    """An error outside retry_on (a process that exited) is raised on the first call."""
    exited = Answers(RuntimeError("exited"))
    with pytest.raises(RuntimeError, match="exited"):
        wait_until(exited, 5, "never", retry_on=(redis.RedisError,))
    assert exited.calls == 1


def test_a_timeout_says_what_was_waited_for() -> None:
    """Never true: TimeoutError after the timeout, naming the condition and the seconds."""
    began = time.monotonic()
    with pytest.raises(TimeoutError, match=r"the cluster did not settle within 0.2s"):
        wait_until(lambda: False, 0.2, "the cluster did not settle", every=0.01)
    assert time.monotonic() - began >= 0.2


def test_an_error_still_raised_at_the_deadline_is_a_timeout() -> None:
    """A predicate that keeps failing with a retried error ends as a TimeoutError too."""

    def down() -> bool:
        raise redis.ConnectionError("down")

    with pytest.raises(TimeoutError, match="redis did not answer within 0.1s"):
        wait_until(down, 0.1, "redis did not answer", every=0.01)
