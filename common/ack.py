"""The acks (SPEC §11): after judging a notification, a node says what it did with it.

One JSON object per judged notification on ``fks:{instance}:acks``::

    {"node": "web-1:4121", "version": 7, "sha256": "…", "model_path": "/srv/models/model_7.pt",
     "outcome": "applied", "reason": "swapped", "generation": 7, "ms": 12.4,
     "at": "2026-11-23T12:00:00.123Z"}

``outcome`` is ``applied``, ``rejected`` (``reason`` says why: ``sha256_mismatch``,
``bad_signature``, …), ``stale`` (not newer than what is served: ``stale_version``, …) or
``ignored`` (a targeted message that does not name this node). ``version``, ``sha256`` and
``model_path`` are the judged message's (``null`` when the message could not be read), so a
publisher matches acks to what it sent; ``generation`` is what the node serves after judging;
``ms`` the time from the message's arrival to the judgment. ``answers`` is the sha256 of the
exact bytes of the judged message: a publisher believes an ack only for the message it sent
(a recorded ack replayed when the same version, sha256 and path are announced again answers
another message, and is ignored). Publishers parse acks strictly: an ack is input from the
network like any message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from common.errors import InvalidNotification
from common.keys import NODE_ID_PATTERN
from common.notification import MAX_MESSAGE_BYTES, CheckpointNotification
from common.signing import SIGNATURE_FIELD, sign_payload, verify_payload

__all__ = ["MAX_ACK_BYTES", "OUTCOMES", "Ack", "AckOutcome", "answer_digest", "judged_fields"]

# The largest ack a node can send, with room to spare: a message's model_path may hold 4,096
# characters and the reason 200, each of which JSON may write as a 6-byte ``\u00XX`` escape
# (27 KB with the other fields). It was 8 KiB, under which an ack of a long path with quotes,
# backslashes or control characters was sent, yet refused by the waiting publisher, who
# reported the node that answered as silent (found by the review of issue 26).
MAX_ACK_BYTES = 32 * 1024
AckOutcome = Literal["applied", "rejected", "stale", "ignored"]
OUTCOMES: tuple[AckOutcome, ...] = ("applied", "rejected", "stale", "ignored")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Ack(BaseModel):
    """One node's judgment of one notification."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    node: Annotated[str, StringConstraints(pattern=f"^{NODE_ID_PATTERN.pattern}$")]
    version: Annotated[int, Field(ge=0, le=2**64 - 1)] | None = None
    sha256: Annotated[str, StringConstraints(max_length=64)] | None = None
    model_path: Annotated[str, StringConstraints(max_length=4096)] | None = None
    outcome: AckOutcome
    reason: Annotated[str, StringConstraints(max_length=200)] = ""
    generation: Annotated[int, Field(ge=0)] | None = None
    ms: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    at: AwareDatetime = Field(default_factory=_utc_now)
    answers: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    signature: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None

    def wire_dict(self) -> dict[str, Any]:
        """The ack as sent: every field in declaration order (what ``model_dump`` gives, built
        directly: a node builds one per message it judges), ``at`` in UTC with ``Z``, ``ms``
        to the µs, the signature (if any) last."""
        out = {
            "node": self.node,
            "version": self.version,
            "sha256": self.sha256,
            "model_path": self.model_path,
            "outcome": self.outcome,
            "reason": self.reason,
            "generation": self.generation,
            "ms": round(self.ms, 3),
            "at": self.at.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z",
            "answers": self.answers,
        }
        if self.signature is not None:
            out[SIGNATURE_FIELD] = self.signature
        return out

    def to_json(self) -> str:
        return json.dumps(self.wire_dict(), separators=(",", ":"), ensure_ascii=False)

    def signed(self, secret: str | bytes) -> Ack:
        """A copy carrying the HMAC-SHA256 signature of its canonical JSON."""
        unsigned = self.model_copy(update={"signature": None}).wire_dict()
        return self.model_copy(update={"signature": sign_payload(unsigned, secret, "ack")})

    @classmethod
    def parse(cls, data: bytes | str, *, secret: str | bytes | None = None) -> Ack | None:
        """The ack in ``data`` (signed with ``secret`` when one is given), or None for
        anything that is not one (never raises)."""
        if len(data) > MAX_ACK_BYTES:
            return None
        try:
            if secret is not None:
                obj = json.loads(data)
                if not isinstance(obj, dict):
                    return None
                verify_payload(obj, secret, "ack")
            return cls.model_validate_json(data)
        except (ValueError, RecursionError, InvalidNotification):
            return None

    def recent_dict(self) -> dict[str, Any]:
        """What a node's registry entry keeps of this ack (unsigned: the entry is signed)."""
        out = self.wire_dict()
        out.pop(SIGNATURE_FIELD, None)
        return out

    def judges(self, digest: str) -> bool:
        """Whether this ack answers the message whose bytes hash to ``digest``."""
        return self.answers is not None and hmac.compare_digest(self.answers, digest)


def answer_digest(raw: bytes | str) -> str:
    """What an ack's ``answers`` holds: the sha256 of the judged message's exact bytes."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    return hashlib.sha256(data).hexdigest()


def judged_fields(notification: CheckpointNotification | None, raw: bytes) -> dict[str, Any]:
    """``version``, ``sha256`` and ``model_path`` of a judged message: the parsed one's, or
    what can be read of a refused one (a bad signature, a wrong field), each checked."""
    if notification is not None:
        return {
            "version": notification.version,
            "sha256": notification.sha256,
            "model_path": notification.model_path,
        }
    out: dict[str, Any] = {"version": None, "sha256": None, "model_path": None}
    if len(raw) > MAX_MESSAGE_BYTES:
        return out
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return out
    if not isinstance(obj, dict):
        return out
    version, sha256, path = obj.get("version", 0), obj.get("sha256"), obj.get("model_path")
    if type(version) is int and 0 <= version < 2**64:
        out["version"] = version
    if isinstance(sha256, str) and len(sha256) == 64:
        out["sha256"] = sha256.lower()
    if isinstance(path, str) and len(path) <= 4096:
        out["model_path"] = path.encode("utf-8", "replace").decode("utf-8")
    return out
