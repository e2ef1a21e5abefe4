"""The YAML rendering of the document reads back (PyYAML's safe loader) as the data written, and
no string is written plain that another YAML reader (YAML 1.1's or 1.2's core schema) would type."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import orjson
import yaml

from gateway.manifests import load_config
from gateway.openapi import document_for_config, to_yaml
from gateway.openapi.yaml_text import dump
from gateway.settings import Settings
from tests.conftest import CONFIG_DIR

AWKWARD = ["", " ", " a", "a ", "yes", "No", "on", "OFF", "null", "Null", "~", "true", "y", "n", "1", "1.0", "3.1.0",
           "1e5", "0x1F", "0o17", "12:30", "2001-12-14", ".inf", "-.inf", ".nan", "<<", "=", "*a", "&a", "!t", "%x",
           "@x", "`x", "|", ">", "?", "-", "- a", "a #b", "a#b", "a:", "a: b", "a:b", "http://x:1/y", "#/comp",
           "'q'", '"q"', "[1]", "{a: 1}", "a, b", "é", "名前", "line\nbreak", "tab\t", "\u2028", "\x85", "\x7f",
           "\ufeff", "back\\slash", "emoji \U0001f600", "$ref", "(x)", "/gateway/models/a.b"]
# What readers other than PyYAML type: YAML 1.2 core numbers (js-yaml, Go's yaml.v3), YAML 1.1's
# full boolean set and numbers (Go's yaml.v2), in any case, with spaces around.
OTHER_READERS = ["1e3", "1E3", "-1e3", "+1", "0o17", "0O17", "0x1F", "0b101", "017", "1_000", "1_000.5", "190:20:30",
                 ".5", "1.", "+.inf", ".Inf", ".NaN", "NaN", "Y", "N", "yEs", "oN", "Off", "nULL", "TRUE", "False",
                 "2001-12-14t21:59:43.10-05:00", "2002-12-14", " y", "n ", "x", "v1", "_", "_1", "/", "a:b:",
                 "a:b", "https://spec.openapis.org/oas/3.1/dialect/base", "3.1.0", "1.2.3.4"]
# YAML 1.1's types (https://yaml.org/type/) and YAML 1.2's core schema (10.3.2), as regexes.
TYPED = re.compile("|".join((
    r"y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF",
    r"~|null|Null|NULL|",
    r"[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+",
    r"[-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*",
    r"[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)",
    r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt]|[ \t]+)?.*",
    r"<<|=",
    r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+",
    r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?",
)))


def test_awkward_strings_numbers_and_nesting_read_back_as_written() -> None:
    data: dict[str, Any] = {text: text for text in AWKWARD}
    data["numbers"] = [0, -1, 2**64, 1.5, -0.0, 1e300, 5e-324, 1e-7, 3.4028234663852886e38, math.inf, -math.inf]
    data["nested"] = {"empty": {}, "none": [], "lists": [[1, [2, []]], [{"a": [{}]}]], "null": None,
                      "flags": [True, False], "items": [{"k": "v", "l": ["x", {"m": {"n": 1}}]}, {}]}
    data["keys"] = {text: [text] for text in AWKWARD}
    written = dump(data)
    assert yaml.safe_load(written) == data
    assert list(yaml.safe_load(written)) == list(data)
    assert "&id" not in written
    nan = yaml.safe_load(dump({"x": math.nan}))["x"]
    assert math.isnan(nan)


def _plain_scalars(node: yaml.Node | None) -> Iterator[str]:
    """The scalars of a composed YAML document written plain (no quotes)."""
    if isinstance(node, yaml.ScalarNode):
        if node.style is None:
            yield node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _plain_scalars(key)
            yield from _plain_scalars(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _plain_scalars(item)


def test_no_string_is_written_plain_that_a_yaml_1_1_or_1_2_reader_would_type() -> None:
    texts = AWKWARD + OTHER_READERS
    data: dict[str, Any] = {"values": texts, "keys": {text: text for text in texts}, "flags": [True, None, 1, 1.5]}
    written = dump(data)
    assert yaml.safe_load(written) == data
    plain = list(_plain_scalars(yaml.compose(written)))
    strings = [text for text in plain if not TYPED.fullmatch(text)]
    assert sorted(set(plain) - set(strings)) == ["1", "1.5", "null", "true"]  # the non-strings only
    assert {"x", "v1", "_", "_1", "/", "a:b", "https://spec.openapis.org/oas/3.1/dialect/base",
            "/gateway/models/a.b"} <= set(strings)  # plain words stay plain
    for text in ("y", "n", "Y", "yEs", "oN", "1e3", "0o17", "0x1F", "1_000", ".inf", "2002-12-14", "3.1.0", " y"):
        assert f"- {orjson.dumps(text).decode()}\n" in written, text


def test_the_document_as_yaml_is_the_document() -> None:
    document = document_for_config(load_config(CONFIG_DIR), Settings())
    text = to_yaml(document)
    assert yaml.safe_load(text) == document
    assert text.startswith('openapi: "3.1.0"\njsonSchemaDialect: https://spec.openapis.org/oas/3.1/dialect/base\n')
    plain = set(_plain_scalars(yaml.compose(text)))
    assert not {word for word in plain if TYPED.fullmatch(word)} - {"true", "false", "null"} - {
        str(number) for number in _numbers(document)}


def _numbers(data: Any) -> Iterator[Any]:
    """The numbers in a JSON-shaped document."""
    if isinstance(data, dict):
        for value in data.values():
            yield from _numbers(value)
    elif isinstance(data, list):
        for item in data:
            yield from _numbers(item)
    elif isinstance(data, int | float) and not isinstance(data, bool):
        yield data
