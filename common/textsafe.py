"""Untrusted text made safe for one log line: :func:`printable`.

A value that came from a request or a message (a path, a field, a reason) must never forge a
log line: a newline in it would start a line of the attacker's choosing, an ESC sequence
would rewrite the terminal, U+2028 breaks lines in some viewers. ``printable`` escapes every
character that ``str.isprintable()`` refuses (C0 and C1 controls, DEL, U+2028/U+2029, lone
surrogates, bidi and other format characters, unassigned code points) the way ``repr``
would, escapes the backslash so that an escape is never ambiguous, and cuts long values.
"""

from __future__ import annotations

__all__ = ["printable"]

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def printable(text: object, limit: int = 300) -> str:
    """``text`` (``str()`` of any other object) on one line: at most ``limit`` characters of
    escaped text, then ``…(N chars)`` with the original length when it was cut."""
    value = text if isinstance(text, str) else str(text)
    if len(value) <= limit and value.isprintable() and "\\" not in value:
        return value  # the common case: nothing to do
    out: list[str] = []
    size = 0
    for char in value:
        piece = _escape(char)
        size += len(piece)
        if size > limit:
            return "".join(out) + f"…({len(value)} chars)"
        out.append(piece)
    return "".join(out)


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
