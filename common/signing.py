"""HMAC-SHA256 signatures over the canonical JSON of a notification (SPEC §2, ``signature``).

The canonical form is the received JSON object without its ``signature`` member, dumped with
sorted keys, no whitespace and UTF-8 text (``ensure_ascii=False``). Any field added, removed
or changed after signing changes it, so a forged or altered message fails verification.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from common.errors import InvalidNotification

__all__ = ["SIGNATURE_FIELD", "canonical_json", "sign_payload", "verify_payload"]

SIGNATURE_FIELD = "signature"


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: ``payload`` less its signature, sorted and compact."""
    body = {k: v for k, v in payload.items() if k != SIGNATURE_FIELD}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign_payload(payload: Mapping[str, Any], secret: str | bytes) -> str:
    """Hex HMAC-SHA256 of ``canonical_json(payload)`` under ``secret``."""
    return hmac.new(_key(secret), canonical_json(payload), hashlib.sha256).hexdigest()


def verify_payload(payload: Mapping[str, Any], secret: str | bytes) -> None:
    """Raise :class:`InvalidNotification` unless ``payload`` carries a valid signature."""
    given = payload.get(SIGNATURE_FIELD)
    if given is None:
        raise InvalidNotification(
            "unsigned message while a notify secret is set", reason="unsigned"
        )
    if not isinstance(given, str):
        raise InvalidNotification("signature must be a hex string", reason="bad_signature")
    try:
        expected = sign_payload(payload, secret)
    except (ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidNotification(
            f"message cannot be put in canonical form: {type(exc).__name__}",
            reason="bad_signature",
        ) from None
    if not hmac.compare_digest(expected, given.lower()):
        raise InvalidNotification("signature does not match the message", reason="bad_signature")
