"""Compose's variable interpolation, for tests that cannot run `docker compose config`.

The rules are those of compose-go's ``template`` package (``template/template.go``), which
`docker compose` applies to every string value of the file (never to keys), after the YAML is
parsed (anchors and merge keys resolved) and before services are picked by profile:

- ``$$`` is a literal ``$`` (a shell variable of a command, say);
- ``$NAME`` and ``${NAME}``: the value, or "" when unset;
- ``${NAME:-x}``: x when unset or empty; ``${NAME-x}``: x when unset;
- ``${NAME:?msg}``: an error when unset or empty; ``${NAME?msg}``: an error when unset;
- ``${NAME:+x}``: x when set and not empty; ``${NAME+x}``: x when set.

Templates nested in ``x`` or ``msg`` are not modelled: :class:`InvalidTemplate` rather than a
guess, as for any ``$`` that starts none of the above.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["InvalidTemplate", "MissingRequired", "Reference", "interpolate", "references"]

PATTERN = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<named>[_a-z][_a-z0-9]*)|\{(?P<braced>[^{}$]*)\}|(?P<invalid>))",
    re.IGNORECASE,
)
BRACED = re.compile(r"(?P<name>[_a-z][_a-z0-9]*)(?:(?P<op>:?[-+?])(?P<arg>.*))?", re.I | re.S)


class InvalidTemplate(ValueError):
    """A ``$`` that starts no template this module models."""


class MissingRequired(LookupError):
    """``${NAME:?msg}`` or ``${NAME?msg}`` met no value: compose refuses the file."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class Reference:
    """One template: ``${name<op><arg>}`` (op "" for ``$name`` and ``${name}``)."""

    name: str
    op: str = ""
    arg: str = ""


def _parse(match: re.Match[str]) -> Reference | None:
    """The template a match of :data:`PATTERN` stands for; None for ``$$``."""
    if match["escaped"]:
        return None
    if match["named"]:
        return Reference(match["named"])
    body = match["braced"]
    parsed = BRACED.fullmatch(body) if body is not None else None
    if parsed is None:
        raise InvalidTemplate(f"not a template this resolver models: {match.string!r}")
    return Reference(parsed["name"], parsed["op"] or "", parsed["arg"] or "")


def _value(ref: Reference, env: Mapping[str, str]) -> str:
    value = env.get(ref.name)
    empty = not value
    if ref.op in (":?", "?") and (value is None or (ref.op == ":?" and empty)):
        raise MissingRequired(ref.name, ref.arg)
    if ref.op in (":-", "-") and (value is None or (ref.op == ":-" and empty)):
        return ref.arg
    if ref.op in (":+", "+"):
        return ref.arg if value is not None and not (ref.op == ":+" and empty) else value or ""
    return value or ""


def _substitute(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        ref = _parse(match)
        return "$" if ref is None else _value(ref, env)

    return PATTERN.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """``node`` (parsed YAML) with every string value interpolated from ``env``; raises
    :class:`MissingRequired` at the first required variable without a value."""
    if isinstance(node, str):
        return _substitute(node, env)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return node


def references(node: Any) -> Iterator[Reference]:
    """Every template in the string values of ``node`` (``$$`` escapes excluded)."""
    if isinstance(node, str):
        for match in PATTERN.finditer(node):
            if (ref := _parse(match)) is not None:
                yield ref
    elif isinstance(node, dict):
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)
