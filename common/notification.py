"""The wire format: one JSON ``CheckpointNotification`` per message (SPEC §2).

Input is lenient where the SPEC says so (only ``model_path`` is required, unknown fields are
ignored, numbers and booleans in ``metadata`` become strings) and strict everywhere else: a
field of the wrong type is an :class:`~common.errors.InvalidNotification`, never a coercion.
Output always carries the six fields that the Rust ``CheckpointNotification`` (serde) reads.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_serializer,
    field_validator,
)

from common.errors import InvalidNotification
from common.keys import NODE_ID_PATTERN
from common.signing import SIGNATURE_FIELD, sign_payload, verify_payload
from common.textsafe import holds_lone_surrogate

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_TARGET_NODES",
    "U64_MAX",
    "CheckpointNotification",
    "message_digest",
]

MAX_MESSAGE_BYTES = 64 * 1024
U64_MAX = 2**64 - 1
MAX_TARGET_NODES = 256  # ids in one targeted message (``nodes``, SPEC §11)

Uint64 = Annotated[int, Field(ge=0, le=U64_MAX)]
Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$", to_lower=True)]
NodeId = Annotated[str, StringConstraints(pattern=f"^{NODE_ID_PATTERN.pattern}$")]
NodeIds = Annotated[tuple[NodeId, ...], Field(min_length=1, max_length=MAX_TARGET_NODES)]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CheckpointNotification(BaseModel):
    """One checkpoint announcement; immutable once parsed."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    model_path: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    model_name: str = ""
    version: Uint64 = 0
    saved_at: AwareDatetime = Field(default_factory=_utc_now)
    training_step: Uint64 = 0
    metadata: dict[str, str] = Field(default_factory=dict)
    sha256: Hex64 | None = None
    force: bool = False
    issued_at: AwareDatetime | None = None
    # Targeted (SPEC §11): only these nodes consider the message; the others ack ``ignored``
    # and the publisher does not move ``:latest``. None: every node.
    nodes: NodeIds | None = None
    # The instance the message was published for (our publishers sign it in, with a secret):
    # a node refuses a message of another instance replayed on its channel (issue 24).
    instance: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    signature: Hex64 | None = None

    @field_validator("model_path")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("model_path must not contain NUL characters")
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _stringify_metadata(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            return value  # the strict dict check rejects it with a clear message
        out: dict[object, object] = {}
        for key, item in value.items():
            if isinstance(item, bool):
                out[key] = "true" if item else "false"
            elif isinstance(item, numbers.Integral):  # numpy integers too
                out[key] = str(int(item))
            elif isinstance(item, numbers.Real):  # float(): numpy 2 reprs "np.float64(0.5)"
                out[key] = repr(float(item))
            else:
                out[key] = item
        return out

    @field_validator("saved_at", "issued_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    @field_serializer("saved_at", "issued_at")
    def _rfc3339(self, value: datetime | None) -> str | None:
        return None if value is None else rfc3339(value)

    # -- parsing ---------------------------------------------------------------------------

    @classmethod
    def from_message(
        cls, data: bytes | str, *, secret: str | bytes | None = None
    ) -> CheckpointNotification:
        """Parse one channel message; raise :class:`InvalidNotification` with a reason.

        With ``secret``, the message must carry a valid ``signature`` (see common.signing).
        """
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
        if len(raw) > MAX_MESSAGE_BYTES:
            raise InvalidNotification(
                f"message is {len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit",
                reason="oversize",
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidNotification(f"message is not UTF-8: {exc}", reason="not_utf8") from None
        try:
            obj = json.loads(text, parse_constant=_reject_constant)
        except ValueError as exc:
            raise InvalidNotification(f"message is not JSON: {exc}", reason="not_json") from None
        except RecursionError:
            raise InvalidNotification(
                "message is nested too deeply to be a notification", reason="too_deep"
            ) from None
        if not isinstance(obj, dict):
            raise InvalidNotification(
                f"message must be a JSON object, got {type(obj).__name__}", reason="not_object"
            )
        if b"\\u" in raw:  # a lone surrogate can only come from a \u escape (raw is UTF-8)
            _reject_lone_surrogates(obj)
        if secret is not None:
            verify_payload(obj, secret)
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise InvalidNotification(_describe(exc), reason="invalid_field") from None

    # -- output ----------------------------------------------------------------------------

    def wire_dict(self) -> dict[str, Any]:
        """The JSON object sent on the wire: the six Rust fields, then the optional ones."""
        out: dict[str, Any] = self.model_dump(
            mode="json",
            include={
                "model_path",
                "model_name",
                "version",
                "saved_at",
                "training_step",
                "metadata",
            },
        )
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        if self.force:
            out["force"] = True
        if self.issued_at is not None:
            out["issued_at"] = rfc3339(self.issued_at)
        if self.nodes is not None:
            out["nodes"] = list(self.nodes)
        if self.instance is not None:
            out["instance"] = self.instance
        if self.signature is not None:
            out[SIGNATURE_FIELD] = self.signature
        return out

    def for_instance(self, instance_id: str) -> bool:
        """Whether this message may be judged by a node of ``instance_id`` (one that names no
        instance may: a raw ``redis-cli PUBLISH``)."""
        return self.instance is None or self.instance == instance_id

    def targets(self, node_id: str) -> bool:
        """Whether ``node_id`` is to consider this message (every node unless ``nodes``)."""
        return self.nodes is None or node_id in self.nodes

    def to_json(self) -> str:
        """Compact JSON of :meth:`wire_dict`."""
        return json.dumps(self.wire_dict(), separators=(",", ":"), ensure_ascii=False)

    def signed(self, secret: str | bytes, instance: str | None = None) -> CheckpointNotification:
        """A copy carrying the HMAC-SHA256 signature of its canonical JSON (and, given,
        ``instance``, signed with the rest: a replay on another instance's channel is
        refused there)."""
        unsigned = self.model_copy(update={"signature": None})
        if instance is not None:
            unsigned = unsigned.model_copy(update={"instance": instance})
        return unsigned.model_copy(update={"signature": sign_payload(unsigned.wire_dict(), secret)})


def rfc3339(value: datetime) -> str:
    """``value`` in UTC as RFC 3339 with a ``Z``."""
    return value.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"


def message_digest(data: bytes | str) -> str:
    """SHA-1 hex of a message's exact bytes: the digest Redis' ``redis.sha1hex`` computes,
    so a node and a script can tell whether ``:latest`` still holds a given message."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _reject_lone_surrogates(obj: object) -> None:
    """JSON may escape half of a UTF-16 pair (``"\\ud800"``); such a string cannot be
    encoded, signed, logged or used as a path, so the message is refused here."""
    if holds_lone_surrogate(obj):
        raise InvalidNotification(
            "message holds a lone UTF-16 surrogate escape", reason="bad_unicode"
        )


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "invalid notification: " + "; ".join(parts)
