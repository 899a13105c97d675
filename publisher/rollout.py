"""``fks rollout``: canaries first, then the fleet, or the canaries back (SPEC §11).

1. The live nodes are read from the registry (with ``FKS_NOTIFY_SECRET``, only entries the
   nodes signed: a forged entry is never a canary); ``canary`` of them (the first by id) are
   chosen. The rollback target is the fleet's decision that ``:latest`` holds, signed by a
   holder of the secret (``common/notification.py`` verifies it). Only a fleet that has no
   decision in ``:latest`` at all (nodes started from files on disk) rolls each canary back to
   what its own registry entry, signed by that node, said it served before anything was sent.
   More canaries than live nodes, or nothing to roll back to: refused, nothing sent.
2. The checkpoint is sent to the canaries only (a targeted message: ``:latest`` does not
   move, so no other node can pick it up by catch-up) and their acks awaited.
3. Soak: for ``soak`` seconds the canaries' registry entries are watched. A canary rewrites
   its entry every ``CANARY_BEAT_SECONDS`` (``common/fleet.py``), stamped on Redis' clock, and
   the soak believes only entries no older than their own cadence: each canary must stay live
   (an entry that stops coming is a dead canary, seen within a second), keep serving the new
   checkpoint, and keep its request error rate since the swap at or below
   ``max_error_rate``. At the end, the soak waits for an entry written after its last second,
   so the whole soak is judged; a canary that no request reached gives no evidence and fails
   the soak unless ``allow_idle``.
4. Then the same message (same version, path and sha256) goes to every node and moves
   ``:latest``: promoted. Or, on any rejection, silence, death, swap away or error rate over
   the bound, each canary that may serve the new checkpoint is sent a forced targeted message
   naming the rollback target, and the rollback counts as done only when each live one acked
   it ``applied``: ``rolled_back``; otherwise ``rollback_failed`` (a canary refused it, stayed
   silent or is down: it may still serve the new checkpoint).

Every step is told to ``say`` as a line of text; nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from common.errors import InvalidNotification
from common.fleet import CANARY_WATCH_SECONDS, NodeEntry
from common.notification import MAX_MESSAGE_BYTES, CheckpointNotification
from common.redis_io.connect import REDIS_ERRORS
from publisher.acks import AckReport
from publisher.notifier import CheckpointNotifier, NotifyResult

__all__ = [
    "RolloutOutcome",
    "RolloutPlan",
    "RolloutResult",
    "Target",
    "format_acks",
    "run_rollout",
]

RolloutOutcome = Literal["promoted", "rolled_back", "rollback_failed", "refused", "failed"]
Say = Callable[[str], None]
# What a promotion sends again, as the canaries got it (step 4): same version, path and sha256
RESENT = (
    "model_path", "model_name", "version", "training_step", "metadata", "sha256", "force",
    "saved_at",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    canary: int = 1
    soak: float = 30.0
    max_error_rate: float = 0.0
    timeout: float = 10.0  # for each wait on acks
    poll: float = 0.25  # how often the registry is read during the soak
    allow_idle: bool = False  # promote a canary no request reached (no error rate to judge)

    def __post_init__(self) -> None:
        if self.canary < 1:
            raise ValueError(f"--canary must be at least 1, got {self.canary}")
        if self.soak < 0:
            raise ValueError(f"--soak must not be negative, got {self.soak}")
        if self.soak > CANARY_WATCH_SECONDS:
            raise ValueError(
                f"--soak must be at most {CANARY_WATCH_SECONDS:g} s (a canary reports its "
                f"counters that long), got {self.soak:g}"
            )
        if self.soak == 0 and not self.allow_idle:
            raise ValueError(
                "--soak 0 judges no request: the canaries' acks alone would promote it; "
                "give --allow-idle to do that"
            )
        if not 0 <= self.max_error_rate <= 1:
            raise ValueError(f"--max-error-rate must lie in [0, 1], got {self.max_error_rate}")
        if not self.timeout > 0:
            raise ValueError(f"--timeout must be positive, got {self.timeout}")


@dataclass(frozen=True, slots=True)
class Target:
    """What a canary is forced back to: a checkpoint, and where that choice came from."""

    model_path: str
    version: int
    sha256: str | None
    model_name: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class RolloutResult:
    """``promoted`` (exit 0 when every node answered well), ``rolled_back`` (every canary
    that may have served it acked the rollback ``applied``), ``rollback_failed`` (one did
    not: it may still serve the new checkpoint), ``refused`` (nothing sent) or ``failed``
    (the canary message could not be sent)."""

    outcome: RolloutOutcome
    reason: str
    canaries: tuple[str, ...] = ()
    canary: NotifyResult | None = None
    promotion: NotifyResult | None = None
    rollbacks: tuple[NotifyResult, ...] = field(default_factory=tuple)


def format_acks(report: AckReport) -> list[str]:
    """The acks as table lines (silent nodes last)."""
    lines = [f"  {'node':<28} {'outcome':<9} {'reason':<22} {'version':>8} {'gen':>5} {'ms':>9}"]
    for a in report.acks:
        lines.append(
            f"  {a.node:<28} {a.outcome:<9} {a.reason:<22} {_opt(a.version):>8} "
            f"{_opt(a.generation):>5} {a.ms:>9.1f}"
        )
    why = "wait cut, not mended" if report.cut else "no ack in time"
    for node in report.silent:
        lines.append(f"  {node:<28} {'SILENT':<9} {why:<22}")
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
        live = [n for n in notifier.nodes() if n.live]
        latest = _latest_decision(notifier)
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
    ahead = _served_beyond(latest, live)
    if ahead:
        return _refused(
            say,
            f"{keys.latest} holds version {latest.version} (an old message put back there?) "  # type: ignore[union-attr]
            f"while {ahead} serve(s) a newer one: it is not the fleet's decision to roll back "
            "to; announce the current checkpoint (fks notify), then roll out; nothing sent",
        )
    targets = _targets(latest, chosen, keys.latest)
    if isinstance(targets, str):
        return _refused(say, f"nothing to roll the canaries back to: {targets}; nothing sent")
    others = len(live) - len(chosen)
    say(f"canary: {', '.join(canaries)} ({len(canaries)} of {len(live)} live nodes)")
    for target, members in _grouped(targets).items():
        say(
            f"rollback target{'' if len(targets) == 1 else ' of ' + ', '.join(members)}: "
            f"version {target.version} ({target.model_path}), from {target.source}"
        )
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
            return RolloutResult("rolled_back", bad, canaries, first)
        rollbacks, unconfirmed = _roll_back(notifier, suspects, targets, plan, say)
        if unconfirmed:
            why = f"{bad}; the rollback is not confirmed: {'; '.join(unconfirmed)}"
            say(f"rollback failed: {'; '.join(unconfirmed)}")
            return RolloutResult("rollback_failed", why, canaries, first, rollbacks=rollbacks)
        say("rolled back: every canary acked the rollback applied")
        return RolloutResult("rolled_back", bad, canaries, first, rollbacks=rollbacks)
    say(f"promoting version {sent.version} to every node ({others} more, :latest moves)")
    again = {name: getattr(sent, name) for name in RESENT}  # the canaries' own message
    promotion = notifier.notify(**again, wait_for="all", timeout=plan.timeout)
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


def _latest_decision(notifier: CheckpointNotifier) -> CheckpointNotification | str | None:
    """The fleet's decision held by ``:latest`` (signed with the notifier's secret, when it
    has one); None when ``:latest`` is empty; why it cannot be used otherwise (Redis errors
    propagate)."""
    client, keys = notifier.client(), notifier.keys
    size = int(client.strlen(keys.latest))
    if size == 0:
        return None
    if size > MAX_MESSAGE_BYTES:
        return f"{keys.latest} holds {size} bytes, over the message limit"
    raw = client.get(keys.latest)
    if not isinstance(raw, bytes):
        return None
    try:
        held = CheckpointNotification.from_message(raw, secret=notifier.secret)
    except InvalidNotification as exc:
        return f"{keys.latest} is not a decision to trust ({exc.reason}: {exc})"
    if held.nodes is not None:  # never written by our scripts
        return f"{keys.latest} holds a targeted message"
    return held


def _targets(
    latest: CheckpointNotification | str | None, chosen: list[NodeEntry], where: str
) -> dict[str, Target] | str:
    """Each canary's rollback target: the decision :latest holds; with none at all, what the
    canary's own (believed) registry entry says it serves now; or why there is none."""
    if isinstance(latest, str):
        return latest
    if latest is not None:
        held = Target(latest.model_path, latest.version, latest.sha256, latest.model_name, where)
        return {n.node_id: held for n in chosen}
    targets = {}
    for row in chosen:
        path, version, sha256 = row.get("path"), row.get("version"), row.get("sha256")
        if not isinstance(path, str) or not path:
            return f"{where} is empty and {row.node_id} serves nothing yet"
        targets[row.node_id] = Target(
            path,
            version if isinstance(version, int) and version >= 0 else 0,
            sha256 if isinstance(sha256, str) else None,
            str(row.get("model_name") or ""),
            f"{row.node_id}'s registry entry ({where} is empty)",
        )
    return targets


def _served_beyond(latest: CheckpointNotification | str | None, live: list[NodeEntry]) -> str:
    """The live nodes whose (believed) entries serve a version above the one ``:latest``
    holds, by name (``""``: none): a ``:latest`` older than what the fleet serves is no
    rollback target (a signed message of the past, put back by a Redis writer, is still
    signed)."""
    if not isinstance(latest, CheckpointNotification) or latest.version == 0:
        return ""
    ahead = [
        row.node_id
        for row in live
        if isinstance(version := row.get("version"), int) and version > latest.version
    ]
    return ", ".join(ahead)


def _grouped(targets: Mapping[str, Target]) -> dict[Target, list[str]]:
    groups: dict[Target, list[str]] = {}
    for node, target in targets.items():
        groups.setdefault(target, []).append(node)
    return groups


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
    soak_end: float | None = None  # on Redis' clock
    closing_until = 0.0
    while True:
        try:
            rows = {n.node_id: n for n in notifier.nodes()}
        except REDIS_ERRORS as exc:
            return f"the registry cannot be read: {type(exc).__name__}: {exc}"
        if soak_end is None:
            soak_end = notifier.clock.now() + plan.soak
        elapsed = time.monotonic() - start
        status = []
        for node in canaries:
            row = rows.get(node)
            trouble = _canary_state(row, node, sent, plan)
            if trouble is not None:
                return trouble
            assert row is not None
            status.append(
                f"{node} {_count(row, 'requests')} requests, {_count(row, 'errors')} errors"
            )
        now = time.monotonic()
        if now >= next_report and elapsed < plan.soak:
            say(f"  {elapsed:5.1f} s  " + "; ".join(status))
            next_report = now + max(1.0, plan.soak / 5)
        if elapsed >= plan.soak:
            # the last second counts too: wait for entries written after the soak ended
            behind = [n for n in canaries if _stamped(rows[n]) < soak_end]
            if not closing_until:
                closing_until = now + max(2.0, *(2 * _interval(rows[n]) for n in canaries))
            if behind and now < closing_until:
                time.sleep(0.05)
                continue
            if behind:
                return f"{', '.join(behind)} wrote no entry after the soak ended (silent?)"
            say(f"  {plan.soak:5.1f} s  " + "; ".join(status))
            idle = [n for n in canaries if not _count(rows[n], "requests")]
            if idle and not plan.allow_idle:
                return (
                    f"no requests reached {', '.join(idle)} during the soak: no evidence its "
                    "answers are good (--allow-idle promotes without traffic)"
                )
            if idle:
                say(f"  note: no requests reached {', '.join(idle)} (--allow-idle)")
            return None
        time.sleep(min(plan.poll, max(0.0, plan.soak - elapsed) + 0.01))


def _canary_state(
    row: NodeEntry | None, node: str, sent: CheckpointNotification, plan: RolloutPlan
) -> str | None:
    """Why this canary's entry stops the rollout, or None."""
    if row is None:
        return f"{node} left the registry during the soak"
    if row.distrust:
        return f"{node}'s registry entry is not to be believed ({row.distrust})"
    if row.stale:
        return f"{node} went silent during the soak (no entry for {row.age:.1f} s: dead?)"
    if row.get("version") != sent.version or (
        sent.sha256 is not None and row.get("sha256") != sent.sha256
    ):
        return f"{node} no longer serves version {sent.version}"
    requests, errors = _count(row, "requests"), _count(row, "errors")
    rate = errors / requests if requests else 0.0
    if rate > plan.max_error_rate:
        return (
            f"{node} error rate {rate:.3f} ({errors} of {requests} requests) "
            f"over {plan.max_error_rate:g}"
        )
    return None


def _count(row: NodeEntry, key: str) -> int:
    value = row.get(key)
    return value if isinstance(value, int) and value >= 0 else 0


def _stamped(row: NodeEntry) -> float:
    value = row.get("heartbeat_at")
    return float(value) if isinstance(value, int | float) else 0.0


def _interval(row: NodeEntry) -> float:
    value = row.get("interval")
    return float(value) if isinstance(value, int | float) and value > 0 else 2.0


def _roll_back(
    notifier: CheckpointNotifier,
    nodes: tuple[str, ...],
    targets: Mapping[str, Target],
    plan: RolloutPlan,
    say: Say,
) -> tuple[tuple[NotifyResult, ...], list[str]]:
    """Force ``nodes`` back to their targets; the results and why the rollback is not
    confirmed for each node that did not ack it ``applied`` (empty: every one did)."""
    try:
        live = {n.node_id for n in notifier.nodes() if n.live}
    except REDIS_ERRORS:
        live = set(nodes)
    down = [n for n in nodes if n not in live]
    for node in down:
        say(
            f"  {node} is not live: the rollback is sent to it but not waited for; if it "
            "returns without a restart it may still serve the canary (see fks status)"
        )
    unconfirmed = [f"{n} is down" for n in down]
    results = []
    for target, members in _grouped({n: targets[n] for n in nodes}).items():
        waited = sum(1 for n in members if n in live)
        say(
            f"  forcing {', '.join(members)} back to version {target.version} ({target.model_path})"
        )
        result = notifier.notify(
            target.model_path,
            target.model_name,
            version=target.version,
            sha256=target.sha256,
            hash_file=False,
            force=True,
            nodes=members,
            wait_for=waited or None,
            timeout=plan.timeout,
        )
        results.append(result)
        if result.acks is not None:
            for line in format_acks(result.acks):
                say(line)
        elif not result.sent:
            say(f"  rollback not sent ({result.outcome}): {result.reason}")
        for node in members:
            if node in down:
                continue
            ack = result.acks.ack_of(node) if result.acks is not None else None
            if not result.sent:
                unconfirmed.append(f"{node} was not sent it ({result.outcome}: {result.reason})")
            elif ack is None:
                unconfirmed.append(f"{node} did not answer")
            elif ack.outcome != "applied":
                unconfirmed.append(f"{node} {ack.outcome} it ({ack.reason})")
    return tuple(results), unconfirmed


def _opt(value: object) -> str:
    return "-" if value is None else str(value)
