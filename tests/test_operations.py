"""An operator's rollback and reload act on every worker of the port, over the workers' own
Unix sockets (two workers in one process here; `tests/test_serve_workers.py` runs the real
`fks serve --workers 2`)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from common import Settings
from subscriber import ModelHolder
from subscriber.errors import NoPreviousModel, NotEveryWorker
from subscriber.process.operations import Operations
from subscriber.process.siblings import Siblings
from tests.helpers import write_checkpoint

Workers = Callable[..., list[Operations]]


@pytest.fixture
def workers(settings_for: Callable[..., Settings]) -> Iterator[Workers]:
    """``count`` workers' operations, each on its own holder; only ``running`` listen; the
    one in slot ``i`` has reloaded the files of ``serving[i]`` in turn."""
    made: list[Operations] = []
    directory = Path(tempfile.mkdtemp(prefix="fks-ops-"))  # short: a socket path is <108 bytes

    def make(
        count: int = 2, running: int | None = None, serving: Sequence[Sequence[Path]] = ()
    ) -> list[Operations]:
        for slot in range(count if running is None else running):
            ops = Operations(ModelHolder(settings_for()), f"w{slot}")
            ops.siblings = Siblings(
                directory, slot, count, node_ids=lambda s: f"w{s}", handler=ops.handle
            ).start()
            for path in serving[slot] if slot < len(serving) else ():
                ops.holder.reload(path)
            made.append(ops)
        return made

    yield make
    for ops in made:
        ops.stop()
        ops.holder.lane.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def files(model_root: Path) -> tuple[Path, Path]:
    """Versions 1 and 2 of a checkpoint, in the model root."""
    return write_checkpoint(model_root, 1).path, write_checkpoint(model_root, 2).path


def versions(workers: list[Operations]) -> list[int | None]:
    return [getattr(ops.holder.current(), "version", None) for ops in workers]


def test_a_rollback_rolls_every_worker_back_and_a_second_one_is_refused_everywhere(
    workers: Workers, files: tuple[Path, Path]
) -> None:
    """Both workers roll back before the answer; the next rollback is 409 on any worker."""
    w0, w1 = workers(serving=(files, files))
    done = w0.rollback()
    assert done.model.version == 1 and done.nodes == ["w0", "w1"]
    assert versions([w0, w1]) == [1, 1]
    for ops in (w0, w1):
        with pytest.raises(NoPreviousModel):
            ops.rollback()
    assert versions([w0, w1]) == [1, 1]


def test_workers_that_disagree_are_named_and_none_rolls_back(
    workers: Workers, files: tuple[Path, Path]
) -> None:
    """A worker that keeps another previous model: 409 naming it, nothing rolled back."""
    w0, w1 = workers(serving=(files, files[1:]))  # w1 restarted later: no previous model
    with pytest.raises(NotEveryWorker) as refused:
        w0.rollback()
    assert refused.value.status == 409
    assert "nothing was rolled back" in str(refused.value) and "w1 serves version 2" in str(
        refused.value
    )
    assert versions([w0, w1]) == [2, 2]


def test_a_worker_that_does_not_answer_is_named_and_none_rolls_back(
    workers: Workers, files: tuple[Path, Path]
) -> None:
    """A sibling that is not running: 503 naming it, and this worker keeps its model."""
    (w0,) = workers(count=2, running=1, serving=[files])
    with pytest.raises(NotEveryWorker) as refused:
        w0.rollback()
    assert refused.value.status == 503 and "w1 did not answer" in str(refused.value)
    assert versions([w0]) == [2]


def test_a_sibling_rolls_back_only_from_the_models_it_was_asked_about(
    workers: Workers, files: tuple[Path, Path]
) -> None:
    """On the channel, a rollback names what it rolls back from: another decision taken
    meanwhile is refused (409), a worker already on the target counts as done."""
    (w0,) = workers(count=1, serving=[files])
    current, previous = w0.holder.current(), w0.holder.previous
    assert current is not None and previous is not None
    refused = w0.handle({"op": "rollback", "current": "elsewhere", "previous": "older"})
    assert refused["ok"] is False and refused["status"] == 409
    assert versions([w0]) == [2]
    asked = {"op": "rollback", "current": current.fingerprint, "previous": previous.fingerprint}
    assert w0.handle(asked)["ok"] and versions([w0]) == [1]
    assert w0.handle(asked)["ok"] and versions([w0]) == [1]  # already there: never a toggle


def test_a_reload_puts_every_worker_on_the_same_newest_file(
    workers: Workers, model_root: Path
) -> None:
    """The worker asked reloads the resolved checkpoint, then every sibling that same file."""
    one = write_checkpoint(model_root, 1).path
    w0, w1 = workers(serving=([one], [one]))
    newest = write_checkpoint(model_root, 3).path
    done = w1.reload()
    assert done.nodes == ["w1", "w0"]
    assert [getattr(ops.holder.current(), "path", None) for ops in (w0, w1)] == [newest] * 2
