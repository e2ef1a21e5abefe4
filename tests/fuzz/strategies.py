"""Hypothesis strategies for hostile client input: JSON text written token by token (so that
numbers beyond float64, NaN/Infinity, lone surrogates and deep nesting can all be said),
contract-aware values per field, mutated and gzip bodies, and junk headers."""

from __future__ import annotations

import base64
import gzip
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True once in about `n` draws (hypothesis favours the first of sampled values: False)."""
    return st.sampled_from([False] * (n - 1) + [True])


# ---------------------------------------------------------------- JSON text


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is (a number token Python cannot hold, a deep nest, junk)."""

    text: str


def dumps(value: Any) -> str:
    """JSON text for `value`; floats keep Python's shortest repr, NaN/Infinity as TF's tokens."""
    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # lone surrogates become \ud800 escapes
    if isinstance(value, list):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(key))}:{dumps(item)}" for key, item in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__}")


def to_body(value: Any) -> bytes:
    return dumps(value).encode("utf-8", "surrogatepass")


# Number tokens at the dtypes' edges, and tokens that look like numbers but are not JSON.
NUMBER_TOKENS = [
    "0", "-0", "0.0", "-0.0", "0e0", "1E+39", "1e39", "-1e39", "1e400", "-1e400", "1e-400", "1" + "0" * 400,
    "3.4028235e38", "-3.4028235e38", "3.4028236e38", "3.40282357e38", "3.4028234663852886e38",
    "1.4e-45", "1e-45", "7e-46", "1e-46", "4.9e-324", "2.5e-324", "1.7976931348623157e308", "1.8e308",
    "16777215", "16777216", "16777217", "9007199254740991", "9007199254740993",
    "127", "128", "255", "256", "32767", "32768", "65535", "65536",
    "2147483647", "2147483648", "-2147483648", "-2147483649", "4294967295", "4294967296",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
    "18446744073709551615", "18446744073709551616", "1.0", "1.5", "-1.5", "1e2", "1E2", "0.1",
    "123456789012345678901234567890.5",
]
NOT_JSON_TOKENS = ["+1", "01", ".5", "1.", "0x10", "-", "1e", "nan", "inf", "-NaN", "+Infinity", "Infinity1",
                   "NaNx", "1_000", "\u0661"]
NON_FINITE = [Raw("NaN"), Raw("Infinity"), Raw("-Infinity")]

INT_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1,
             2**64, 10**30, -(10**30)]

ints = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from(INT_EDGES), st.integers())
floats = st.one_of(st.floats(width=32), st.floats(), st.sampled_from([0.0, -0.0, 3.4028234663852886e38,
                                                                      1.401298464324817e-45, 5e-324]))
number_tokens = st.sampled_from([Raw(t) for t in NUMBER_TOKENS])
bad_tokens = st.sampled_from([Raw(t) for t in NOT_JSON_TOKENS])
texts = st.one_of(st.text(max_size=20), st.sampled_from(["", "cm", "\u0000", "\ud800", "\udfff\ud800", "😀",
                                                         "a" * 300, "\u202e", "\uffff"]))


def _b64() -> st.SearchStrategy[Any]:
    valid = st.binary(max_size=40).map(lambda data: {"b64": base64.b64encode(data).decode()})
    invalid = st.one_of(
        st.sampled_from(["!!", "abc", "a===", "====", "YQ", "YQ=", "Y Q==", "\u00e9\u00e9==", "_-_-"]),
        st.text(max_size=12),
    ).map(lambda text: {"b64": text})
    odd = st.sampled_from([{"b64": 1}, {"b64": None}, {"b64": ["YQ=="]}, {"b64": "YQ==", "x": 1}, {"B64": "YQ=="},
                           {}])
    return st.one_of(valid, invalid, odd)


b64_values = _b64()
scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), ints, floats, number_tokens, texts, b64_values, st.sampled_from(NON_FINITE),
    bad_tokens)
any_json: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(texts, children, max_size=3)),
    max_leaves=16,
)

# Around numpy's 64 dimensions and orjson's 1024 levels most, anywhere up to 1100 too.
DEEP_LISTS = st.one_of(st.integers(1, 1100), st.sampled_from([63, 64, 65, 1022, 1023, 1024, 1025]))


@st.composite
def deep_nest(draw: st.DrawFn, depths: st.SearchStrategy[int] = DEEP_LISTS) -> Raw:
    """A value nested deep: lists `depths` deep (the leaf a number, a string, or nothing), a
    ragged pair of them, or objects, or objects and lists in turn (both up to 1100 deep)."""
    leaf = draw(st.sampled_from(["1", "1.5", '"a"', "", "[]", "null", '{"b64":"YQ=="}', "NaN", '"\\ud800"']))
    form = draw(st.sampled_from(["lists", "ragged", "objects", "alternating"]))
    if form == "lists":
        depth = draw(depths)
        return Raw("[" * depth + leaf + "]" * depth)
    if form == "ragged":  # [[[1]], [[1, 2]]] deepened
        depth = draw(depths)
        return Raw("[" + "[" * depth + "1" + "]" * depth + "," + "[" * depth + "1,2" + "]" * depth + "]")
    depth = draw(st.integers(1, 1100))
    if form == "objects":
        return Raw('{"a":' * depth + (leaf or "1") + "}" * depth)
    return Raw('[{"a":' * (depth // 2) + (leaf or "1") + "}]" * (depth // 2))


# ---------------------------------------------------------------- contract-aware values

INT, FLOAT, STRING = "int", "float", "string"


@dataclass(frozen=True)
class Field:
    kind: str  # INT, FLOAT or STRING
    shape: tuple[int, ...]  # -1: any size


def elements(kind: str, *, clean: bool = False) -> st.SearchStrategy[Any]:
    """Values of the field's kind: `clean` ones fit the dtype; else with its edges, and now
    and then anything."""
    if clean:
        if kind == INT:
            return st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([2**31 - 1, -(2**31), 0, -1]))
        if kind == FLOAT:
            return st.one_of(st.floats(width=32, allow_nan=False, allow_infinity=False),
                             st.integers(-(2**24), 2**24))
        return st.one_of(texts, st.binary(max_size=20).map(lambda data: {"b64": base64.b64encode(data).decode()}))
    own: st.SearchStrategy[Any]
    if kind == INT:
        own = st.one_of(ints, number_tokens)
    elif kind == FLOAT:
        own = st.one_of(floats, st.integers(-(2**25), 2**25), number_tokens, st.sampled_from(NON_FINITE))
    else:
        own = st.one_of(texts, b64_values)
    return st.one_of(own, own, own, scalars)


@st.composite
def shaped(draw: st.DrawFn, shape: tuple[int, ...], kind: str, clean: bool = False) -> Any:
    """Nested lists of `shape` (one size drawn per -1 dimension); unless `clean`, a size is
    sometimes off by one and now and then one row is ragged."""
    sizes = []
    for size in shape:
        if size < 0:
            size = draw(st.integers(1, 4) if clean else st.sampled_from([1, 2, 3, 0, 4]))
        elif not clean and draw(one_in(10)):
            size = max(size + draw(st.sampled_from([-1, 1])), 0)
        sizes.append(size)
    return draw(_nested(tuple(sizes), kind, clean))


@st.composite
def _nested(draw: st.DrawFn, sizes: tuple[int, ...], kind: str, clean: bool) -> Any:
    if not sizes:
        return draw(elements(kind, clean=clean))
    rows: list[Any] = [draw(_nested(sizes[1:], kind, clean)) for _ in range(sizes[0])]
    if not clean and len(rows) > 0 and draw(one_in(15)):  # ragged: one row of another shape
        rows[draw(st.integers(0, len(rows) - 1))] = draw(st.one_of(_nested(sizes[2:], kind, clean), st.just([])))
    return rows


def field_value(field: Field) -> st.SearchStrategy[Any]:
    """A value for one contract field: half of them valid, most of the rest of its shape and
    kind with edges and junk among the elements, else anything."""
    clean = shaped(field.shape, field.kind, clean=True)
    right = shaped(field.shape, field.kind)
    wrong_shape = st.one_of(shaped(field.shape[1:], field.kind), shaped((*field.shape, 2), field.kind),
                            st.sampled_from([[], [[]], [[], []], [[[]]]]))
    return st.one_of(clean, clean, clean, clean, clean, right, right, right, wrong_shape, any_json, deep_nest())


@st.composite
def document(draw: st.DrawFn, fields: dict[str, Field], valid: bool = False) -> Any:
    """A native request body `{"input": value, ...}`: `valid`, or with fields missing, extra,
    or of any value."""
    if valid:
        return {name: draw(shaped(field.shape, field.kind, clean=True)) for name, field in fields.items()}
    if draw(one_in(20)):
        return draw(st.one_of(any_json, deep_nest()))  # not an object at all, mostly
    doc: dict[str, Any] = {}
    for name, field in fields.items():
        if not draw(one_in(20)):
            doc[name] = draw(field_value(field))
    if draw(one_in(10)):
        doc.update(draw(st.dictionaries(st.one_of(texts, st.sampled_from(list(fields))), any_json, max_size=2)))
    return doc


@st.composite
def instances(draw: st.DrawFn, fields: dict[str, Field]) -> Any:
    """TF Serving's row format: one value per instance, or an object per instance."""
    count = draw(st.sampled_from([1, 2, 3, 4, 0]))
    if len(fields) == 1 and draw(st.booleans()):
        only = next(iter(fields.values()))
        return [draw(field_value(Field(only.kind, only.shape[1:]))) for _ in range(count)]
    rows = []
    for _ in range(count):
        row: dict[str, Any] = {}
        for name, field in fields.items():
            if not draw(one_in(15)):
                row[name] = draw(field_value(Field(field.kind, field.shape[1:])))
        rows.append(row)
    return rows


SIGNATURES = st.one_of(st.sampled_from(["serving_default", "scaled", "", "increment", "scale", "predict"]),
                       texts, scalars)


@st.composite
def predict_document(draw: st.DrawFn, fields: dict[str, Field], valid: bool = False) -> Any:
    """A /v1 :predict body: `valid` (rows when every input has a batch dimension, else
    columns), or `instances`, `inputs` (an object or one bare value), both or neither."""
    if valid:
        if all(field.shape[:1] == (-1,) for field in fields.values()) and draw(st.booleans()):
            count = draw(st.integers(1, 3))
            rows = [{name: draw(shaped(field.shape[1:], field.kind, clean=True)) for name, field in fields.items()}
                    for _ in range(count)]
            if len(fields) == 1:
                name = next(iter(fields))
                return {"instances": [row[name] for row in rows]}
            return {"instances": rows}
        return {"inputs": draw(document(fields, valid=True))}
    if draw(one_in(20)):
        return draw(st.one_of(any_json, deep_nest()))
    doc: dict[str, Any] = {}
    form = draw(st.sampled_from(["instances"] * 4 + ["inputs"] * 4 + ["both", "neither"]))
    if form in ("instances", "both"):
        doc["instances"] = draw(st.one_of(instances(fields), instances(fields), any_json))
    if form in ("inputs", "both"):
        columns = st.fixed_dictionaries({}, optional={name: field_value(field) for name, field in fields.items()})
        bare = field_value(next(iter(fields.values())))
        doc["inputs"] = draw(st.one_of(columns, columns, bare, any_json))
    if draw(one_in(4)):
        doc["signature_name"] = draw(SIGNATURES)
    if draw(one_in(10)):
        doc.update(draw(st.dictionaries(texts, any_json, max_size=2)))
    return doc


feature_values = st.one_of(ints, floats, texts, b64_values, number_tokens,
                           st.lists(st.one_of(floats, ints), max_size=4), st.lists(texts, max_size=3),
                           st.lists(st.one_of(ints, texts, floats, b64_values), max_size=3), any_json, deep_nest())


@st.composite
def examples_document(draw: st.DrawFn, valid: bool = False) -> Any:
    """A /v1 :classify or :regress body: `valid` tf.Example JSON, or with features of any kind."""
    if valid:
        values = st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=3)
        valid_doc: dict[str, Any] = {
            "examples": draw(st.lists(st.fixed_dictionaries({"x": values}), min_size=1, max_size=3))}
        if draw(st.booleans()):
            valid_doc["context"] = {"bias": draw(values)}
        return valid_doc
    if draw(one_in(20)):
        return draw(st.one_of(any_json, deep_nest()))
    features = st.dictionaries(st.one_of(st.sampled_from(["x", "bias"]), texts), feature_values, max_size=3)
    doc: dict[str, Any] = {}
    if not draw(one_in(10)):
        doc["examples"] = draw(st.one_of(st.lists(features, max_size=4), any_json))
    if draw(one_in(3)):
        doc["context"] = draw(st.one_of(features, any_json))
    if draw(one_in(4)):
        doc["signature_name"] = draw(SIGNATURES)
    return doc


# ---------------------------------------------------------------- bodies and headers

Headers = list[tuple[str, bytes]]

# What h11/httptools accept in a header value: visible ASCII, obs-text, inner spaces and tabs.
header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=30).map(lambda text: text.encode("latin-1"))


@st.composite
def encoded_body(draw: st.DrawFn, body: bytes) -> tuple[bytes, Headers]:
    """`body` as it is mostly; else truncated, mutated, random bytes, or gzip (valid or not)."""
    form = draw(st.sampled_from(["plain"] * 15 + [
        "nan-member", "nan-member", "truncated", "mutated", "invalid-utf8", "random", "empty", "gzip", "gzip",
        "gzip-truncated", "gzip-random", "gzip-unsaid", "other-encoding"]))
    if form == "plain":
        return body, []
    if form == "nan-member" and body.endswith(b"}") and len(body) > 2:
        return body[:-1] + b',"~":NaN}', []  # sends the whole body to the standard library's parser
    if form == "truncated":
        return body[:draw(st.integers(0, max(len(body) - 1, 0)))], []
    if form == "mutated" and body:
        at = draw(st.integers(0, len(body) - 1))
        return body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1:], []
    if form == "invalid-utf8":
        at = draw(st.integers(0, len(body)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]))
        return body[:at] + bad + body[at:], []
    if form == "random":
        return draw(st.binary(max_size=200)), []
    if form == "empty":
        return b"", []
    encoding = draw(st.sampled_from([b"gzip", b"GZIP", b" gzip "]))
    packed = gzip.compress(body)
    if form == "gzip":
        return packed, [("Content-Encoding", encoding)]
    if form == "gzip-truncated":
        return packed[:draw(st.integers(0, len(packed) - 1))], [("Content-Encoding", encoding)]
    if form == "gzip-random":
        return draw(st.binary(max_size=100)), [("Content-Encoding", encoding)]
    if form == "gzip-unsaid":
        return packed, []
    other = draw(st.one_of(st.sampled_from([b"identity", b"br", b"deflate", b"gzip, identity", b"compress", b"*"]),
                           header_text))
    return body, [("Content-Encoding", other)]


JSON_TYPES = [b"application/json", b"APPLICATION/JSON; charset=utf-8", b"text/json", b"application/vnd.api+json",
              b"application/json;charset=latin-1"]
OTHER_TYPES = [b"text/plain", b"application/x-www-form-urlencoded", b"application/octet-stream",
               b"multipart/form-data; boundary=x", b"application/xml", b"", b"*/*", b";", b"application/",
               b"application/octet-stream; x=1"]
content_types = st.one_of(st.none(), st.none(), st.just(b"application/json"), st.just(b"application/json"),
                          st.sampled_from(JSON_TYPES), st.sampled_from(JSON_TYPES), st.sampled_from(OTHER_TYPES),
                          header_text)

TIMEOUTS = [b"-1", b"0", b"-0", b"1e400", b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"abc", b"", b"1_000",
            b"0x10", b"1e30", b"9" * 40, b"5000", b"30000", b"2000.5", b"-1e-9", b"+5000", b"5,000"]


def deadline_of(value: bytes | None) -> float | None:
    """The deadline (s) the gateway takes from an `x-request-timeout` value, None when refused."""
    if value is None:
        return None
    try:
        millis = float(value.decode("latin-1"))
    except ValueError:
        return None
    return millis / 1000 if millis > 0 and not math.isinf(millis) else None


def _long_enough(value: bytes) -> bool:
    # A valid deadline shorter than 2 s may expire (504) on a loaded machine: a test of its own.
    deadline = deadline_of(value)
    return deadline is None or deadline >= 2


timeouts = st.one_of(st.sampled_from(TIMEOUTS), header_text,
                     st.floats(allow_nan=True).map(lambda value: repr(value).encode())).filter(_long_enough)
REQUEST_IDS = [b"abc", b"a" * 128, b"a" * 129, b"with space", b"\xe9", b"../../etc", b"a:b.c-d_e", b"-"]
ACCEPTS = [b"application/json", b"*/*", b"text/html", b"application/octet-stream", b"application/xml;q=0.9",
           b"image/png"]
ENCODINGS = [b"gzip", b"gzip, deflate, br", b"identity", b"br", b"*", b"gzip;q=0"]


benign_headers = st.lists(st.one_of(
    st.tuples(st.just("x-request-timeout"), st.sampled_from([b"5000", b"30000", b"2500.5"])),
    st.tuples(st.just("x-request-id"), st.sampled_from(REQUEST_IDS)),
    st.tuples(st.just("Accept"), st.sampled_from(ACCEPTS)),
    st.tuples(st.just("Accept-Encoding"), st.sampled_from(ENCODINGS)),
), max_size=2)


@st.composite
def common_headers(draw: st.DrawFn, types: st.SearchStrategy[bytes | None] = content_types,
                   benign: bool | None = None) -> Headers:
    """Content-Type and the optional headers a client may send, each often absent: when
    `benign` (half the time if None) well-formed ones only, so that the body reaches the model."""
    headers: Headers = []
    if benign is None:
        benign = draw(st.booleans())
    if benign:
        if types is content_types:
            types = st.sampled_from([None, b"application/json", *JSON_TYPES])
        content_type = draw(types)
        return [*([("Content-Type", content_type)] if content_type else []), *draw(benign_headers)]

    def maybe(name: str, values: st.SearchStrategy[bytes]) -> None:
        if draw(one_in(4)):
            headers.append((name, draw(values)))

    content_type = draw(types)
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    maybe("x-request-timeout", timeouts)
    maybe("x-request-id", st.one_of(st.sampled_from(REQUEST_IDS), header_text))
    maybe("Accept", st.one_of(st.sampled_from(ACCEPTS), header_text))
    maybe("Accept-Encoding", st.one_of(st.sampled_from(ENCODINGS), header_text))
    maybe("x-tensor-dtype", st.one_of(st.sampled_from([b"int32", b"float32", b"string"]), header_text))
    maybe("x-tensor-shape", st.one_of(st.sampled_from([b"1", b"", b"2,3", b"-1", b"a"]), shape_header))
    maybe("x-tensor-name", header_text)
    return headers


# ---------------------------------------------------------------- the binary path

DTYPE_NAMES = ["int32", "DT_INT32", "float32", "DT_FLOAT", "float64", "int64", "int8", "uint8", "float16", "bool",
               "string", "bytes", "complex64", "DT_STRING", "INT32", "Int32", "int", "float", ""]
ITEMSIZES = {"int32": 4, "DT_INT32": 4, "float32": 4, "DT_FLOAT": 4, "float64": 8, "int64": 8, "int8": 1,
             "uint8": 1, "float16": 2, "bool": 1, "complex64": 8}


def shape_sizes() -> st.SearchStrategy[list[int]]:
    """Sizes for x-tensor-shape: small ones mostly, and the 32- and 64-bit edges and beyond (a
    product may wrap in 64 bits to a small size)."""
    size = st.one_of(st.integers(0, 6), st.integers(-3, 2**20),
                     st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64, 2**64 + 1, 10**20]))
    return st.lists(size, max_size=4)


@st.composite
def _shape_header(draw: st.DrawFn) -> bytes:
    sizes = draw(shape_sizes())
    form = draw(st.sampled_from(["plain", "plain", "plain", "spaces", "junk", "text"]))
    if form == "plain":
        return ",".join(map(str, sizes)).encode()
    if form == "spaces":
        return ", ".join(f" {size} " for size in sizes).encode().strip()
    if form == "junk":
        return draw(st.sampled_from([b",", b",,", b"1,,2", b"1.5", b"1e3", b"+3", b"0x10", b"1_0", b"[2]", b"(2,)",
                                     b"2;3", b"-0", b"\xb2", b"nan", b"1,a"]))
    return draw(header_text)


shape_header = _shape_header()


@st.composite
def valid_binary_request(draw: st.DrawFn, field: Field, name: str) -> tuple[bytes, Headers]:
    """A raw tensor that fits `field`, each x-tensor-* header present or left to its default."""
    dtype = "int32" if field.kind == INT else "float32"
    sizes = [draw(st.integers(1, 4)) if size < 0 else size for size in field.shape]
    headers: Headers = []
    if draw(st.booleans()):
        headers.append(("x-tensor-dtype", dtype.encode()))
    if len(sizes) != 1 or draw(st.booleans()):
        headers.append(("x-tensor-shape", ",".join(map(str, sizes)).encode()))
    if draw(st.booleans()):
        headers.append(("x-tensor-name", name.encode()))
    count = math.prod(sizes)
    if dtype == "float32":  # finite values: the answer is the model's arithmetic on them
        data = draw(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-(2.0**100),
                                       max_value=2.0**100), min_size=count, max_size=count))
        return struct.pack(f"<{count}f", *data), headers
    return draw(st.binary(min_size=4 * count, max_size=4 * count)), headers


@st.composite
def binary_request(draw: st.DrawFn) -> tuple[bytes, Headers]:
    """A raw tensor: its body, and the x-tensor-* headers (sizes consistent with the body mostly)."""
    headers: Headers = []
    dtype = draw(st.one_of(st.none(), st.sampled_from(DTYPE_NAMES), st.sampled_from(DTYPE_NAMES),
                           header_text.map(lambda b: b.decode("latin-1"))))
    if dtype is not None:
        headers.append(("x-tensor-dtype", dtype.encode("latin-1")))
    shape: bytes | None = draw(st.one_of(st.none(), shape_header))
    if shape is not None:
        headers.append(("x-tensor-shape", shape))
    if draw(one_in(3)):
        headers.append(("x-tensor-name", draw(st.one_of(st.sampled_from([b"number", b"features", b"unit",
                                                                         b"input_1", b"text"]), header_text))))
    itemsize = ITEMSIZES.get(dtype or "int32", 4)
    count = 0
    if shape is not None:
        try:
            sizes = [int(part) for part in shape.decode("latin-1").split(",") if part.strip()]
            count = math.prod(sizes) if all(s >= 0 for s in sizes) else 0
        except ValueError:
            count = 0
    if not draw(one_in(4)) and count * itemsize <= 4096:
        body = draw(st.binary(min_size=count * itemsize, max_size=count * itemsize))
    else:
        body = draw(st.binary(max_size=64))
    return body, headers
