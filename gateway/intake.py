"""Which request dialect a JSON body on `POST /gateway/applications/{name}` speaks, pure.

The application route takes its native body `{"input": value, ...}` and also the bodies of
two other APIs, so that a client of either can call an application unchanged:

- Open Inference Protocol (KServe v2): `{"inputs": [{"name", "shape", "datatype", "data",
  "parameters"?}, ...], "outputs"?, "id"?, "parameters"?}`;
- TensorFlow Serving REST: `{"instances": [...]}` (row format) or `{"inputs": {...} | [...]}`
  (columnar), with an optional `signature_name`.

The rules, in order (the native form wins where they overlap):

1. a body that is not an object, or that has neither `inputs` nor `instances`, is native;
2. a body whose keys are all input names of the application's contract is native, even if an
   input is called `inputs` or `instances`, and so is one that names any input besides those two
   keys (its other keys are then the native codec's unknown inputs, named in its 400);
3. a body with both `instances` and `inputs` is a 400;
4. a body with `instances` is TF row format;
5. a body whose `inputs` is a non-empty list of objects each with `name` and `datatype` (or
   `data`) is v2; a list where only some items are such objects is a 400;
6. a body with `inputs` otherwise is TF columnar;
7. a TF body holds only its tensor key and `signature_name`, a v2 body only `inputs`,
   `outputs`, `id` and `parameters`: any other key (an input name, another dialect's key) is a 400.

The 400s of rules 3, 5 and 7 answer in the native error shape (no dialect could be settled); once
one is, its errors answer in its shape: TF Serving's `{"error": "..."}`, v2's `{"error": "..."}`.

The contract is known before the body is read (a contract its backend describes is asked
first, or the request fails with a 503), so rule 2 always has one to check; were it to have no
inputs, a body is read by its structure alone (rules 3-7), as no native body could fit it.

Rule 1 costs a native body two dict lookups and nothing else: the small native request is the
benchmark's hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from gateway.errors import BadRequest

INPUTS = "inputs"
INSTANCES = "instances"
SIGNATURE_NAME = "signature_name"
_TF_KEYS = frozenset((INPUTS, INSTANCES, SIGNATURE_NAME))
_V2_KEYS = frozenset((INPUTS, "outputs", "id", "parameters"))


class Dialect(Enum):
    """A request dialect; the answer (and its errors) use the same one."""

    NATIVE = "native"  # {"input": value} -> {"output": value}
    TF_ROW = "tensorflow-serving row"  # {"instances": [...]} -> {"predictions": ...}
    TF_COLUMNAR = "tensorflow-serving columnar"  # {"inputs": ...} -> {"outputs": ...}
    V2 = "open-inference-protocol"  # {"inputs": [{...}]} -> {"model_name", "id", "outputs": [...]}


def dialect_of(body: object, input_names: Mapping[str, object]) -> Dialect:
    """The dialect of a parsed JSON body, by the rules above; `input_names` is the contract's
    inputs (any mapping keyed by name). A body that breaks rule 3, 5 or 7 is a BadRequest."""
    if not isinstance(body, dict) or (INPUTS not in body and INSTANCES not in body):
        return Dialect.NATIVE
    if input_names and (all(key in input_names for key in body)
                        or any(key in input_names for key in body if key != INPUTS and key != INSTANCES)):
        return Dialect.NATIVE  # a body naming an input besides these keys is native: its codec names the rest
    if INSTANCES in body:
        if INPUTS in body:
            raise BadRequest("a body holds one of 'instances' (TensorFlow Serving's row format) and "
                             "'inputs' (its columnar format, or the Open Inference Protocol's), not both",
                             field=INPUTS)
        _only(body, _TF_KEYS - {INPUTS}, "a TensorFlow Serving body ('instances')", input_names)
        return Dialect.TF_ROW
    inputs = body[INPUTS]
    if isinstance(inputs, list) and inputs:
        tensors = sum(1 for item in inputs if _is_v2_tensor(item))
        if tensors == len(inputs):
            _only(body, _V2_KEYS, "an Open Inference Protocol body (a list of 'inputs' tensors)", input_names)
            return Dialect.V2
        if tensors:
            raise BadRequest("'inputs' mixes Open Inference Protocol tensors (objects with a name and a "
                             "datatype or data) with other values: each item must be one", field=INPUTS)
    _only(body, _TF_KEYS - {INSTANCES}, "a TensorFlow Serving body ('inputs', columnar)", input_names)
    return Dialect.TF_COLUMNAR


def _is_v2_tensor(item: object) -> bool:
    return isinstance(item, dict) and "name" in item and ("datatype" in item or "data" in item)


def _only(body: Mapping[str, object], allowed: frozenset[str], what: str, input_names: Mapping[str, object]) -> None:
    """A body of one dialect with a key it does not have is refused, naming the rule."""
    for key in body:
        if key not in allowed:
            kind = "an input of the application" if key in input_names else "not one of its keys"
            raise BadRequest(
                f"{what} holds only {', '.join(repr(k) for k in sorted(allowed))}; {key!r} is {kind} "
                "(a native body holds the application's inputs and nothing else)", field=key)
