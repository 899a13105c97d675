"""The ModelHolder: one immutable snapshot served, swapped atomically after verification.

Reading the served model is a single attribute read (:meth:`ModelHolder.current`). Every
change goes through one lock, so concurrent triggers load once (double-checked: a cheap
staleness check before the lock, the real one inside it). A failed ``(path, mtime, sha256)``
is remembered and not tried again until it changes; an explicit :meth:`reload` retries it.
The previous model is kept for an instant :meth:`rollback`; after a rollback, versions up to
the one rolled back from are skipped unless forced, and the mtime fallback does not reload the
file rolled back from, so neither a reconnect's catch-up nor a request undoes it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from common.errors import CheckpointError, CheckpointLoadError
from common.notification import CheckpointNotification
from common.settings import Settings
from common.staleness import Freshness, judge
from subscriber.errors import NoPreviousModel, NothingToLoad
from subscriber.events import Event, EventKind, EventLog
from subscriber.loader import LoadOptions, Prepared, prepare_checkpoint
from subscriber.memory import DeferredTrim
from subscriber.metrics import Metrics
from subscriber.roots import ModelRoots
from subscriber.snapshot import ServedModel

__all__ = ["ModelHolder", "NoPreviousModel", "NothingToLoad", "Outcome"]

log = logging.getLogger(__name__)

FailedKey = tuple[str, int | None, str | None]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one trigger did: ``applied`` with the new model, or why not (``reason``)."""

    applied: bool
    reason: str
    model: ServedModel | None = None
    detail: str = ""


class ModelHolder:
    def __init__(
        self,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        options: LoadOptions | None = None,
        history_size: int = 32,
        events_size: int = 256,
        failed_memory: int = 64,
    ) -> None:
        self.roots = ModelRoots(settings)
        self.metrics = metrics or Metrics()
        self.options = options or LoadOptions(
            state_dim=settings.state_dim, jit=settings.jit, backend=settings.compile_backend
        )
        self.events = EventLog(events_size)
        self._history: deque[dict[str, object]] = deque(maxlen=history_size)
        self._current: ServedModel | None = None
        self._previous: ServedModel | None = None
        self._generation = 0
        self._skip_through = 0
        self._rolled_back_from: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._failed: OrderedDict[FailedKey, str] = OrderedDict()
        self._failed_memory = failed_memory
        self._swap_callbacks: list[Callable[[ServedModel], None]] = []
        self.trim = DeferredTrim()

    # -- reading ---------------------------------------------------------------------------

    def current(self) -> ServedModel | None:
        """The served snapshot (one reference read; never a half-swapped state)."""
        return self._current

    @property
    def previous(self) -> ServedModel | None:
        return self._previous

    def history(self) -> list[dict[str, object]]:
        """Summaries of the generations served, newest first (bounded)."""
        return list(self._history)

    # -- triggers --------------------------------------------------------------------------

    def apply(
        self,
        notification: CheckpointNotification,
        *,
        source: str = "redis",
        received_at: float | None = None,
    ) -> Outcome:
        """Apply a notification if it is newer than what is served (SPEC §2) and verifies."""
        n = notification
        try:
            real = self.roots.confine(n.model_path)
        except CheckpointError as exc:
            return self._refused(exc, source, n.model_path, n.version, None, n.sha256)
        mtime = _mtime_ns(real)
        verdict = self._judge(real, n.version, n.force, mtime)
        if not verdict.apply:
            return self._stale(verdict, source, real, n.version)
        key: FailedKey = (str(real), mtime, n.sha256)
        if key in self._failed:
            return self._stale_known_bad(key, source, n.version)
        with self._lock:
            verdict = self._judge(real, n.version, n.force, mtime)
            if not verdict.apply:
                return self._stale(verdict, source, real, n.version)
            return self._load_and_swap(
                real,
                source=source,
                version=n.version,
                expected_sha256=n.sha256,
                key=key,
                received_at=received_at,
            )

    def load_file(self, path: Path, *, source: str, blocking: bool = True) -> Outcome | None:
        """Load ``path`` (found on disk, unversioned) if it differs from what is served.

        Returns None when ``blocking`` is false and another load holds the lock.
        """
        try:
            real = self.roots.confine(path)
        except CheckpointError as exc:
            return self._refused(exc, source, str(path), 0, None, None)
        mtime = _mtime_ns(real)
        key: FailedKey = (str(real), mtime, None)
        if key in self._failed:
            return Outcome(False, "known_bad", self._current)
        if mtime is not None and (str(real), mtime) in self._rolled_back_from:
            return Outcome(False, "rolled_back", self._current)
        if not self._lock.acquire(blocking=blocking):
            return None
        try:
            served = self._current
            if served is not None and served.identity.path == str(real):
                if served.mtime_ns == mtime:
                    return Outcome(False, str(Freshness.SAME_FILE), served)
            return self._load_and_swap(real, source=source, version=0, key=key)
        finally:
            self._lock.release()

    def reload(self, path: Path | None = None) -> ServedModel:
        """Hard reload of ``path`` or the tier-resolved checkpoint, mtime and memory ignored.

        Raises NothingToLoad, or CheckpointError if it fails (the old model stays served).
        """
        target = path or self.roots.resolve().path
        if target is None:
            raise NothingToLoad("no checkpoint found in the model roots")
        with self._lock:
            real = self.roots.confine(target)
            mtime = _mtime_ns(real)
            key: FailedKey = (str(real), mtime, None)
            self._failed.pop(key, None)
            outcome = self._load_and_swap(real, source="reload", version=0, key=key, raise_=True)
        assert outcome.model is not None
        return outcome.model

    def rollback(self) -> ServedModel:
        """Swap the previous model back in (as a new generation). Raises NoPreviousModel."""
        with self._lock:
            previous, current = self._previous, self._current
            if previous is None or current is None:
                raise NoPreviousModel("no previous model is kept")
            self._generation += 1
            restored = replace(
                previous,
                generation=self._generation,
                source="rollback",
                loaded_at=datetime.now(UTC),
            )
            self._skip_through = max(self._skip_through, current.version)
            self._rolled_back_from.add((str(current.path), current.mtime_ns))
            self._install(restored, previous=current)
            self.events.add(
                Event(
                    EventKind.ROLLBACK,
                    "rollback",
                    "rollback",
                    str(restored.path),
                    restored.version,
                    restored.generation,
                    f"from generation {current.generation} (version {current.version})",
                )
            )
            log.warning(
                "rolled back to %s version %d (generation %d); versions <= %d now need force",
                restored.path,
                restored.version,
                restored.generation,
                self._skip_through,
            )
            return restored

    def on_swap(self, callback: Callable[[ServedModel], None]) -> None:
        """Call ``callback(model)`` after every swap, on the thread that swapped.

        It runs under the holder's lock: keep it short, and never call back into the holder.
        Its exceptions are logged and swallowed.
        """
        self._swap_callbacks.append(callback)

    def record_rejection(self, reason: str, detail: str, source: str) -> None:
        """Count and log a notification refused before it reached the holder (bad message)."""
        self.metrics.rejections.labels(reason).inc()
        self.events.add(Event(EventKind.REJECTED, reason, source, detail=detail[:500]))

    # -- internals -------------------------------------------------------------------------

    def _judge(self, real: Path, version: int, force: bool, mtime: int | None) -> Freshness:
        current = self._current
        verdict = judge(
            current.identity if current else None,
            path=str(real),
            version=version,
            force=force,
            mtime_ns=mtime,
        )
        if verdict is Freshness.NEWER_VERSION and version <= self._skip_through:
            return Freshness.STALE_VERSION
        return verdict

    def _load_and_swap(
        self,
        real: Path,
        *,
        source: str,
        version: int,
        key: FailedKey,
        expected_sha256: str | None = None,
        received_at: float | None = None,
        raise_: bool = False,
    ) -> Outcome:
        elapsed = self.metrics.timer()
        try:
            prepared = prepare_checkpoint(
                real, self.roots, self.options, expected_sha256=expected_sha256
            )
        except CheckpointError as exc:
            self._remember_failure(key, exc.reason)
            outcome = self._refused(exc, source, str(real), version, key[1], expected_sha256)
            if raise_:
                raise
            return outcome
        self.metrics.load_seconds.observe(elapsed())
        model = self._snapshot(prepared, source, version)
        self._install(model, previous=self._current)
        self.metrics.swaps.labels(source).inc()
        if received_at is not None:
            self.metrics.notify_to_swap.observe(max(0.0, time.monotonic() - received_at))
        self.events.add(
            Event(EventKind.SWAP, "swapped", source, str(real), model.version, model.generation)
        )
        log.info(
            "serving %s version %d as generation %d (source %s, %.1f ms, %s)",
            real,
            model.version,
            model.generation,
            source,
            elapsed() * 1e3,
            model.runner.backend,
        )
        return Outcome(True, "swapped", model)

    def _snapshot(self, prepared: Prepared, source: str, version: int) -> ServedModel:
        loaded = prepared.loaded
        self._generation += 1
        return ServedModel(
            policy=prepared.policy,
            runner=prepared.runner,
            path=loaded.path,
            mtime_ns=loaded.mtime_ns,
            version=version if version > 0 else loaded.version,
            generation=self._generation,
            sha256=loaded.sha256,
            loaded_at=datetime.now(UTC),
            source=source,
            model_name=loaded.model_name,
            training_step=loaded.training_step,
            saved_at=loaded.saved_at,
            metadata=loaded.metadata,
        )

    def _install(self, model: ServedModel, *, previous: ServedModel | None) -> None:
        self._previous = previous
        self._current = model  # the swap: one reference assignment
        self._history.appendleft(model.summary())
        saved = model.saved_at.timestamp() if model.saved_at else model.mtime_ns / 1e9
        self.metrics.served(model.generation, model.version, saved)
        for callback in self._swap_callbacks:
            try:
                callback(model)
            except Exception:  # noqa: BLE001 - an observer must not break a swap
                log.exception("swap callback %r failed", callback)
        del previous  # the model before it is now unreferenced (unless a request holds it)
        self.trim.after_swap()

    def _remember_failure(self, key: FailedKey, reason: str) -> None:
        self._failed[key] = reason
        self._failed.move_to_end(key)
        while len(self._failed) > self._failed_memory:
            self._failed.popitem(last=False)

    def _refused(
        self,
        exc: CheckpointError,
        source: str,
        path: str,
        version: int,
        mtime: int | None,
        sha256: str | None,
    ) -> Outcome:
        kind = EventKind.LOAD_FAILED if isinstance(exc, CheckpointLoadError) else EventKind.REJECTED
        self.metrics.rejections.labels(exc.reason).inc()
        self.events.add(Event(kind, exc.reason, source, path, version, detail=str(exc)[:500]))
        log.warning("not serving %s (%s): %s; the served model stays", path, exc.reason, exc)
        return Outcome(False, exc.reason, self._current, str(exc))

    def _stale(self, verdict: Freshness, source: str, real: Path, version: int) -> Outcome:
        self.metrics.stale_skips.labels(str(verdict)).inc()
        self.events.add(Event(EventKind.STALE, str(verdict), source, str(real), version))
        log.debug("skipped %s version %d: %s", real, version, verdict)
        return Outcome(False, str(verdict), self._current)

    def _stale_known_bad(self, key: FailedKey, source: str, version: int) -> Outcome:
        self.metrics.stale_skips.labels("known_bad").inc()
        why = self._failed.get(key, "?")
        self.events.add(Event(EventKind.STALE, "known_bad", source, key[0], version, detail=why))
        return Outcome(False, "known_bad", self._current, why)


def _mtime_ns(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
