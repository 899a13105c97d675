"""The ModelHolder: one immutable snapshot served, swapped atomically after verification.

Reading the served model is a single attribute read (:meth:`ModelHolder.current`). The swap
lock guards only in-memory state (judging, installing, rolling back): it is held for
microseconds and never across a load. Loads run on the :class:`~subscriber.runtime.lane.LoadLane`
with a time budget, and every failure is remembered by the file's identity
(``subscriber/model/failures.py``), so no path serves a file that failed once.

Installing re-judges the candidate if another decision landed during its load (a rollback, a
notification, a reload): a load that took long never undoes a newer decision. A rollback
swaps the previous model back in at once; afterwards the versions known at that moment (the
one rolled back from, and any still in flight) need ``force``, files older than the rollback
are not newer than it, and no previous model is kept: a second rollback is refused (409),
never a toggle back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.checkpoint import CheckpointLimits
from common.checkpoint.file import file_identity
from common.errors import CheckpointError, CheckpointLoadError
from common.remote import RemoteRef, parse_model_path, protocol_installed
from common.settings import Settings
from common.staleness import Freshness, ServedIdentity
from common.textsafe import printable
from subscriber.errors import ModelChanged, NoPreviousModel, NothingToLoad
from subscriber.fetching.deadline import Deadline
from subscriber.fetching.fetch import Fetched, FetchOptions, fetch
from subscriber.fetching.roots import ModelRoots
from subscriber.model.events import Event, EventKind, EventLog
from subscriber.model.failures import FailureMemory, fetch_key
from subscriber.model.loader import LoadOptions, Prepared, prepare_checkpoint, prepare_confined
from subscriber.model.plan import Candidate, Located, judge_located
from subscriber.model.snapshot import ServedModel
from subscriber.runtime.lane import LoadLane
from subscriber.runtime.memory import DeferredTrim
from subscriber.runtime.metrics import Metrics
from subscriber.runtime.threads import inherit_torch_threads

__all__ = ["ModelHolder", "NoPreviousModel", "NothingToLoad", "Outcome", "no_previous_model"]

log = logging.getLogger(__name__)


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
        failed_memory: int = 256,
    ) -> None:
        self.roots = ModelRoots(settings)
        self.url_prefixes = settings.url_prefixes()
        for prefix in self.url_prefixes:  # import s3fs & co now, not on a first notification
            if "://" in prefix:
                protocol_installed(prefix.split("://", 1)[0])
        self.fetch_options = FetchOptions.from_settings(settings)
        self.metrics = metrics or Metrics(model=settings.instance_id)
        # what it logs; on a node of several instances, each line names its instance
        self.log: logging.Logger | logging.LoggerAdapter[logging.Logger] = log
        self.options = options or LoadOptions(
            state_dim=settings.state_dim,
            jit=settings.jit,
            backend=settings.compile_backend,
            limits=CheckpointLimits.from_settings(settings),
        )
        self.lane = LoadLane(settings.load_timeout_seconds, thread_init=inherit_torch_threads)
        self.failures = FailureMemory(failed_memory)
        self.events = EventLog(events_size)
        self._history: deque[dict[str, object]] = deque(maxlen=history_size)
        self._current: ServedModel | None = None
        self._previous: ServedModel | None = None
        self._generation = 0
        self._skip_through = 0
        self._rolled_back_at = 0.0  # monotonic: messages received before it need force
        self._highest_version = 0
        self._applied_version = 0  # the highest version of a decision this node applied
        self._lock = threading.Lock()
        self._swapped = threading.Condition(self._lock)
        self._swap_callbacks: list[Callable[[ServedModel], None]] = []
        self.trim = DeferredTrim()

    # -- reading ---------------------------------------------------------------------------

    def current(self) -> ServedModel | None:
        """The served snapshot (one reference read; never a half-swapped state)."""
        return self._current

    @property
    def previous(self) -> ServedModel | None:
        return self._previous

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def skip_through(self) -> int:
        """Versions up to this one need ``force`` (set by a rollback)."""
        return self._skip_through

    @property
    def rolled_back_at(self) -> float:
        """When the last rollback happened (monotonic; 0.0: never)."""
        return self._rolled_back_at

    @property
    def highest_version(self) -> int:
        """The highest version of a decision this node applied, or that Redis' ``:version``
        counter said was issued. A message refused (or not yet judged) adds nothing: only an
        applied decision moves the order (issue 24, c1)."""
        return self._highest_version

    @property
    def applied_version(self) -> int:
        """The highest version of a decision this node applied: what it tells Redis it knows
        (``:version`` is raised to it on reconnect) and what tells it that Redis lost its
        data; never a number only Redis' (unsigned) counter claimed."""
        return self._applied_version

    def note_version(self, version: int) -> None:
        """Remember that ``version`` was issued (the listener: the ``:version`` counter)."""
        if version > self._highest_version:
            with self._lock:
                self._highest_version = max(self._highest_version, version)

    def identity(self) -> ServedIdentity | None:
        current = self._current
        return current.identity if current else None

    def history(self) -> list[dict[str, object]]:
        """Summaries of the generations served, newest first (bounded)."""
        return list(self._history)

    def wait_for_model(self, timeout: float) -> ServedModel | None:
        """The served model, waiting up to ``timeout`` for a first one."""
        with self._swapped:
            self._swapped.wait_for(lambda: self._current is not None, timeout)
            return self._current

    # -- loading ---------------------------------------------------------------------------

    def locate(self, candidate: Candidate) -> Located:
        """Confine ``candidate``'s path to the model roots and stat it (file system I/O:
        call it on the lane); a URL is only parsed and checked (``common/remote.py``): it is
        fetched by :meth:`prepare`."""
        try:
            target = parse_model_path(
                candidate.path, sha256=candidate.sha256, allowed=self.url_prefixes
            )
            if isinstance(target, RemoteRef):
                return Located(candidate, None, None, remote=target)
            real = self.roots.confine(target)
        except CheckpointError as exc:
            return Located(candidate, None, None, exc)
        try:
            return Located(candidate, real, file_identity(real))
        except CheckpointError as exc:
            return Located(candidate, real, None, exc)

    def known_bad(self, located: Located) -> str | None:
        if (ref := located.remote) is not None:
            return self.failures.known(located.identity, fetch_key(ref), ref.sha256)
        path = str(located.real) if located.real is not None else located.candidate.path
        return self.failures.known(located.identity, path)

    def prepare(self, located: Located, *, generation_seen: int | None = None) -> Prepared:
        """Load and verify on the lane (a remote checkpoint is fetched first, on the lane too,
        within ``FKS_FETCH_TIMEOUT_SECONDS`` more); a failure is remembered by the file's
        identity (a remote one by its sha256 or URL) and re-raised. With ``generation_seen``,
        a candidate that a decision taken meanwhile made stale is not loaded at all
        (CheckpointLoadError, reason ``superseded``)."""
        real, remote = located.real, located.remote
        if real is None and remote is None:
            raise located.error or CheckpointLoadError("no path to load", reason="missing")
        c = located.candidate
        fetched: list[Fetched] = []
        deadline = Deadline(self.fetch_options.timeout)  # the lane cuts it if it gives up

        def load() -> Prepared:
            current = self._current
            if generation_seen is not None and current is not None:
                if current.generation != generation_seen:
                    verdict = judge_located(
                        current.identity,
                        located,
                        self._skip_through,
                        rolled_back_at=self._rolled_back_at,
                    )
                    if not verdict.apply:
                        raise CheckpointLoadError(
                            f"{located.key}: {verdict} after a decision taken meanwhile",
                            reason="superseded",
                        )
            if remote is None:
                assert real is not None  # confined by locate: not resolved again
                return prepare_confined(real, self.roots, self.options, expected_sha256=c.sha256)
            got = fetch(
                remote,
                self.fetch_options,
                expected_size=located.identity.size if located.identity else None,
                on_bytes=self.metrics.fetch_bytes.inc,
                protect=[m.path for m in (self._current, self._previous) if m is not None],
                deadline=deadline,
            )
            fetched.append(got)
            if not got.cached:
                self.metrics.fetch_seconds.observe(got.seconds)
            if deadline.cancelled:  # abandoned by the lane: load nothing
                raise CheckpointLoadError(f"{located.key}: abandoned", reason="timeout")
            return prepare_checkpoint(
                got.path, self.roots, self.options, expected_sha256=got.sha256
            )

        elapsed = self.metrics.timer()
        budget = self.lane.timeout + (self.fetch_options.timeout if remote is not None else 0.0)
        try:
            what = f"loading {printable(located.key)}"
            prepared = self.lane.run(load, what=what, timeout=budget, on_abandon=deadline.cut)
        except CheckpointError as exc:
            if remote is not None:
                fetched_sha256 = fetched[0].sha256 if fetched else None
                self.failures.remember_remote(located.identity, remote, fetched_sha256, exc.reason)
            else:
                identity = getattr(exc, "identity", None) or located.identity
                self.failures.remember(identity, str(real), exc.reason)
            raise
        self.metrics.load_seconds.observe(elapsed())
        return prepared

    def install(self, prepared: Prepared, located: Located, *, generation_seen: int) -> Outcome:
        """Swap ``prepared`` in, unless a decision that landed since ``generation_seen``
        makes it stale (reason ``superseded``)."""
        c = located.candidate
        real = prepared.loaded.path
        with self._lock:
            current = self._current
            if current is not None and current.generation != generation_seen:
                verdict = judge_located(
                    current.identity,
                    located,
                    self._skip_through,
                    mtime_ns=None if located.remote else prepared.loaded.mtime_ns,
                    rolled_back_at=self._rolled_back_at,
                )
                if not verdict.apply:
                    superseded = Outcome(False, "superseded", current, str(verdict))
                    model = None
                else:
                    model = self._swap_in(prepared, located, current)
            else:
                model = self._swap_in(prepared, located, current)
        if model is None:
            self.stale(Freshness(superseded.detail), c.source, str(real), c.version)
            return superseded
        self.metrics.swaps.labels(c.source).inc()
        if c.notification is not None:
            self.metrics.notify_to_swap.observe(max(0.0, time.monotonic() - c.received_at))
        self.events.add(
            Event(EventKind.SWAP, "swapped", c.source, str(real), model.version, model.generation)
        )
        self.log.info(
            "serving %s version %d as generation %d (source %s, %s)",
            printable(real),
            model.version,
            model.generation,
            c.source,
            model.runner.backend,
        )
        return Outcome(True, "swapped", model)

    def reload(self, path: Path | None = None) -> ServedModel:
        """Hard reload of ``path`` or the tier-resolved checkpoint, mtime and failure memory
        ignored; an operator's decision, taken now.

        Raises NothingToLoad, or CheckpointError if it fails (the old model stays served).
        """

        def find() -> Located:
            target = path or self.roots.resolve().path
            if target is None:
                raise NothingToLoad("no checkpoint found in the model roots")
            real = self.roots.confine(target)
            self.failures.forget(str(real))
            return self.locate(
                Candidate(
                    source="reload", path=str(real), force=True, watermark=self._highest_version
                )
            )

        located = self.lane.run(find, what="resolving the checkpoint to reload")
        if located.error is not None:
            self.refused(located.error, "reload", located.candidate.path, 0)
            raise located.error
        generation = self._generation
        try:
            prepared = self.prepare(located)
        except CheckpointError as exc:
            self.refused(exc, "reload", str(located.real), 0)
            raise
        outcome = self.install(prepared, located, generation_seen=generation)
        assert outcome.model is not None
        return outcome.model

    def rollback(self, *, expect: tuple[str, str] | None = None) -> ServedModel:
        """Swap the previous model back in (as a new generation). Raises NoPreviousModel.

        With ``expect`` (the fingerprints of the served and the previous model: a sibling
        worker's rollback, ``subscriber/process/operations.py``), only while those two are still
        served and kept; ModelChanged otherwise.
        """
        with self._lock:
            previous, current = self._previous, self._current
            if previous is None or current is None:
                raise no_previous_model(current)
            if expect is not None and (current.fingerprint, previous.fingerprint) != expect:
                raise ModelChanged(
                    f"serves version {current.version} ({current.path}) and keeps version "
                    f"{previous.version} ({previous.path}): not the models the rollback was for"
                )
            self._generation += 1
            restored = replace(
                previous,
                generation=self._generation,
                source="rollback",
                loaded_at=datetime.now(UTC),
                newer_after_ns=max(previous.mtime_ns, time.time_ns()),
                message=None,  # a node's own decision: never restored into :latest
            )
            # every version known now was decided before this rollback: it needs force, and so
            # does one still in flight (received before now, judged after)
            self._skip_through = max(self._skip_through, current.version, self._highest_version)
            self._rolled_back_at = time.monotonic()
            self._install(restored, previous=None)
        self.metrics.swaps.labels("rollback").inc()
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
        self.log.warning(
            "rolled back to %s version %d (generation %d); versions <= %d now need force",
            printable(restored.path),
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

    # -- bookkeeping -------------------------------------------------------------------------

    def name_in_logs(self, instance_id: str) -> None:
        """Start each line this holder logs with ``instance_id`` (a node of several)."""
        self.log = _Named(log, {"instance": instance_id})

    def record_rejection(self, reason: str, detail: str, source: str) -> None:
        """Count and log a notification refused before it reached the holder (bad message)."""
        self.metrics.rejections.labels(reason).inc()
        self.events.add(Event(EventKind.REJECTED, reason, source, detail=printable(detail, 500)))

    def refused(
        self, exc: CheckpointError, source: str, path: str, version: int, *, log_it: bool = True
    ) -> Outcome:
        kind = EventKind.LOAD_FAILED if isinstance(exc, CheckpointLoadError) else EventKind.REJECTED
        self.metrics.rejections.labels(exc.reason).inc()
        self.events.add(Event(kind, exc.reason, source, path, version, detail=printable(exc, 500)))
        if log_it:
            self.log.warning(
                "not serving %s (%s): %s; the served model stays",
                printable(path),
                exc.reason,
                printable(exc, 500),
            )
        return Outcome(False, exc.reason, self._current, str(exc))

    def stale(
        self, verdict: Freshness | str, source: str, path: str, version: int, detail: str = ""
    ) -> Outcome:
        reason = str(verdict)
        self.metrics.stale_skips.labels(reason).inc()
        self.events.add(Event(EventKind.STALE, reason, source, path, version, detail=detail))
        if log.isEnabledFor(logging.DEBUG):  # printable() runs before log.debug() looks
            log.debug("skipped %s version %d: %s", printable(path), version, reason)
        return Outcome(False, reason, self._current, detail)

    # -- internals -------------------------------------------------------------------------

    def _swap_in(
        self, prepared: Prepared, located: Located, current: ServedModel | None
    ) -> ServedModel:
        loaded, c = prepared.loaded, located.candidate
        # a remote tier object is dated by its listing, any other checkpoint by its file
        listed = located.identity if located.remote is not None else None
        mtime_ns = listed.mtime_ns if listed is not None else loaded.mtime_ns
        self._generation += 1
        model = ServedModel(
            policy=prepared.policy,
            runner=prepared.runner,
            path=loaded.path,
            mtime_ns=mtime_ns,
            version=c.version if c.version > 0 else loaded.version,
            generation=self._generation,
            sha256=loaded.sha256,
            loaded_at=datetime.now(UTC),
            source=c.source,
            model_name=loaded.model_name,
            training_step=loaded.training_step,
            saved_at=loaded.saved_at,
            metadata=loaded.metadata,
            newer_after_ns=max(mtime_ns, c.decided_ns),
            # an unversioned decision stands against every version applied before it
            watermark=(
                c.version
                if c.version > 0
                else max(loaded.version, c.watermark, self._highest_version)
            ),
            # the decision to restore into an empty :latest; never a targeted (canary) one
            message=c.raw if c.source in ("channel", "latest") and not c.targeted else None,
            origin=located.remote.url if located.remote is not None else None,
            architecture=loaded.architecture,
            io=prepared.io,
        )
        self._highest_version = max(self._highest_version, model.version)
        self._applied_version = max(self._applied_version, model.version)
        self._install(model, previous=current)
        return model

    def _install(self, model: ServedModel, *, previous: ServedModel | None) -> None:
        self._previous = previous
        self._current = model  # the swap: one reference assignment
        self._swapped.notify_all()
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


def no_previous_model(current: ServedModel | None) -> NoPreviousModel:
    """The refusal of a rollback while no previous model is kept (after a rollback: say why)."""
    hint = ""
    if current is not None and current.source == "rollback":
        hint = " (a rollback is not undone by another: reload or notify instead)"
    return NoPreviousModel("no previous model is kept" + hint)


class _Named(logging.LoggerAdapter[logging.Logger]):
    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{(self.extra or {}).get('instance')}: {msg}", kwargs
