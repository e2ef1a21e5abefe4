"""The YAML rendering of the document reads back (PyYAML's safe loader) as the data written."""

from __future__ import annotations

import math
from typing import Any

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


def test_the_document_as_yaml_is_the_document() -> None:
    document = document_for_config(load_config(CONFIG_DIR), Settings())
    text = to_yaml(document)
    assert yaml.safe_load(text) == document
    assert text.startswith("openapi: 3.1.0\njsonSchemaDialect: https://spec.openapis.org/oas/3.1/dialect/base\n")
