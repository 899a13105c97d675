"""Untrusted text in log lines: control characters escaped, long values cut.

A value from a notification (a ``model_path`` holding ``"\\n2026-… INFO … serving …"``) or from
a request must never start a new log line or reach a terminal as an escape sequence.
"""

from __future__ import annotations

__all__ = ["printable"]

_SAFE = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _SAFE:
        return _SAFE[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _unsafe(char: str) -> bool:
    code = ord(char)
    return (
        code < 0x20
        or 0x7F <= code < 0xA0
        or code in (0x2028, 0x2029, 0x85)
        or 0xD800 <= code < 0xE000  # a lone surrogate cannot even be encoded
    )


def printable(text: object, limit: int = 300) -> str:
    """``str(text)`` with control characters escaped, at most ``limit`` characters of it."""
    value = text if isinstance(text, str) else str(text)
    cut = value[:limit]
    out = "".join(_escape(c) if _unsafe(c) else c for c in cut)
    if len(value) > limit:
        out += f"… ({len(value)} characters)"
    return out
