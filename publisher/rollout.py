"""``fks rollout``: canaries first, then the fleet, or the canaries back (SPEC §11).

1. The live nodes are read from the registry; ``canary`` of them (the first by id) are
   chosen, and what each serves now is remembered (path, version, sha256). More canaries
   than live nodes: refused, nothing sent.
2. The checkpoint is sent to the canaries only (a targeted message: ``:latest`` does not
   move, so no other node can pick it up by catch-up) and their acks awaited.
3. Soak: for ``soak`` seconds the canaries' registry entries are watched: each must stay
   live (a silent canary is never taken for a good one), keep serving the new checkpoint,
   and keep its request error rate since the swap at or below ``max_error_rate``.
4. Then the same message (same version, path and sha256) goes to every node and moves
   ``:latest``: promoted. Or, on any rejection, silence, swap away or error rate over the
   bound, each canary that may serve the new checkpoint is sent a forced targeted message
   naming what it served before: rolled back.

Every step is told to ``say`` as a line of text; nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from common.fleet import NodeEntry
from common.notification import CheckpointNotification
from common.redis_connect import REDIS_ERRORS
from publisher.acks import AckReport
from publisher.notifier import CheckpointNotifier, NotifyResult

__all__ = ["RolloutOutcome", "RolloutPlan", "RolloutResult", "format_acks", "run_rollout"]

RolloutOutcome = Literal["promoted", "rolled_back", "refused", "failed"]
Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    canary: int = 1
    soak: float = 30.0
    max_error_rate: float = 0.0
    timeout: float = 10.0  # for each wait on acks
    poll: float = 0.25  # how often the registry is read during the soak

    def __post_init__(self) -> None:
        if self.canary < 1:
            raise ValueError(f"--canary must be at least 1, got {self.canary}")
        if self.soak < 0:
            raise ValueError(f"--soak must not be negative, got {self.soak}")
        if not 0 <= self.max_error_rate <= 1:
            raise ValueError(f"--max-error-rate must lie in [0, 1], got {self.max_error_rate}")
        if not self.timeout > 0:
            raise ValueError(f"--timeout must be positive, got {self.timeout}")


@dataclass(frozen=True, slots=True)
class RolloutResult:
    """``promoted`` (exit 0 when every node answered well), ``rolled_back``, ``refused``
    (nothing sent) or ``failed`` (the canary message could not be sent)."""

    outcome: RolloutOutcome
    reason: str
    canaries: tuple[str, ...] = ()
    canary: NotifyResult | None = None
    promotion: NotifyResult | None = None
    rollbacks: tuple[NotifyResult, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class _Served:
    path: str | None
    version: int
    sha256: str | None


def format_acks(report: AckReport) -> list[str]:
    """The acks as table lines (silent nodes last)."""
    lines = [f"  {'node':<28} {'outcome':<9} {'reason':<22} {'version':>8} {'gen':>5} {'ms':>9}"]
    for a in report.acks:
        lines.append(
            f"  {a.node:<28} {a.outcome:<9} {a.reason:<22} {_opt(a.version):>8} "
            f"{_opt(a.generation):>5} {a.ms:>9.1f}"
        )
    for node in report.silent:
        lines.append(f"  {node:<28} {'SILENT':<9} {'no ack in time':<22}")
    return lines


def run_rollout(
    notifier: CheckpointNotifier,
    model_path: str,
    plan: RolloutPlan,
    *,
    say: Say,
    notify_args: Mapping[str, Any] | None = None,
) -> RolloutResult:
    """Run the rollout of ``model_path`` (``notify_args``: name, version, metadata, … as
    :meth:`CheckpointNotifier.notify` takes them)."""
    args = dict(notify_args or {})
    keys = notifier.keys
    try:
        live = [n for n in notifier.nodes() if not n.stale]
    except REDIS_ERRORS as exc:
        return RolloutResult("failed", f"Redis unavailable: {type(exc).__name__}: {exc}")
    if not live:
        return _refused(say, f"no live nodes in {keys.nodes}: nothing sent")
    if plan.canary > len(live):
        return _refused(
            say,
            f"--canary {plan.canary} but only {len(live)} live node(s) "
            f"({', '.join(n.node_id for n in live)}): nothing sent",
        )
    chosen = live[: plan.canary]
    canaries = tuple(n.node_id for n in chosen)
    before = {n.node_id: _served(n) for n in chosen}
    others = len(live) - len(chosen)
    say(f"canary: {', '.join(canaries)} ({len(canaries)} of {len(live)} live nodes)")
    first = notifier.notify(
        model_path, nodes=canaries, wait_for=len(canaries), timeout=plan.timeout, **args
    )
    if not first.sent or first.notification is None or first.acks is None:
        say(f"not sent ({first.outcome}): {first.reason}")
        return RolloutResult("failed", first.reason, canaries, first)
    sent = first.notification
    say(f"sent version {sent.version} ({sent.model_path}) to the canaries:")
    for line in format_acks(first.acks):
        say(line)
    bad = _canary_trouble(first.acks, canaries)
    if bad is None and plan.soak > 0:
        bad = _soak(notifier, sent, canaries, plan, say)
    if bad is not None:
        say(f"rolling back: {bad}")
        suspects = tuple(
            n for n in canaries if (a := first.acks.ack_of(n)) is None or a.outcome == "applied"
        )
        if not suspects:
            say("  no canary serves it: nothing to force back, no other node was sent it")
        rollbacks = _roll_back(notifier, suspects, before, plan, say)
        return RolloutResult("rolled_back", bad, canaries, first, rollbacks=rollbacks)
    say(f"promoting version {sent.version} to every node ({others} more, :latest moves)")
    promotion = notifier.notify(
        sent.model_path,
        sent.model_name,
        version=sent.version,
        training_step=sent.training_step,
        metadata=sent.metadata,
        sha256=sent.sha256,
        force=sent.force,
        saved_at=sent.saved_at,
        wait_for="all",
        timeout=plan.timeout,
    )
    if promotion.acks is not None:
        for line in format_acks(promotion.acks):
            say(line)
    if not promotion.sent:
        say(f"promotion not sent ({promotion.outcome}): {promotion.reason}")
        return RolloutResult("failed", promotion.reason, canaries, first, promotion)
    ok = promotion.acks is not None and promotion.acks.ok
    reason = "every node answered" if ok else "promoted, but some node rejected it or was silent"
    say(f"promoted: {reason}")
    return RolloutResult("promoted", reason, canaries, first, promotion)


def _refused(say: Say, why: str) -> RolloutResult:
    say(f"refused: {why}")
    return RolloutResult("refused", why)


def _served(entry: NodeEntry) -> _Served:
    version = entry.get("version")
    path, sha256 = entry.get("path"), entry.get("sha256")
    return _Served(
        path if isinstance(path, str) else None,
        version if isinstance(version, int) and version >= 0 else 0,
        sha256 if isinstance(sha256, str) else None,
    )


def _canary_trouble(acks: AckReport, canaries: tuple[str, ...]) -> str | None:
    for node in canaries:
        ack = acks.ack_of(node)
        if ack is None:
            return f"{node} stayed silent"
        if ack.outcome != "applied":
            return f"{node} did not apply it ({ack.outcome}: {ack.reason})"
    return None


def _soak(
    notifier: CheckpointNotifier,
    sent: CheckpointNotification,
    canaries: tuple[str, ...],
    plan: RolloutPlan,
    say: Say,
) -> str | None:
    """Watch the canaries for ``plan.soak`` seconds; why to roll back, or None."""
    say(f"soak: {plan.soak:g} s, max error rate {plan.max_error_rate:g}")
    start = time.monotonic()
    next_report = start
    while True:
        elapsed = time.monotonic() - start
        try:
            rows = {n.node_id: n for n in notifier.nodes()}
        except REDIS_ERRORS as exc:
            return f"the registry cannot be read: {type(exc).__name__}: {exc}"
        status = []
        for node in canaries:
            row = rows.get(node)
            if row is None or row.stale:
                return f"{node} went silent during the soak (no heartbeat)"
            if row.get("version") != sent.version or (
                sent.sha256 is not None and row.get("sha256") != sent.sha256
            ):
                return f"{node} no longer serves version {sent.version}"
            requests, errors = _count(row.get("requests")), _count(row.get("errors"))
            rate = errors / requests if requests else 0.0
            if rate > plan.max_error_rate:
                return (
                    f"{node} error rate {rate:.3f} ({errors} of {requests} requests) "
                    f"over {plan.max_error_rate:g}"
                )
            status.append(f"{node} {requests} requests, {errors} errors")
        now = time.monotonic()
        if now >= next_report or elapsed >= plan.soak:
            say(f"  {min(elapsed, plan.soak):5.1f} s  " + "; ".join(status))
            next_report = now + max(1.0, plan.soak / 5)
        if elapsed >= plan.soak:
            idle = [n for n in canaries if not _count(rows[n].get("requests"))]
            if idle:
                say(f"  note: no requests reached {', '.join(idle)}: no error rate to judge")
            return None
        time.sleep(min(plan.poll, max(0.0, plan.soak - elapsed)))


def _count(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _roll_back(
    notifier: CheckpointNotifier,
    nodes: tuple[str, ...],
    before: Mapping[str, _Served],
    plan: RolloutPlan,
    say: Say,
) -> tuple[NotifyResult, ...]:
    try:
        live = {n.node_id for n in notifier.nodes() if not n.stale}
    except REDIS_ERRORS:
        live = set(nodes)
    for node in nodes:
        if node not in live:
            say(
                f"  {node} is not live: the rollback is sent to it but not waited for; if it "
                "returns without a restart it may still serve the canary (see fks status)"
            )
    groups: dict[_Served, list[str]] = {}
    for node in nodes:
        served = before[node]
        if served.path is None:
            say(f"  {node} served nothing before: nothing to roll back to")
            continue
        groups.setdefault(served, []).append(node)
    results = []
    for served, members in groups.items():
        assert served.path is not None
        say(f"  forcing {', '.join(members)} back to version {served.version} ({served.path})")
        result = notifier.notify(
            served.path,
            version=served.version,
            sha256=served.sha256,
            hash_file=False,
            force=True,
            nodes=members,
            wait_for=sum(1 for m in members if m in live) or None,
            timeout=plan.timeout,
        )
        if result.acks is not None:
            for line in format_acks(result.acks):
                say(line)
        elif not result.sent:
            say(f"  rollback not sent ({result.outcome}): {result.reason}")
        results.append(result)
    return tuple(results)


def _opt(value: object) -> str:
    return "-" if value is None else str(value)
