"""RedisMarks: what a node saw Redis hold of the order, and when that tells of a loss
(pure: the reliability tests drive it with real redis-servers, test_version_order.py)."""

from __future__ import annotations

import pytest

from subscriber.pipeline.marks import RedisMarks, parse_marks


def restored(counter: int = 3, epoch: str = "tok", at: float = 10.0) -> RedisMarks:
    marks = RedisMarks(":epoch", ":version")
    marks.restored(epoch, at, counter)
    return marks


def test_a_token_gone_or_another_is_a_loss_at_the_first_beat() -> None:
    assert restored().beat("", 3, 11.0) == ":epoch is gone"
    assert restored().beat("other", 3, 11.0) == ":epoch is another"


def test_a_counter_below_what_was_seen_is_a_loss_only_on_two_beats_running() -> None:
    """A beat's reply may be older than the catch-up's read: one low read is no loss, a
    read at the counter in between starts the count again."""
    marks = restored(counter=3)
    assert marks.beat("tok", 1, 11.0) == ""
    assert marks.beat("tok", 3, 12.0) == ""
    assert marks.beat("tok", 1, 13.0) == ""
    assert marks.beat("tok", 1, 14.0) == ":version reads 1, below 3"
    marks.acted()
    assert marks.beat("tok", 1, 15.0) == ""  # counted anew once caught up


def test_a_counter_that_grows_is_what_the_node_compares_with_next() -> None:
    marks = restored(counter=3)
    assert marks.beat("tok", 7, 11.0) == ""
    assert marks.counter == 7
    marks.beat("tok", 5, 12.0)
    assert marks.beat("tok", 5, 13.0) == ":version reads 5, below 7"


def test_no_token_yet_is_no_loss_and_a_restore_that_could_not_tell_changes_nothing() -> None:
    marks = RedisMarks(":epoch", ":version")
    assert marks.beat("", 0, 1.0) == ""
    marks.restored("", 2.0, 9)
    assert (marks.epoch, marks.counter, marks.intact_at) == ("", 0, 0.0)


def test_the_marks_are_intact_until_a_beat_reads_otherwise() -> None:
    """``intact_at`` only moves on a beat that reads the token and no drop, never back."""
    marks = restored(at=10.0)
    marks.beat("tok", 3, 12.0)
    assert marks.intact_at == 12.0
    marks.beat("tok", 3, 11.0)  # an older reply answered late
    assert marks.intact_at == 12.0
    marks.beat("tok", 2, 13.0)  # a drop: not intact
    assert marks.intact_at == 12.0


@pytest.mark.parametrize(
    ("epoch", "counter", "loss"),
    [
        ("tok", 3, ""),
        ("tok", 9, ""),
        ("", 3, ":epoch is gone"),
        ("new", 3, ":epoch is another"),
        ("tok", 2, ":version reads 2, below 3 as this node saw it"),
    ],
)
def test_a_catch_up_finds_a_loss_from_one_read(epoch: str, counter: int, loss: str) -> None:
    marks = restored(counter=3)
    assert marks.caught_up(epoch, counter) == (loss, False)
    assert marks.counter == counter


def test_after_a_loss_judgments_since_the_marks_were_last_intact_are_judged_again() -> None:
    """A loss: ``again_since`` is when Redis last held the marks intact; asked to look again
    afterwards, the next catch-up (no loss) judges again since the loss's catch-up."""
    marks = restored(at=10.0)
    marks.beat("tok", 3, 12.0)
    loss, adopt = marks.caught_up("", 0)
    assert loss and not adopt and marks.again_since == 12.0
    read_at = marks.loss_read_at
    marks.restored("tok2", 13.0, 3)  # the session's restore: a new token, the counter back
    marks.look_again()
    assert marks.caught_up("tok2", 3) == ("", True)
    assert marks.again_since == read_at
    assert marks.caught_up("tok2", 3) == ("", False)  # asked once


@pytest.mark.parametrize(
    ("raw_epoch", "raw_counter", "parsed"),
    [
        (b"tok", b"42", ("tok", 42)),
        (None, None, ("", 0)),
        (b"", b"", ("", 0)),
        (b"\xff", b"-1", ("\ufffd", 0)),
        (b"tok", b"4x", ("tok", 0)),
    ],
)
def test_what_redis_answered_is_parsed_without_raising(
    raw_epoch: object, raw_counter: object, parsed: tuple[str, int]
) -> None:
    assert parse_marks(raw_epoch, raw_counter) == parsed
