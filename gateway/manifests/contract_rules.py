"""The rules contracts keep within an application, on `tensorcodecs` specs, so that the same
code checks contracts manifests declare (at load) and those discovered from backends (at run
time):
- every variant of a stage has the stage's input and output contract: the same names, the
  same dtypes (as on the wire: `bytes` is `string`), compatible shapes;
- each input of stage N+1 is an output of stage N by name, with its dtype and a compatible
  shape (outputs stage N+1 does not take are dropped: a note, not an error).
Shapes are compatible when either is None (any shape), or both have the same rank and each
dimension is equal or -1 on one side.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from tensorcodecs import TensorSpec
from tensorcodecs.contract import Shape

# numpy dtype kinds whose values compare with one another (a shadow's answer with the live one's):
# signed and unsigned integers are one kind, float32 and float64 another.
DTYPE_KINDS = {"i": "int", "u": "int", "b": "bool", "f": "float", "c": "complex", "U": "text", "S": "text",
               "O": "text"}


def comparable_output(mine: TensorSpec | None, theirs: TensorSpec | None) -> bool:
    """Whether a shadow's output `mine` can still be compared with the live variant's `theirs`
    (gateway.shadow_compare) despite a difference: one only the shadow gives (not compared), or
    both of one dtype kind (a float64 re-export of a float32 model; a shape the comparison judges)."""
    if mine is None or theirs is None:
        return mine is not None
    kinds = [DTYPE_KINDS.get(spec.dtype.numpy.kind, spec.dtype.numpy.kind) for spec in (mine, theirs)]
    return kinds[0] == kinds[1]


def compatible_shapes(a: Shape | None, b: Shape | None) -> bool:
    """Whether a tensor of one shape may be one of the other: either is any shape, or the same
    rank with each dimension equal or -1 on one side."""
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def differences(kind: str, mine: Mapping[str, TensorSpec], theirs: Mapping[str, TensorSpec],
                 other: str) -> Iterator[str]:
    for name in theirs:
        if name not in mine:
            yield f"has no {kind} {name!r}, which {other} has"
    for name, spec in mine.items():
        reference = theirs.get(name)
        if reference is None:
            yield f"has {kind} {name!r}, which {other} has not"
        elif spec.dtype.enum != reference.dtype.enum:
            yield f"{kind} {name!r} is {spec.dtype} but {other} has it as {reference.dtype}"
        elif not compatible_shapes(spec.shape, reference.shape):
            yield f"{kind} {name!r} has shape {spec.shape_text()} but {other} has it with shape " \
                  f"{reference.shape_text()}"


def spec_text(spec: TensorSpec) -> str:
    return f"{spec.dtype} {spec.shape_text()}"


def edge_differences(taken: Mapping[str, TensorSpec], produced: Mapping[str, TensorSpec],
                     given: str) -> Iterator[tuple[str, str]]:
    """How the inputs a stage takes do not fit the outputs the stage before it gives (`given`
    names that stage): (input name, what is wrong) for each."""
    for name, spec in taken.items():
        output = produced.get(name)
        if output is None:
            outputs = ", ".join(repr(n) for n in produced) or "none"
            yield name, f"is not an output of {given} (its outputs: {outputs})"
        elif output.dtype.enum != spec.dtype.enum:
            yield name, f"is {spec.dtype} but {given} outputs it as {output.dtype}"
        elif not compatible_shapes(spec.shape, output.shape):
            yield name, f"has shape {spec.shape_text()} but {given} outputs it with shape {output.shape_text()}"
