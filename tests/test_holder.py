"""ModelHolder: verify before swap, staleness, failure memory, rollback, atomic reads."""

from __future__ import annotations

import os
import pathlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from common import CheckpointLoadError, CheckpointNotification, Settings
from common.checkpoint import build_policy, load_checkpoint, save_checkpoint
from common.policy import PolicyConfig, SACActor
from subscriber import ModelHolder
from subscriber.model.holder import NoPreviousModel, NothingToLoad, Outcome
from subscriber.model.snapshot import ServedModel
from subscriber.pipeline.decider import Decider
from tests.helpers import Call, wait_for, write_checkpoint


def note(path: Path | str, version: int = 0, **kw: object) -> CheckpointNotification:
    return CheckpointNotification(model_path=str(path), version=version, **kw)  # type: ignore[arg-type]


@pytest.fixture
def holder(settings_for: Callable[..., Settings]) -> ModelHolder:
    return ModelHolder(settings_for())


def apply(holder: ModelHolder, notification: CheckpointNotification) -> Outcome:
    """Judge, load and swap one notification now, as the applier does for a batch of one."""
    return Decider(holder).apply(notification)


def sample(holder: ModelHolder, name: str, **labels: str) -> float:
    """A series of the holder's model (every one carries model="<instance>")."""
    labels = {"model": holder.metrics.model, **labels}
    return holder.metrics.registry.get_sample_value(name, labels) or 0.0


def rejections(holder: ModelHolder, reason: str) -> float:
    return sample(holder, "fks_rejections_total", reason=reason)


def test_every_load_is_timed(holder: ModelHolder, model_root: Path) -> None:
    """fks_load_seconds counts each verify+load+build, failed ones excluded."""
    apply(holder, note(write_checkpoint(model_root, 1).path, 1))
    apply(holder, note(write_checkpoint(model_root, 2).path, 2))
    assert sample(holder, "fks_load_seconds_count") == 2.0


def test_a_newer_version_is_swapped_in_with_a_new_generation(
    holder: ModelHolder, model_root: Path
) -> None:
    """v1 then v2: generation 1 then 2, and the snapshot describes the file."""
    one = write_checkpoint(model_root, 1)
    assert apply(holder, note(one.path, 1)).applied
    two = write_checkpoint(model_root, 2)
    outcome = apply(holder, note(two.path, 2))
    model = holder.current()
    assert outcome.applied and model is outcome.model and model is not None
    assert (model.version, model.generation, model.sha256) == (2, 2, two.sha256)
    assert model.path == two.path and holder.previous is not None


@pytest.mark.parametrize("version", [1, 2])
def test_stale_and_duplicate_versions_are_skipped_and_counted(
    holder: ModelHolder, model_root: Path, version: int
) -> None:
    """With v2 served, v2 again and v1 are skipped; the served model does not change."""
    apply(holder, note(write_checkpoint(model_root, 2).path, 2))
    before = holder.current()
    outcome = apply(holder, note(write_checkpoint(model_root, version).path, version))
    assert not outcome.applied and outcome.reason == "stale_version"
    assert holder.current() is before
    assert sample(holder, "fks_stale_skips_total", reason="stale_version") == 1.0


def test_force_applies_an_older_version(holder: ModelHolder, model_root: Path) -> None:
    """force: true rolls back to an older checkpoint (operator override)."""
    old = write_checkpoint(model_root, 1)
    apply(holder, note(write_checkpoint(model_root, 5).path, 5))
    outcome = apply(holder, note(old.path, 1, force=True))
    assert outcome.applied and holder.current() is not None and holder.current().version == 1  # type: ignore[union-attr]


def test_unversioned_notifications_compare_by_path_and_mtime(
    holder: ModelHolder, model_root: Path
) -> None:
    """Same file, same mtime: skipped. Rewritten file: applied."""
    saved = write_checkpoint(model_root, 0, name="model_latest.pt", seed=1)
    assert apply(holder, note(saved.path)).applied
    assert apply(holder, note(saved.path)).reason == "same_file"
    write_checkpoint(model_root, 0, name="model_latest.pt", seed=2)
    os.utime(saved.path, ns=(saved.path.stat().st_mtime_ns + 10**9,) * 2)
    assert apply(holder, note(saved.path)).applied


def test_relative_paths_are_found_in_the_model_roots(holder: ModelHolder, model_root: Path) -> None:
    """{"model_path": "model_3.pt"} means that file in a model root."""
    write_checkpoint(model_root, 3)
    assert apply(holder, note("model_3.pt", 3)).applied


class TestBadCheckpointsKeepTheServedModel:
    """Every bad file is refused with a reason and counted; the served model stays."""

    @pytest.fixture
    def served(self, holder: ModelHolder, model_root: Path) -> ModelHolder:
        apply(holder, note(write_checkpoint(model_root, 1).path, 1))
        return holder

    def assert_refused(self, holder: ModelHolder, path: Path | str, reason: str) -> None:
        before = holder.current()
        outcome = apply(holder, note(path, 99))
        assert not outcome.applied and outcome.reason == reason, outcome
        assert holder.current() is before
        assert rejections(holder, reason) >= 1
        assert holder.events.recent(1)[0].reason == reason

    def test_truncated(self, served: ModelHolder, model_root: Path) -> None:
        data = write_checkpoint(model_root, 2).path.read_bytes()
        (model_root / "model_cut.pt").write_bytes(data[: len(data) // 3])
        self.assert_refused(served, model_root / "model_cut.pt", "truncated")

    def test_nan(self, served: ModelHolder, model_root: Path) -> None:
        actor = SACActor()
        with torch.no_grad():
            actor.mean.weight.fill_(float("nan"))
        save_checkpoint(model_root / "model_nan.pt", actor)
        self.assert_refused(served, model_root / "model_nan.pt", "non_finite")

    def test_wrong_state_size(self, served: ModelHolder, model_root: Path) -> None:
        write_checkpoint(model_root, 2, config=PolicyConfig(state_dim=10))
        self.assert_refused(served, model_root / "model_2.pt", "state_dim_mismatch")

    def test_huge_weights_fail_the_probe(self, served: ModelHolder, model_root: Path) -> None:
        actor = SACActor()
        with torch.no_grad():
            for p in actor.parameters():
                p.fill_(3e38)
        save_checkpoint(model_root / "model_big.pt", actor)
        self.assert_refused(served, model_root / "model_big.pt", "non_finite")

    def test_malicious_pickle(self, served: ModelHolder, model_root: Path) -> None:
        marker = model_root / "PWNED"
        torch.save({"state_dict": Call(pathlib.Path.touch, marker)}, model_root / "model_evil.pt")
        self.assert_refused(served, model_root / "model_evil.pt", "unsafe_pickle")
        assert not marker.exists()

    def test_path_outside_the_roots(self, served: ModelHolder, tmp_path: Path) -> None:
        outside = write_checkpoint(tmp_path, 2).path
        self.assert_refused(served, outside, "outside_roots")

    def test_dot_dot_escape(self, served: ModelHolder, model_root: Path, tmp_path: Path) -> None:
        write_checkpoint(tmp_path, 2)
        self.assert_refused(served, model_root / ".." / "model_2.pt", "outside_roots")

    def test_symlink_escape(self, served: ModelHolder, model_root: Path, tmp_path: Path) -> None:
        target = write_checkpoint(tmp_path, 2).path
        (model_root / "model_link.pt").symlink_to(target)
        self.assert_refused(served, model_root / "model_link.pt", "outside_roots")

    @pytest.mark.parametrize("through_proc", [False, True], ids=["outside", "proc-root"])
    def test_a_directory_swapped_for_a_symlink_after_locating(
        self,
        served: ModelHolder,
        model_root: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        through_proc: bool,
    ) -> None:
        """A path is confined once, when located; a directory on it that becomes a symlink
        out of the roots before the load is still refused: the load walks from the root
        through real directories only. Also through ``/proc/<pid>/root``, the kind of link
        by which another mount namespace's files are named as if they lay inside (a review
        served such a file, 2026-12-08)."""
        write_checkpoint(model_root / "sub", 2)
        write_checkpoint(tmp_path / "elsewhere", 2, seed=666)
        elsewhere = tmp_path / "elsewhere"
        link = Path(f"/proc/self/root{os.path.realpath(elsewhere)}") if through_proc else elsewhere
        locate = served.locate

        def locate_then_swap(candidate: Any) -> Any:
            located = locate(candidate)
            (model_root / "sub").rename(model_root / "old")
            (model_root / "sub").symlink_to(link, target_is_directory=True)
            return located

        monkeypatch.setattr(served, "locate", locate_then_swap)
        self.assert_refused(served, model_root / "sub" / "model_2.pt", "outside_roots")

    def test_a_symlink_into_a_directory_the_kernel_cannot_name_after_locating(
        self,
        served: ModelHolder,
        model_root: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """As above, with a symlink whose target walks through a directory outside whose
        real path is over PATH_MAX, then ``..`` back to a mirror of the root there: the
        kernel would open the file outside, ``/proc/self/fd`` cannot name it, and resolving
        the path as a string (Python's ``realpath``, which cannot ``lstat`` that deep and
        takes the ``..`` textually) says "inside" (a review served the outside file through
        a check of that kind, 2026-12-08). Refused: the symlink is not followed."""
        write_checkpoint(model_root / "sub", 2)
        target, evil_sha256 = _beyond_path_max(model_root, tmp_path / "o")
        locate = served.locate

        def locate_then_swap(candidate: Any) -> Any:
            located = locate(candidate)
            (model_root / "sub").rename(model_root / "old")
            os.symlink(target, model_root / "sub")
            return located

        monkeypatch.setattr(served, "locate", locate_then_swap)
        self.assert_refused(served, model_root / "sub" / "model_2.pt", "outside_roots")
        assert served.current().sha256 != evil_sha256  # type: ignore[union-attr]

    def test_a_path_that_cannot_be_resolved(
        self, served: ModelHolder, model_root: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``realpath`` raising (EINVAL, seen while a review swapped directories under a
        running node) refuses that message as ``unreadable``; before, the OSError ended the
        whole batch unjudged, with no ack for any of its messages."""

        def failing(path: Any, **kwargs: Any) -> str:
            raise OSError(22, "Invalid argument")

        monkeypatch.setattr("subscriber.fetching.roots.os.path.realpath", failing)
        self.assert_refused(served, model_root / "model_2.pt", "unreadable")

    def test_missing_file(self, served: ModelHolder, model_root: Path) -> None:
        self.assert_refused(served, model_root / "model_404.pt", "missing")

    def test_sha256_mismatch(self, served: ModelHolder, model_root: Path) -> None:
        saved = write_checkpoint(model_root, 2)
        before = served.current()
        outcome = apply(served, note(saved.path, 2, sha256="0" * 64))
        assert outcome.reason == "sha256_mismatch" and served.current() is before


def test_a_failed_file_is_not_retried_until_it_changes(
    holder: ModelHolder, model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same bad (path, mtime, sha256) is loaded once; a rewritten file is tried again."""
    bad = model_root / "model_2.pt"
    bad.write_bytes(b"this is not a checkpoint\n" * 10)
    loads: list[object] = []
    import subscriber.model.loader as loader
    from common.checkpoint import LoadedCheckpoint, load_checkpoint

    def counting_load(path: Path, **kwargs: Any) -> LoadedCheckpoint:
        loads.append(path)
        return load_checkpoint(path, **kwargs)

    monkeypatch.setattr(loader, "load_checkpoint", counting_load)
    assert apply(holder, note(bad, 2)).reason == "corrupt"
    assert apply(holder, note(bad, 2)).reason == "known_bad"
    assert len(loads) == 1
    write_checkpoint(model_root, 2)
    os.utime(bad, ns=(bad.stat().st_mtime_ns + 10**9,) * 2)
    assert apply(holder, note(bad, 2)).applied and len(loads) == 2


def test_concurrent_triggers_load_once(holder: ModelHolder, model_root: Path) -> None:
    """16 threads announcing the same version cause one swap; the others are skipped."""
    saved = write_checkpoint(model_root, 1)
    barrier = threading.Barrier(16)
    outcomes = []

    def trigger() -> None:
        barrier.wait()
        outcomes.append(apply(holder, note(saved.path, 1)))

    threads = [threading.Thread(target=trigger) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(o.applied for o in outcomes) == 1
    assert holder.current() is not None and holder.current().generation == 1  # type: ignore[union-attr]


def test_readers_never_see_a_half_swapped_state(holder: ModelHolder, model_root: Path) -> None:
    """Threads hammering current() during 40 swaps always see a self-consistent snapshot."""
    files = {v: write_checkpoint(model_root, v) for v in range(1, 41)}
    apply(holder, note(files[1].path, 1))
    stop = threading.Event()
    problems: list[str] = []
    state = torch.randn(1, 28).numpy()
    expected = {v: _eager_action(saved.path, state) for v, saved in files.items()}

    def reader() -> None:
        while not stop.is_set():
            m = holder.current()
            assert m is not None
            if files[m.version].sha256 != m.sha256 or m.path != files[m.version].path:
                problems.append(f"v{m.version} with {m.path}")
            if abs(float(m.runner(state)[0, 0]) - expected[m.version]) > 1e-6:
                problems.append(f"runner of v{m.version} disagrees with its file's policy")
            time.sleep(0)  # hand the GIL over: four spinning readers starved the swaps

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    for v in range(2, 41):
        assert apply(holder, note(files[v].path, v)).applied
    stop.set()
    for t in readers:
        t.join()
    assert problems == []
    assert holder.current() is not None and holder.current().version == 40  # type: ignore[union-attr]


def _eager_action(path: Path, state: Any) -> float:
    """The action torch's own SACActor, built from the file, gives for ``state``."""
    policy = build_policy(load_checkpoint(path))
    with torch.inference_mode():
        return float(policy.act(torch.from_numpy(state))[0, 0])


def test_rollback_swaps_the_previous_model_back_and_holds_it(
    holder: ModelHolder, model_root: Path
) -> None:
    """Rollback restores v1 as a new generation; catching up on v2 again is skipped."""
    with pytest.raises(NoPreviousModel):
        holder.rollback()
    apply(holder, note(write_checkpoint(model_root, 1).path, 1))
    v2 = write_checkpoint(model_root, 2)
    apply(holder, note(v2.path, 2))
    restored = holder.rollback()
    assert (restored.version, restored.generation) == (1, 3)
    assert apply(holder, note(v2.path, 2)).reason == "stale_version"
    assert apply(holder, note(write_checkpoint(model_root, 3).path, 3)).applied


def test_history_is_bounded_newest_first(
    settings_for: Callable[..., Settings], model_root: Path
) -> None:
    """After 40 swaps the history holds the 32 newest generations."""
    holder = ModelHolder(settings_for(), history_size=32)
    for v in range(1, 41):
        apply(holder, note(write_checkpoint(model_root, v).path, v))
    generations = [h["generation"] for h in holder.history()]
    assert generations == list(range(40, 8, -1))


def test_hard_reload_ignores_mtime_and_failure_memory(
    holder: ModelHolder, model_root: Path
) -> None:
    """reload() loads the resolved file again, even unchanged; NothingToLoad without one."""
    with pytest.raises(NothingToLoad):
        holder.reload()
    write_checkpoint(model_root, 1)
    first = holder.reload()
    second = holder.reload()
    assert second.generation == first.generation + 1 and second.path == first.path
    (model_root / "model_9.pt").write_bytes(b"junk")
    os.utime(model_root / "model_9.pt", ns=(second.mtime_ns + 10**9,) * 2)
    with pytest.raises(CheckpointLoadError):
        holder.reload()
    assert holder.current() is second


def test_swap_callbacks_see_every_swap_and_cannot_break_one(
    holder: ModelHolder, model_root: Path
) -> None:
    """on_swap observers get each new model; one that raises is logged, the swap stands."""
    seen: list[int] = []
    holder.on_swap(lambda m: seen.append(m.version))

    def broken(model: ServedModel) -> None:
        raise RuntimeError(f"an observer bug at generation {model.generation}")

    holder.on_swap(broken)
    for v in (1, 2):
        assert apply(holder, note(write_checkpoint(model_root, v).path, v)).applied
    assert seen == [1, 2] and holder.current().version == 2  # type: ignore[union-attr]


def test_freed_memory_release_is_safe_to_call() -> None:
    """malloc_trim is called where glibc has it and is a no-op elsewhere."""
    from subscriber.runtime.memory import release_free_memory

    assert release_free_memory() in {True, False}


def test_swaps_share_one_deferred_trim(holder: ModelHolder, model_root: Path) -> None:
    """Freed memory is returned once, off the swap path, for all the swaps of a second."""
    from subscriber.runtime.memory import DeferredTrim

    calls: list[float] = []

    def trim() -> bool:
        calls.append(time.monotonic())
        return True

    holder.trim = DeferredTrim(delay=0.2, trim=trim)
    start = time.monotonic()
    for v in (1, 2, 3):
        assert apply(holder, note(write_checkpoint(model_root, v).path, v)).applied
    assert holder.trim.pending and calls == []
    wait_for(lambda: len(calls) == 1, timeout=5)
    assert calls[0] - start >= 0.2
    time.sleep(0.3)
    assert len(calls) == 1 and not holder.trim.pending
    assert apply(holder, note(write_checkpoint(model_root, 4).path, 4)).applied
    wait_for(lambda: len(calls) == 2, timeout=5)


def test_a_cancelled_trim_never_runs() -> None:
    """Shutdown drops a scheduled trim."""
    from subscriber.runtime.memory import DeferredTrim

    calls: list[int] = []

    def count() -> bool:
        calls.append(1)
        return True

    trim = DeferredTrim(delay=0.1, trim=count)
    trim.after_swap()
    trim.cancel()
    time.sleep(0.3)
    assert calls == [] and not trim.pending


def _beyond_path_max(root: Path, outside: Path) -> tuple[str, str]:
    """A symlink target that leads the kernel to ``X/<root>/model_2.pt``, where ``X`` is a
    directory outside whose real path is over PATH_MAX, while Python's ``realpath`` of it
    reads ``<root>/model_2.pt`` (the layout of the review's proof): the target and the sha256
    of the outside checkpoint."""
    outside.mkdir()
    deep, wide = "a" * 200, "b" * 200

    def descend(fd: int, name: str) -> int:
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        return child

    fd = os.open(outside, os.O_RDONLY)
    for name in [deep] * 19 + [wide] * 2:
        fd = descend(fd, name)
    x = fd  # outside/a^19/b/b: over 4,096 bytes
    os.symlink("/".join([deep] * 19), outside / "L1")
    ups = len(outside.parts) - 1 + 19 + 2 + 1  # Python pops C and all up to "/"
    fd = os.dup(x)
    for _ in range(ups):
        fd = descend(fd, "c")  # the kernel goes as deep, so its ".." land back on X
    os.close(fd)
    os.symlink("/".join(["c"] * ups), "C", dir_fd=x)
    fd = os.dup(x)
    for part in root.parts[1:]:
        fd = descend(fd, part)
    evil = write_checkpoint(outside / "evil", 2, seed=666)
    os.rename(evil.path, "model_2.pt", dst_dir_fd=fd)
    os.close(fd)
    os.close(x)
    return f"{outside}/L1/{wide}/{wide}/C/" + "../" * ups + str(root)[1:], evil.sha256
