"""HMAC-SHA256 signatures over the canonical JSON of a notification (SPEC §2, ``signature``),
and of what nodes sign with the same secret (acks, registry entries).

The canonical form is the received JSON object without its ``signature`` member, dumped with
sorted keys, no whitespace and UTF-8 text (``ensure_ascii=False``). Any field added, removed
or changed after signing changes it, so a forged or altered message fails verification.

Each kind of signed object has its own key, derived from the secret (:data:`PURPOSES`): a
notification is signed with the secret itself (as the first release signed it, and the Rust
readers check it), an ack and a registry entry with ``HMAC(secret, "fks/<purpose>")``. A
node acks every message it refuses, copying its ``version``, ``sha256`` and ``model_path``
into the ack; with one key for all, a signed ack would also be a valid signed notification
(the parser ignores unknown fields), and anyone who could make a node refuse a message
could make the fleet serve it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any, Literal

from common.errors import InvalidNotification

__all__ = [
    "PURPOSES",
    "SIGNATURE_FIELD",
    "Purpose",
    "canonical_json",
    "sign_payload",
    "verify_payload",
]

SIGNATURE_FIELD = "signature"
Purpose = Literal["notification", "ack", "node-entry"]
PURPOSES: tuple[Purpose, ...] = ("notification", "ack", "node-entry")


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: ``payload`` less its signature, sorted and compact."""
    body = {k: v for k, v in payload.items() if k != SIGNATURE_FIELD}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _key(secret: str | bytes, purpose: Purpose = "notification") -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    if purpose == "notification":
        return raw
    return hmac.new(raw, f"fks/{purpose}".encode(), hashlib.sha256).digest()


def sign_payload(
    payload: Mapping[str, Any], secret: str | bytes, purpose: Purpose = "notification"
) -> str:
    """Hex HMAC-SHA256 of ``canonical_json(payload)`` under ``secret``'s key for
    ``purpose``."""
    return hmac.new(_key(secret, purpose), canonical_json(payload), hashlib.sha256).hexdigest()


def verify_payload(
    payload: Mapping[str, Any], secret: str | bytes, purpose: Purpose = "notification"
) -> None:
    """Raise :class:`InvalidNotification` unless ``payload`` carries a valid signature (for
    ``purpose``: an ack's signature does not verify as a notification's)."""
    given = payload.get(SIGNATURE_FIELD)
    if given is None:
        raise InvalidNotification(
            "unsigned message while a notify secret is set", reason="unsigned"
        )
    if not isinstance(given, str):
        raise InvalidNotification("signature must be a hex string", reason="bad_signature")
    try:
        expected = sign_payload(payload, secret, purpose)
    except (ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidNotification(
            f"message cannot be put in canonical form: {type(exc).__name__}",
            reason="bad_signature",
        ) from None
    if not hmac.compare_digest(expected, given.lower()):
        raise InvalidNotification("signature does not match the message", reason="bad_signature")
