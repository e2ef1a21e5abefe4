"""The dialect rules of the application route (gateway/intake.py), one case per rule."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.intake import Dialect, dialect_of

X = {"x": object()}
V2_X = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}


@pytest.mark.parametrize(("body", "names", "dialect"), [
    ({"x": [1]}, X, Dialect.NATIVE),  # rule 1
    ([1, 2], X, Dialect.NATIVE),
    ({"inputs": [1, 2]}, {"inputs": 1}, Dialect.NATIVE),  # rule 2: an input called inputs
    ({"inputs": [V2_X]}, {"inputs": 1}, Dialect.NATIVE),
    ({"instances": [1], "k": 2}, {"instances": 1, "k": 1}, Dialect.NATIVE),
    ({"instances": [{"x": 1}]}, X, Dialect.TF_ROW),  # rule 4
    ({"instances": [1], "signature_name": "serving_default"}, X, Dialect.TF_ROW),
    ({"inputs": [V2_X], "id": "a", "outputs": [{"name": "y"}], "parameters": {}}, X, Dialect.V2),  # rule 5
    ({"inputs": [{"name": "x", "data": [1]}]}, X, Dialect.V2),
    ({"inputs": {"x": [1]}}, X, Dialect.TF_COLUMNAR),  # rule 6
    ({"inputs": [1, 2]}, X, Dialect.TF_COLUMNAR),
    ({"inputs": []}, X, Dialect.TF_COLUMNAR),
    ({"inputs": [{"name": "x"}]}, X, Dialect.TF_COLUMNAR),  # a name alone is no v2 tensor
    ({"inputs": [V2_X]}, {}, Dialect.V2),  # no contract inputs: structure alone
])
def test_dialects(body: object, names: dict[str, object], dialect: Dialect) -> None:
    assert dialect_of(body, names) is dialect


def test_a_body_naming_an_input_besides_the_dialect_keys_is_native() -> None:
    """Its other keys are then the native codec's unknown inputs: a typo is named, not a key it holds."""
    assert dialect_of({"instances": [1], "x": [1]}, {"x": None}) is Dialect.NATIVE
    assert dialect_of({"inputs": [V2_X], "id": 3, "typo": 1}, {"inputs": None, "id": None}) is Dialect.NATIVE


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"instances": [1], "inputs": [1]}, "inputs", "not both"),  # rule 3
    ({"inputs": [V2_X, 3]}, "inputs", "mixes"),  # rule 5
    ({"inputs": [V2_X], "signature_name": "s"}, "signature_name", "Open Inference Protocol body"),
    ({"inputs": {"x": 1}, "id": "a"}, "id", "not one of its keys"),
])
def test_ambiguous_bodies_are_400s_naming_the_rule(body: object, field: str, words: str) -> None:
    with pytest.raises(BadRequest) as caught:
        dialect_of(body, X)
    assert caught.value.field == field
    assert words in caught.value.message
