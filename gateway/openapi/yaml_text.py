"""A JSON-shaped document (dicts, lists, strings, numbers, booleans, null) as block-style YAML.

PyYAML's dumper spends most of its time in its Python representer, C emitter or not (130 ms for
the example config's document, seconds for a large one); this writes the same data directly,
about ten times faster. A string is written plain only when every YAML reader reads it back as
that string, whatever schema it resolves plain scalars by (YAML 1.1's, as PyYAML and Go's yaml.v2
do: `y`, `no`, `on`, `0o17`, sexagesimals, dates; YAML 1.2's core, as js-yaml and Go's yaml.v3
do: `1e3`, `0x1F`...): a word starting with a letter, `_` or `/`, of letters, digits and `_./:-`
(so no number, date or `.inf`), not ending in `:` and not a boolean or null of either schema.
Every other string is double-quoted with JSON's escapes (which YAML shares), so
`yaml.safe_load(dump(data)) == data`. Keys keep their order; nothing is written as an alias.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

import orjson

# Words no YAML reader types or takes for syntax in block context (a leading digit, `.`, sign or
# space could make a number, date, `.inf` or syntax; `:` at the end would make a key).
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./:-]*(?<!:)")
# The plain words YAML 1.1 (booleans, null) or 1.2's core schema types, in any case.
_TYPED_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null"})
# Characters a YAML stream may not carry raw (and line breaks JSON leaves unescaped).
_UNPRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")


def dump(data: Any) -> str:
    """`data` as a YAML document (a mapping or sequence at the top, as OpenAPI's are)."""
    lines: list[str] = []
    if isinstance(data, dict | list) and data:
        _block(data, "", lines)
    else:
        lines.append(_flow(data))
    lines.append("")
    return "\n".join(lines)


def _block(data: dict[str, Any] | list[Any], indent: str, lines: list[str]) -> None:
    """A non-empty mapping or sequence, one entry per line at `indent`."""
    if isinstance(data, dict):
        for key, value in data.items():
            head = f"{indent}{_string(key)}:"
            if isinstance(value, dict | list) and value:
                lines.append(head)
                # A sequence under a key may stay at the key's indent, as PyYAML writes it.
                _block(value, indent if isinstance(value, list) else indent + "  ", lines)
            else:
                lines.append(f"{head} {_flow(value)}")
        return
    for item in data:
        if isinstance(item, dict | list) and item:
            start = len(lines)
            _block(item, indent + "  ", lines)
            lines[start] = f"{indent}- {lines[start][len(indent) + 2:]}"  # the first entry on the dash's line
        else:
            lines.append(f"{indent}- {_flow(item)}")


def _flow(value: Any) -> str:
    """A scalar, or an empty mapping or sequence."""
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if value == {}:
        return "{}"
    if value == []:
        return "[]"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    # YAML 1.1 reads an exponent without a fraction (`1e+300`) as a string.
    if "." not in text and "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{'' if exponent[0] in '+-' else '+'}{exponent}"
    return text


@lru_cache(maxsize=65536)
def _string(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _TYPED_WORDS:
        return text
    quoted = orjson.dumps(text).decode()
    return _UNPRINTABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", quoted)
