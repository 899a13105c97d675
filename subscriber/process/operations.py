"""An operator's reload and rollback act on the node behind the port: every worker of it.

A single process acts on its own holder, as it always did. A worker of ``fks serve --workers
N`` acts on its own holder and its siblings' through the workers' own channel
(``subscriber/process/siblings.py``: Unix sockets in the supervisor's directory, no Redis, so all of
this holds while Redis is away), and answers 200 only once every worker did:

- **rollback**: first every worker says what it serves and which previous model it keeps.
  Unless they all serve the same checkpoint and keep the same previous one, nothing is
  rolled back (409 naming the workers that differ; 503 when one does not answer). Then this
  worker rolls back, and each sibling rolls back on condition that it still serves and keeps
  those two (one that already serves the target counts as done). Each worker's rollback is its
  own sticky one (``ModelHolder.rollback``): a second rollback is 409 on every worker.
- **reload**: this worker hard-reloads the resolved checkpoint (503 nothing to load, 500 load
  failed, as before: then no sibling is asked); then each sibling hard-reloads that same file.

A sibling that did not follow (a decision landed on it meanwhile, its load failed, it did not
answer in time) makes the answer an error (:class:`~subscriber.errors.NotEveryWorker`) that
names it, says what the port serves now, and how to put every worker on one model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import CheckpointError
from common.settings import Settings
from common.textsafe import printable
from subscriber.errors import ModelChanged, NoPreviousModel, NotEveryWorker, NothingToLoad
from subscriber.model.holder import ModelHolder, no_previous_model
from subscriber.model.snapshot import ServedModel
from subscriber.pipeline.registry import default_node_id
from subscriber.process.siblings import Reply, Siblings
from subscriber.process.workers import slots_directory, worker_count, worker_node_id, worker_slot

__all__ = ["ASK_SECONDS", "Done", "Operations"]

log = logging.getLogger(__name__)

ASK_SECONDS = 5.0  # a sibling's state or rollback: microseconds of work, seconds of patience
RELOAD_MARGIN_SECONDS = 5.0  # a sibling's reload: its load budget, and this


@dataclass(frozen=True, slots=True)
class Done:
    """The model this worker serves after the operation, and every worker that did it."""

    model: ServedModel
    nodes: list[str]


class Operations:
    def __init__(self, holder: ModelHolder, node_id: str) -> None:
        self.holder = holder
        self.node_id = node_id
        self.siblings: Siblings | None = None

    @classmethod
    def for_node(
        cls, holder: ModelHolder, settings: Settings, node_id: str, *, instance_index: int = 0
    ) -> Operations:
        """The operations of a node; in a worker of ``fks serve --workers N``, with its
        siblings (started by :meth:`start`): those serving the same instance, the
        ``instance_index``-th of the node's (SPEC §13)."""
        ops = cls(holder, node_id)
        directory, slot = slots_directory(), worker_slot()
        if directory is not None and slot is not None:
            base = settings.node_id or default_node_id()
            ops.siblings = Siblings(
                directory,
                slot,
                max(worker_count(), slot + 1),
                node_ids=lambda other: worker_node_id(base, other),
                handler=ops.handle,
                instance_index=instance_index,
            )
        return ops

    def start(self) -> None:
        if self.siblings is not None:
            self.siblings.start()

    def stop(self) -> None:
        if self.siblings is not None:
            self.siblings.stop()

    # -- asked over HTTP (the worker the request reached) ------------------------------------

    def rollback(self) -> Done:
        """Roll the port back: this worker and every sibling, or none (see the module)."""
        if self.siblings is None:
            return Done(self.holder.rollback(), [self.node_id])
        current, previous = self.holder.current(), self.holder.previous
        if current is None or previous is None:
            raise no_previous_model(current)
        expect = (current.fingerprint, previous.fingerprint)
        states = self.siblings.ask({"op": "state"}, ASK_SECONDS)
        silent = [r for r in states if r.answer is None]
        if silent:
            raise NotEveryWorker(503, "nothing was rolled back: " + _silent(silent))
        differ = [
            r for r in states if r.answer and (r.answer.get("current"), r.answer.get("previous"))
            != expect
        ]  # fmt: skip
        if differ:
            others = "; ".join(
                f"{r.node} serves {_said(r, 'serves')} and keeps {_said(r, 'keeps')}"
                for r in differ
            )
            raise NotEveryWorker(
                409,
                f"nothing was rolled back: the workers of this port do not serve and keep the "
                f"same models ({self.node_id} serves {_label(current)} and keeps "
                f"{_label(previous)}; {others}). To put every worker on one model: `fks notify "
                f"{previous.origin or previous.path} --force --wait all` (every node of the "
                "instance), or POST /sac/model/reload (every worker, the newest checkpoint)",
            )
        restored = self.holder.rollback(expect=expect)
        replies = self.siblings.ask(
            {"op": "rollback", "current": expect[0], "previous": expect[1]}, ASK_SECONDS
        )
        self._all_followed("rolled back to", restored, replies)
        return Done(restored, [self.node_id, *(r.node for r in replies)])

    def reload(self) -> Done:
        """Hard-reload the resolved checkpoint on this worker, then the same file on every
        sibling. NothingToLoad and CheckpointError are this worker's, as before."""
        model = self.holder.reload()
        if self.siblings is None:
            return Done(model, [self.node_id])
        replies = self.siblings.ask(
            {"op": "reload", "path": str(model.path)},
            self.holder.lane.timeout + RELOAD_MARGIN_SECONDS,
        )
        self._all_followed("reloaded", model, replies)
        return Done(model, [self.node_id, *(r.node for r in replies)])

    def _all_followed(self, did: str, model: ServedModel, replies: list[Reply]) -> None:
        failed = [r for r in replies if not (r.answer and r.answer.get("ok"))]
        if not failed:
            return
        followed = [self.node_id, *(r.node for r in replies if r not in failed)]
        why = "; ".join(
            f"{r.node}: {r.error or printable(str(r.answer and r.answer.get('error')), 300)}"
            for r in failed
        )
        statuses = [503 if r.answer is None else int(r.answer.get("status", 500)) for r in failed]
        log.warning("%s %s on %s only; not on %s", did, model.path, followed, why)
        raise NotEveryWorker(
            503 if 503 in statuses else max(statuses),
            f"{did} {_label(model)} on {', '.join(followed)}; NOT on {why}. Until they agree "
            "the port may answer with either model: retry, or `fks notify "
            f"{model.origin or model.path} --force --wait all` (every node of the instance)",
        )

    # -- asked by a sibling --------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a sibling's request (on the channel's thread)."""
        op = request.get("op")
        if op == "state":
            current, previous = self.holder.current(), self.holder.previous
            return self._ok(
                current=current.fingerprint if current else None,
                previous=previous.fingerprint if previous else None,
                serves=_label(current),
                keeps=_label(previous),
            )
        if op == "rollback":
            expect = (str(request.get("current")), str(request.get("previous")))
            served = self.holder.current()
            if served is not None and served.fingerprint == expect[1]:
                return self._ok(serves=_label(served))  # already there (another rollback)
            try:
                model = self.holder.rollback(expect=expect)
            except (NoPreviousModel, ModelChanged) as exc:
                return self._refused(409, str(exc))
            return self._ok(serves=_label(model))
        if op == "reload" and isinstance(request.get("path"), str):
            try:
                model = self.holder.reload(Path(request["path"]))
            except NothingToLoad as exc:
                return self._refused(503, str(exc))
            except CheckpointError as exc:
                return self._refused(500, f"reload failed ({exc.reason}): {exc}")
            return self._ok(serves=_label(model))
        return self._refused(400, f"unknown request {printable(str(op), 80)}")

    def _ok(self, **fields: Any) -> dict[str, Any]:
        return {"ok": True, "node": self.node_id, **fields}

    def _refused(self, status: int, error: str) -> dict[str, Any]:
        return {"ok": False, "node": self.node_id, "status": status, "error": error}


def _label(model: ServedModel | None) -> str:
    if model is None:
        return "none"
    return f"version {model.version} ({model.origin or model.path})"


def _said(reply: Reply, key: str) -> str:
    return printable(str((reply.answer or {}).get(key, "?")), 300)


def _silent(replies: list[Reply]) -> str:
    return "; ".join(f"{r.node} did not answer: {r.error}" for r in replies)
