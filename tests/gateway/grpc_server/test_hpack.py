"""HPACK (RFC 7541): every example of Appendix C, the Huffman code of Appendix B, every decoding
error, the header list size limit, and round trips against the `hpack` package (an independent
implementation that uses Huffman coding and its dynamic table)."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import tracemalloc
from fractions import Fraction

import hpack
import hpack.huffman
import hpack.huffman_constants
import pytest

from gateway.grpc_server import hpack as hpack_module
from gateway.grpc_server import huffman
from gateway.grpc_server.hpack import (
    MAX_INTEGER,
    STATIC_TABLE,
    Decoder,
    HeaderListTooLarge,
    HpackError,
    decode_integer,
    encode,
    encode_integer,
)
from gateway.grpc_server.huffman import CODES, EOS, HuffmanDecodeError, huffman_decode, huffman_encode

Fields = list[tuple[str, str]]

# --- Appendix C.1: integers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "prefix_bits", "wire"),
    [
        (10, 5, "0a"),  # C.1.1
        (1337, 5, "1f9a0a"),  # C.1.2
        (42, 8, "2a"),  # C.1.3
    ],
)
def test_c1_integers(value: int, prefix_bits: int, wire: str) -> None:
    data = bytes.fromhex(wire)
    assert encode_integer(value, prefix_bits) == data
    assert decode_integer(data, 0, prefix_bits) == (value, len(data))


def test_integer_prefix_bits_above_the_prefix_are_ignored() -> None:
    assert decode_integer(bytes.fromhex("ea"), 0, 5) == (10, 1)  # 111 01010: flags, then 10
    assert encode_integer(10, 5, 0xE0) == b"\xea"


def test_integers_round_trip_at_every_prefix() -> None:
    for prefix_bits in range(1, 9):
        edges = (2**prefix_bits - 2, 2**prefix_bits - 1, 2**prefix_bits)
        for value in (0, 1, *edges, 127, 128, 16383, 16384, MAX_INTEGER):
            wire = encode_integer(value, prefix_bits)
            assert decode_integer(b"\x00" + wire, 1, prefix_bits) == (value, len(wire) + 1)


# --- Appendix C.2: each representation --------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "fields", "table", "table_size"),
    [
        # C.2.1 literal with indexing, new name
        (
            "400a637573746f6d2d6b65790d637573746f6d2d686561646572",
            [("custom-key", "custom-header")],
            [("custom-key", "custom-header")],
            55,
        ),
        # C.2.2 literal without indexing, indexed name
        ("040c2f73616d706c652f70617468", [(":path", "/sample/path")], [], 0),
        # C.2.3 literal never indexed, new name
        ("100870617373776f726406736563726574", [("password", "secret")], [], 0),
        # C.2.4 indexed field
        ("82", [(":method", "GET")], [], 0),
    ],
)
def test_c2_representations(wire: str, fields: Fields, table: Fields, table_size: int) -> None:
    decoder = Decoder()
    assert decoder.decode(bytes.fromhex(wire)) == fields
    assert decoder.table == table
    assert decoder.table_size == table_size


# --- Appendix C.3 to C.6: sequences of blocks on one decoder ----------------------------------

_REQUEST_1 = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
_REQUEST_2 = [*_REQUEST_1, ("cache-control", "no-cache")]
_REQUEST_3 = [
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
]
_REQUEST_TABLES = [
    ([(":authority", "www.example.com")], 57),
    ([("cache-control", "no-cache"), (":authority", "www.example.com")], 110),
    ([("custom-key", "custom-value"), ("cache-control", "no-cache"), (":authority", "www.example.com")], 164),
]
_COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
_RESPONSE_1 = [
    (":status", "302"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
    ("location", "https://www.example.com"),
]
_RESPONSE_2 = [(":status", "307"), *_RESPONSE_1[1:]]
_RESPONSE_3 = [
    (":status", "200"),
    ("cache-control", "private"),
    ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
    ("location", "https://www.example.com"),
    ("content-encoding", "gzip"),
    ("set-cookie", _COOKIE),
]
_RESPONSE_TABLES = [
    (
        [
            ("location", "https://www.example.com"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("cache-control", "private"),
            (":status", "302"),
        ],
        222,
    ),
    (
        [
            (":status", "307"),
            ("location", "https://www.example.com"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("cache-control", "private"),
        ],
        222,
    ),
    (
        [("set-cookie", _COOKIE), ("content-encoding", "gzip"), ("date", "Mon, 21 Oct 2013 20:13:22 GMT")],
        215,
    ),
]

_SEQUENCES = {
    "C.3 requests without Huffman": (
        4096,
        [
            "828684410f7777772e6578616d706c652e636f6d",
            "828684be58086e6f2d6361636865",
            "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
        ],
        [_REQUEST_1, _REQUEST_2, _REQUEST_3],
        _REQUEST_TABLES,
    ),
    "C.4 requests with Huffman": (
        4096,
        [
            "828684418cf1e3c2e5f23a6ba0ab90f4ff",
            "828684be5886a8eb10649cbf",
            "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
        ],
        [_REQUEST_1, _REQUEST_2, _REQUEST_3],
        _REQUEST_TABLES,
    ),
    "C.5 responses without Huffman": (
        256,
        [
            "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d54"
            "6e1768747470733a2f2f7777772e6578616d706c652e636f6d",
            "4803333037c1c0bf",
            "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f"
            "3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076"
            "657273696f6e3d31",
        ],
        [_RESPONSE_1, _RESPONSE_2, _RESPONSE_3],
        _RESPONSE_TABLES,
    ),
    "C.6 responses with Huffman": (
        256,
        [
            "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f"
            "0b97c8e9ae82ae43d3",
            "4883640effc1c0bf",
            "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335df"
            "dfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
        ],
        [_RESPONSE_1, _RESPONSE_2, _RESPONSE_3],
        _RESPONSE_TABLES,
    ),
}


@pytest.mark.parametrize("name", list(_SEQUENCES))
def test_appendix_c_sequences_on_one_decoder(name: str) -> None:
    max_table_size, blocks, header_lists, tables = _SEQUENCES[name]
    decoder = Decoder(max_table_size)
    for wire, fields, (table, table_size) in zip(blocks, header_lists, tables, strict=True):
        assert decoder.decode(bytes.fromhex(wire)) == fields
        assert decoder.table == table
        assert decoder.table_size == table_size


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_blocks_in_other_buffers(kind: type[bytearray] | type[memoryview]) -> None:
    wire = bytes.fromhex(_SEQUENCES["C.4 requests with Huffman"][1][0])
    assert Decoder().decode(kind(wire)) == _REQUEST_1


# --- Appendix B: the Huffman code -------------------------------------------------------------


def test_huffman_code_is_a_complete_prefix_code() -> None:
    assert len(CODES) == 257
    assert CODES[EOS] == (2**30 - 1, 30)
    assert all(5 <= length <= 30 and 0 <= code < 2**length for code, length in CODES)
    # Kraft sum exactly 1: no unused leaf; no code a prefix of another (checked on sorted bit strings).
    assert sum(Fraction(1, 2**length) for _, length in CODES) == 1
    words = sorted(format(code, f"0{length}b") for code, length in CODES)
    assert all(not b.startswith(a) for a, b in itertools.pairwise(words))


def test_huffman_code_is_the_one_of_another_implementation() -> None:
    theirs = zip(hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH, strict=True)
    assert list(CODES) == list(theirs)


def test_huffman_round_trip_of_every_octet() -> None:
    for octet in range(256):
        assert huffman_decode(huffman_encode(bytes((octet,)))) == chr(octet)
    every = bytes(range(256))
    assert huffman_decode(huffman_encode(every)) == every.decode("latin-1")
    assert huffman_decode(huffman_encode(every[::-1] * 3)) == (every[::-1] * 3).decode("latin-1")
    assert huffman_encode(b"") == b""
    assert huffman_decode(b"") == ""


def test_huffman_encoding_is_the_one_of_another_implementation() -> None:
    theirs = hpack.huffman.HuffmanEncoder(
        hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH
    )
    rng = random.Random(5)
    for length in range(200):
        data = rng.randbytes(length)
        assert huffman_encode(data) == theirs.encode(data)


def test_huffman_encoding_matches_the_rfc() -> None:
    assert huffman_encode(b"www.example.com") == bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")  # C.4.1
    assert huffman_encode(b"custom-key") == bytes.fromhex("25a849e95ba97d7f")  # C.4.3


@pytest.mark.parametrize(
    "wire",
    [
        "ffffffff",  # EOS (30 ones) then 2 bits of padding
        "1fff",  # 'a' (00011) then 11 one bits: padding longer than 7 bits
        "18",  # 'a' then 000: padding that is not a prefix of EOS
        "1e",  # 'a' then 110
        "fe",  # 7 ones then a 0: neither a code nor padding
    ],
)
def test_huffman_bad_strings(wire: str) -> None:
    with pytest.raises(HuffmanDecodeError):
        huffman_decode(bytes.fromhex(wire))


def test_huffman_padding_of_up_to_7_ones() -> None:
    assert huffman_decode(bytes.fromhex("1f")) == "a"  # 00011 + 111
    assert huffman_encode(b"0" * 8) == b"\x00" * 5  # 8 * 5 bits: no padding at all
    assert huffman_decode(b"\x00" * 5) == "0" * 8


def test_huffman_cache_is_bounded() -> None:
    strings = [huffman_encode(f"value-{n}".encode()) for n in range(3000)]
    for n, data in enumerate(strings):
        assert huffman_decode(data) == f"value-{n}"
        assert len(huffman._cache) <= 1024
    assert huffman_decode(strings[-1]) == "value-2999"  # a hit gives the same string


# --- decoding errors --------------------------------------------------------------------------


def _literal(name: str, value: str) -> bytes:
    return b"\x00" + encode_integer(len(name), 7) + name.encode() + encode_integer(len(value), 7) + value.encode()


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x80", "index 0"),
        (b"\xbe", "index 62 past"),  # an empty dynamic table
        (encode_integer(70000, 7, 0x80), "index 70000 past"),
        (b"\x7e\x01a", "name index 62 past"),  # literal with indexing, name from an absent entry
        (b"\x0f\x30\x01a", "name index 63 past"),  # literal without indexing, 4-bit prefix
        (b"\x1f\x30\x01a", "name index 63 past"),  # never indexed
        (b"\x00", "truncated"),  # a new name missing
        (b"\x04", "truncated"),  # a value missing
        (b"\x40\x01a", "truncated"),  # a value missing after the name
        (b"\x04\x05ab", "past the end"),
        (b"\x00\x85\x1f", "past the end"),  # a Huffman string longer than the block
        (b"\xff", "integer truncated"),
        (b"\xff\x80", "integer truncated"),
        (b"\xff\x80\x80\x80\x80\x80\x00", "too many octets"),
        (encode_integer(2**32, 7, 0x80), "over"),
        (b"\x04" + encode_integer(2**32 + 5, 7), "over"),  # a string length
        (b"\x82\x20", "size update after a field"),
        (b"\x82\x3f\xe1\x1f", "size update after a field"),
        (encode_integer(4097, 5, 0x20), "size update to 4097, over 4096"),
        (b"\x04\x84\xff\xff\xff\xff", "EOS"),  # value: a Huffman string holding EOS
        (b"\x04\x82\x1f\xff", "padding"),
        (b"\x04\x81\x18", "padding"),
    ],
)
def test_decoding_errors(wire: bytes, message: str) -> None:
    with pytest.raises(HpackError, match=message):
        Decoder().decode(wire)


def test_size_updates_at_the_start_of_a_block() -> None:
    decoder = Decoder()
    decoder.decode(_literal_indexed("a", "b" * 100) + _literal_indexed("c", "d"))
    assert decoder.table == [("c", "d"), ("a", "b" * 100)]
    # Two updates (down to 0 then up to 64), as RFC 7541 section 4.2 allows, then a field.
    assert decoder.decode(b"\x20" + encode_integer(64, 5, 0x20) + b"\x82") == [(":method", "GET")]
    assert decoder.table == []
    assert decoder.table_size == 0
    assert decoder.table_capacity == 64
    assert decoder.decode(encode_integer(4096, 5, 0x20)) == []  # a block of a size update alone
    assert decoder.table_capacity == 4096


def _literal_indexed(name: str, value: str) -> bytes:
    return b"\x40" + encode_integer(len(name), 7) + name.encode() + encode_integer(len(value), 7) + value.encode()


def test_eviction_and_an_entry_larger_than_the_table() -> None:
    decoder = Decoder(max_table_size=100)
    decoder.decode(_literal_indexed("aa", "x" * 30) + _literal_indexed("bb", "y" * 30))  # 64 + 64 > 100
    assert decoder.table == [("bb", "y" * 30)]
    assert decoder.table_size == 64
    # A new entry may take its name from the entry its insertion evicts (RFC 7541 section 4.4).
    assert decoder.decode(b"\x7e\x02zz") == [("bb", "zz")]
    assert decoder.table == [("bb", "zz"), ("bb", "y" * 30)]
    # Larger than the whole table: the table is emptied and the entry is not added, no error.
    assert decoder.decode(_literal_indexed("big", "v" * 100)) == [("big", "v" * 100)]
    assert decoder.table == []
    assert decoder.table_size == 0


def test_never_indexed_and_without_indexing_leave_the_table_alone() -> None:
    decoder = Decoder()
    assert decoder.decode(_literal("a", "1") + b"\x10\x01b\x012" + b"\x1f\x08\x013") == [
        ("a", "1"),
        ("b", "2"),
        ("authorization", "3"),  # never indexed with static name 23
    ]
    assert decoder.table == []


def test_every_octet_round_trips_as_latin1() -> None:
    raw = bytes(range(256))
    wire = b"\x00" + encode_integer(256, 7) + raw + encode_integer(256, 7) + raw
    wire += b"\x04\x80"  # an empty Huffman string
    assert Decoder().decode(wire) == [(raw.decode("latin-1"), raw.decode("latin-1")), (":path", "")]


# --- header list size limit -------------------------------------------------------------------


def test_header_list_too_large_after_the_whole_block() -> None:
    decoder = Decoder()
    block = bytes.fromhex(_SEQUENCES["C.3 requests without Huffman"][1][0])
    size = sum(len(n) + len(v) + 32 for n, v in _REQUEST_1)
    assert decoder.decode(block, max_header_list_size=size) == _REQUEST_1
    decoder = Decoder()
    with pytest.raises(HeaderListTooLarge) as raised:
        decoder.decode(block, max_header_list_size=size - 1)
    assert raised.value.size == size
    assert raised.value.limit == size - 1
    assert isinstance(raised.value, HpackError)
    # The block's insertion happened: the next blocks, which refer to it, decode in step.
    assert decoder.table == [(":authority", "www.example.com")]
    following = _SEQUENCES["C.3 requests without Huffman"][1][1:]
    assert decoder.decode(bytes.fromhex(following[0])) == _REQUEST_2
    assert decoder.decode(bytes.fromhex(following[1])) == _REQUEST_3
    assert decoder.table_size == 164


def test_fields_past_the_header_list_limit_are_not_kept_while_the_block_decodes_on() -> None:
    block = bytes([0x82]) * 200_000  # :method: GET, 42 octets of list size each
    tracemalloc.start()
    try:
        with pytest.raises(HeaderListTooLarge) as raised:
            Decoder().decode(block, max_header_list_size=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert raised.value.size == 200_000 * 42
    # A list of 200 000 fields would take 1.6 MB; the bound leaves room for what other threads of
    # the test process allocate meanwhile (tracemalloc counts every thread).
    assert peak < 400_000
    # Indexing literals past the limit still enter the dynamic table.
    decoder = Decoder()
    literal = bytes([0x40, 3]) + b"x-a" + bytes([1]) + b"1"
    with pytest.raises(HeaderListTooLarge):
        decoder.decode(bytes([0x82]) * 30 + literal, max_header_list_size=100)
    assert decoder.table == [("x-a", "1")]


# --- the encoder ------------------------------------------------------------------------------


def test_encode_uncached_decodes_like_encode_and_leaves_the_line_cache_alone() -> None:
    fields = [("x-request-id", "0f8e4c1a-unique"), (":status", "200"), ("grpc-message", "v" * 600)]
    before = dict(hpack_module._lines)
    block = hpack_module.encode_uncached(fields)
    assert hpack_module._lines == before
    assert Decoder().decode(block) == fields
    assert [(str(name), str(value)) for name, value in hpack.Decoder().decode(block)] == fields


def test_encoder_lines() -> None:
    assert encode([(":status", "200")]) == b"\x88"
    assert encode([("content-type", "")]) == bytes((0x80 | 31,))  # the static entry with an empty value
    # Static name 31 (>= 15: a 4-bit prefix of 15, then 16), raw value.
    assert encode([("content-type", "application/grpc")]) == b"\x0f\x10\x10application/grpc"
    assert encode([(":status", "204")]) == b"\x89"
    assert encode([(":status", "201")]) == b"\x08\x03201"  # static name 8
    assert encode([("grpc-status", "0")]) == b"\x00\x0bgrpc-status\x010"
    assert encode([], table_size_update=0) == b"\x20"
    long_value = "x" * 200
    assert encode([("grpc-message", long_value)]) == b"\x00\x0cgrpc-message\x7f\x49" + long_value.encode()


def test_encoder_cache_is_bounded_and_keeps_the_static_lines() -> None:
    decoder = Decoder()
    for n in range(3000):
        fields = [("x-request-id", f"id-{n}"), (":status", "200")]
        assert decoder.decode(encode(fields)) == fields
        assert len(hpack_module._lines) <= 1024 + len(STATIC_TABLE)
    assert encode([(":status", "200"), ("x-request-id", "id-2999")]) == b"\x88\x00\x0cx-request-id\x07id-2999"
    assert encode([(":path", "/x" * 300)]) == b"\x04\x7f\xd9\x03" + b"/x" * 300  # long: encoded, not cached
    assert (":path", "/x" * 300) not in hpack_module._lines


def test_encoder_output_decodes_with_our_decoder() -> None:
    fields = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "0"), ("x", "\xe9\xff")]
    decoder = Decoder()
    assert decoder.decode(encode(fields)) == fields
    assert decoder.table == []


# --- round trips against the hpack package ----------------------------------------------------

_NAMES = [name for name, _ in STATIC_TABLE] + ["grpc-timeout", "grpc-status", "x-request-id", "custom-key", "te"]


def _random_fields(rng: random.Random) -> Fields:
    fields: Fields = []
    for _ in range(rng.randrange(0, 14)):
        roll = rng.random()
        if roll < 0.3:
            fields.append(rng.choice(STATIC_TABLE))
        elif roll < 0.6:
            fields.append((rng.choice(_NAMES), _random_text(rng)))
        else:
            name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz-0123456789") for _ in range(rng.randrange(1, 20)))
            fields.append((name, _random_text(rng)))
    return fields


def _random_text(rng: random.Random) -> str:
    length = rng.choice([0, 1, 3, 10, 40, 126, 127, 128, 300])
    if rng.random() < 0.5:
        return "".join(rng.choice("abcdefghij0123456789/.:;= ") for _ in range(length))
    return rng.randbytes(length).decode("latin-1")


def _as_bytes(fields: Fields) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in fields]


def test_blocks_of_the_hpack_package_decode_in_sequence() -> None:
    rng = random.Random(7541)
    encoder = hpack.Encoder()
    decoder = Decoder(max_table_size=4096)
    for _ in range(400):
        if rng.random() < 0.1:
            encoder.header_table_size = rng.choice([0, 64, 256, 1000, 4096])
        fields = _random_fields(rng)
        marked = [
            hpack.NeverIndexedHeaderTuple(name, value) if rng.random() < 0.1 else (name, value)
            for name, value in _as_bytes(fields)
        ]
        block = encoder.encode(marked, huffman=rng.random() < 0.8)
        size = sum(len(name) + len(value) + 32 for name, value in fields)
        if rng.random() < 0.2:  # over the limit: refused, yet the table follows the encoder's
            with pytest.raises(HeaderListTooLarge) as raised:
                decoder.decode(block, max_header_list_size=size - 1)
            assert raised.value.size == size
        else:
            assert decoder.decode(block, max_header_list_size=size) == fields
        entries = list(encoder.header_table.dynamic_entries)
        assert _as_bytes(decoder.table) == entries
        assert decoder.table_size == sum(len(name) + len(value) + 32 for name, value in entries)
        assert decoder.table_capacity == encoder.header_table.maxsize


def test_our_blocks_decode_with_the_hpack_package() -> None:
    rng = random.Random(9113)
    theirs = hpack.Decoder(max_header_list_size=2**20)
    for _ in range(400):
        fields = _random_fields(rng)
        assert [tuple(field) for field in theirs.decode(encode(fields), raw=True)] == _as_bytes(fields)
    assert len(theirs.header_table.dynamic_entries) == 0


def test_the_product_does_not_import_the_hpack_package() -> None:
    code = "import sys, gateway.grpc_server.hpack; print(sorted(m for m in sys.modules if m.split('.')[0] == 'hpack'))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


# --- a real client: the blocks grpcio 1.85 (grpc-core's chttp2) sent for three calls on one connection


def _grpc_core_fields(timeout: str, request_id: str) -> Fields:
    return [
        (":path", "/tensorflow.serving.PredictionService/Predict"),
        (":authority", "127.0.0.1:35149"),
        (":method", "POST"),
        (":scheme", "http"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-accept-encoding", "identity, deflate, gzip"),
        ("grpc-timeout", timeout),
        ("user-agent", "grpc-python/1.85.3 grpc-c/58.0.0 (linux; chttp2)"),
        ("authorization", "Bearer secret-key"),
        ("x-request-id", request_id),
    ]


def test_grpc_core_request_blocks() -> None:
    blocks = [
        bytes.fromhex(
            "40053a706174682d2f74656e736f72666c6f772e73657276696e672e50726564696374696f6e536572766963652f5072"
            "6564696374400a3a617574686f726974790f3132372e302e302e313a33353134398386400c636f6e74656e742d747970"
            "65106170706c69636174696f6e2f677270634002746508747261696c6572734014677270632d6163636570742d656e63"
            "6f64696e67176964656e746974792c206465666c6174652c20677a6970400c677270632d74696d656f7574023353400a"
            "757365722d6167656e7430677270632d707974686f6e2f312e38352e3320677270632d632f35382e302e3020286c696e"
            "75783b2063687474703229000d617574686f72697a6174696f6e11426561726572207365637265742d6b6579000c782d"
            "726571756573742d6964057265712d30"
        ),
        bytes.fromhex(
            "c4c38386c2c1c0400c677270632d74696d656f757405333031306dbf000d617574686f72697a6174696f6e1142656172"
            "6572207365637265742d6b6579000c782d726571756573742d6964057265712d31"
        ),
        bytes.fromhex(
            "c5c48386c3c2c1c0bf000d617574686f72697a6174696f6e11426561726572207365637265742d6b6579000c782d7265"
            "71756573742d6964057265712d32"
        ),
    ]
    decoder = Decoder()
    assert decoder.decode(blocks[0], 16384) == _grpc_core_fields("3S", "req-0")
    assert decoder.decode(blocks[1], 16384) == _grpc_core_fields("3010m", "req-1")
    assert decoder.decode(blocks[2], 16384) == _grpc_core_fields("3S", "req-2")
    # Indexed: the first call's fields but the static :method and :scheme, the never-indexed
    # authorization and the unindexed request id; then the second call's new grpc-timeout.
    assert decoder.table == [
        ("grpc-timeout", "3010m"),
        *reversed([field for field in _grpc_core_fields("3S", "") if field[0] not in _NOT_INDEXED]),
    ]


_NOT_INDEXED = {":method", ":scheme", "authorization", "x-request-id"}
