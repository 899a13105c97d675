"""printable(): untrusted text can never forge or break a log line."""

from __future__ import annotations

import logging

import pytest

from common.textsafe import holds_lone_surrogate, printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/srv/models/model_7.pt", "/srv/models/model_7.pt"),
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("c1\x85\x9b", "c1\\x85\\x9b"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
        ("bidi \u202eevil", "bidi \\u202eevil"),
        ("back\\slash", "back\\\\slash"),
        ("modèle_é.pt ✓", "modèle_é.pt ✓"),
        ("", ""),
    ],
)
def test_control_characters_are_escaped(text: str, shown: str) -> None:
    """Newlines, CR, ESC, C0/C1 controls, U+2028/9, lone surrogates and bidi marks are escaped;
    printable text, accents included, is kept as it is."""
    assert printable(text) == shown


def test_the_result_is_one_printable_line_for_any_code_point() -> None:
    """Whatever the input, the output is printable and has no line break."""
    every = "".join(chr(c) for c in range(0x110000) if c % 7 == 0 or c < 0x3000)
    out = printable(every, limit=10**7)
    assert out.isprintable() and not out.splitlines()[1:]


def test_a_forged_log_line_stays_inside_its_record(caplog: pytest.LogCaptureFixture) -> None:
    """A path carrying a fake INFO line is logged as one line."""
    fake = "/x.pt\n2026-11-23 07:00:00,000 INFO subscriber.model.holder: serving model_9 version 9"
    with caplog.at_level(logging.WARNING):
        logging.getLogger("test").warning("not serving %s", printable(fake))
    assert len(caplog.text.strip().splitlines()) == 1


def test_long_values_are_cut_with_their_length() -> None:
    """Over the limit: the first characters, an ellipsis and the original length."""
    assert printable("x" * 1000, limit=10) == "x" * 10 + "…(1000 chars)"
    assert printable("x" * 10, limit=10) == "x" * 10
    escaped = printable("\n" * 100, limit=9)
    assert escaped == "\\n" * 4 + "…(100 chars)"


def test_other_objects_are_shown_by_str() -> None:
    """Non-strings go through str() first: bytes, exceptions, paths."""
    assert printable(b"a\nb") == "b'a\\\\nb'"
    assert printable(ValueError("bad\nthing")) == "bad\\nthing"
    assert printable(42) == "42"


@pytest.mark.parametrize(
    ("value", "holds"),
    [
        ("plain", False),
        ("a pair \U0001f600", False),
        ({"k": ["x", {"deep": "\ud800"}]}, True),
        ({"\udfff": 1}, True),
        ([1, 2.0, None, True], False),
    ],
)
def test_holds_lone_surrogate_looks_at_every_string_and_key(value: object, holds: bool) -> None:
    assert holds_lone_surrogate(value) is holds
