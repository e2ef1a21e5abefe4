"""The served names and their contracts (the example config plus tests/fuzz/harness.py's TF
Serving models), request builders, and the hypothesis settings every property shares."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.fuzz.harness import Request, examples
from tests.fuzz.oracle import Expect
from tests.fuzz.strategies import (
    FLOAT,
    INT,
    STRING,
    Field,
    Headers,
    common_headers,
    encoded_body,
    texts,
    to_body,
)

INCREMENT = {"number": Field(INT, (-1,))}
SCALER = {"features": Field(FLOAT, (-1, 3)), "unit": Field(STRING, ())}
TOY = {"input_1": Field(FLOAT, (-1, 2))}
ECHO = {"text": Field(STRING, (-1,))}
MATRIX = {"x": Field(FLOAT, (-1, -1))}

# name -> (inputs, output names)
APPLICATIONS: dict[str, tuple[dict[str, Field], frozenset[str]]] = {
    "increment_app": (INCREMENT, frozenset({"number"})),
    "scaler_app": (SCALER, frozenset({"scaled", "rows", "unit"})),
    "toy_app": (TOY, frozenset({"output_1"})),
    "echo_app": (ECHO, frozenset({"text", "text_bytes"})),
    "matrix_app": (MATRIX, frozenset({"y"})),
}
MODELS: dict[str, tuple[dict[str, Field], frozenset[str]]] = {
    "increment_model": APPLICATIONS["increment_app"],
    "scaler_model": APPLICATIONS["scaler_app"],
    "toy": APPLICATIONS["toy_app"],
    "toy_double": (TOY, frozenset({"output_1"})),
    "echo": APPLICATIONS["echo_app"],
    "matrix_model": APPLICATIONS["matrix_app"],
}
# The versions and labels each model has: local ones version 1, Toy 1 and 2 with labels.
VALID_SUFFIXES = {name: ["", "/versions/1"] for name in MODELS}
VALID_SUFFIXES["toy"] = ["", "/versions/1", "/versions/2", "/labels/stable", "/labels/canary"]
TF_NAMES = {"Toy": "toy", "Toy_double": "toy_double", "Echo": "echo"}  # TF Serving's names reach them too


def fuzz_settings(default_examples: int) -> settings:
    """A fixed number of examples, derandomized (the same inputs on every run; `FUZZ_RANDOM=1`
    draws new ones, `--hypothesis-seed` picks them), no deadline."""
    return settings(max_examples=examples(default_examples), deadline=None,
                    derandomize=not os.environ.get("FUZZ_RANDOM"), database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


junk_segment = texts.filter(bool).map(lambda text: quote(text.encode("utf-8", "surrogatepass"), safe=""))
huge_version = st.sampled_from(["0", "3", "2147483648", "4294967296", "9223372036854775807", "9223372036854775808",
                                "18446744073709551616", "99999999999999999999", "1" * 400, "0001", "01"])


@st.composite
def served_name(draw: st.DrawFn, table: dict[str, Any], valid: bool = False) -> tuple[str, str | None]:
    """(path segment, the table's name it reaches or None): a served name (always when
    `valid`, by TF Serving's name now and then), else junk."""
    choice = 2 if valid else draw(st.sampled_from([2] * 12 + [1, 1, 0]))
    if choice == 0:
        return draw(junk_segment), None
    if choice == 1 and table is MODELS:
        tf_name = draw(st.sampled_from(sorted(TF_NAMES)))
        return tf_name, TF_NAMES[tf_name]
    name = draw(st.sampled_from(sorted(table)))
    return name, name


_suffixes = st.sampled_from(["", "", "", "", "/versions/1", "/versions/1", "/versions/2", "/labels/stable",
                             "/labels/canary"])
model_suffix = st.one_of(
    _suffixes, _suffixes, _suffixes, _suffixes, _suffixes, _suffixes,
    huge_version.map(lambda version: f"/versions/{version}"),
    junk_segment.map(lambda label: f"/labels/{label}"),
)


def post(path: str, body: bytes, headers: Headers) -> Request:
    return Request("POST", path, tuple(headers), body)


def suffix_for(name: str | None, valid: bool) -> st.SearchStrategy[str]:
    """A version or label path for model `name`: one it has when `valid`, else any."""
    return st.sampled_from(VALID_SUFFIXES[name]) if valid and name else model_suffix


@st.composite
def json_body(draw: st.DrawFn, document: st.SearchStrategy[Any], valid: bool = False) -> tuple[bytes, Headers]:
    """A document as body bytes with the request's headers: as it is with well-formed headers
    when `valid` (and half the other times), else maybe truncated, mutated or gzip, with junk
    headers."""
    text = to_body(draw(document))
    if valid or draw(st.booleans()):
        return text, draw(common_headers(benign=True))
    body, encoding = draw(encoded_body(text))
    return body, [*draw(common_headers(benign=False)), *encoding]


def outputs_of(table: dict[str, tuple[dict[str, Field], frozenset[str]]], name: str | None, *,
               binary: bool = False) -> Expect:
    if name is None:
        return Expect(binary=binary)
    return Expect(keys=(table[name][1],), binary=binary)
