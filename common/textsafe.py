"""Untrusted text made safe for one log line: :func:`printable`; and
:func:`holds_lone_surrogate`, for text parsed from JSON that cannot be encoded at all.

A value that came from a request or a message (a path, a field, a reason) must never forge a
log line: a newline in it would start a line of the attacker's choosing, an ESC sequence
would rewrite the terminal, U+2028 breaks lines in some viewers. ``printable`` escapes every
character that ``str.isprintable()`` refuses (C0 and C1 controls, DEL, U+2028/U+2029, lone
surrogates, bidi and other format characters, unassigned code points) the way ``repr``
would, escapes the backslash so that an escape is never ambiguous, and cuts long values.
"""

from __future__ import annotations

__all__ = ["holds_lone_surrogate", "printable"]

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


def holds_lone_surrogate(value: object) -> bool:
    """Whether ``value`` (parsed JSON: strings, dict keys and values, lists) holds a string
    with half of a UTF-16 pair. JSON may escape one (``"\\ud800"``) and Python's reader
    accepts it, but such a string cannot be encoded as UTF-8, so it cannot be signed,
    logged, compared with a file's bytes or used as a path."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings = [item]
        elif isinstance(item, dict):
            strings = [k for k in item if isinstance(k, str)]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False
