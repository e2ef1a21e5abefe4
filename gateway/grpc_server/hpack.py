"""HPACK (RFC 7541): the header block decoder of the in-loop gRPC server and a table-free encoder.

Names and values are `str` decoded as latin-1, so every octet round-trips (RFC 9113 leaves field
validation to the HTTP/2 layer, not to HPACK).

The decoder keeps the static table (Appendix A) and the dynamic table in one list, so an index is
one list lookup: `[placeholder, static 1..61, dynamic 62.. newest first]`.

The encoder never inserts into the peer's dynamic table, so it never needs the peer's table size:
a full static match is an indexed field (`:status: 200` is the octet 0x88), a static name match a
literal without indexing with that name's index, anything else a literal without indexing with a
new name; strings are raw (not Huffman-coded).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.grpc_server.huffman import HuffmanDecodeError, huffman_decode

__all__ = [
    "MAX_INTEGER",
    "STATIC_TABLE",
    "Decoder",
    "HeaderListTooLarge",
    "HpackError",
    "decode_integer",
    "encode",
    "encode_integer",
]

# RFC 7541 Appendix A; index i is STATIC_TABLE[i - 1].
STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""),  # 1
    (":method", "GET"),  # 2
    (":method", "POST"),  # 3
    (":path", "/"),  # 4
    (":path", "/index.html"),  # 5
    (":scheme", "http"),  # 6
    (":scheme", "https"),  # 7
    (":status", "200"),  # 8
    (":status", "204"),  # 9
    (":status", "206"),  # 10
    (":status", "304"),  # 11
    (":status", "400"),  # 12
    (":status", "404"),  # 13
    (":status", "500"),  # 14
    ("accept-charset", ""),  # 15
    ("accept-encoding", "gzip, deflate"),  # 16
    ("accept-language", ""),  # 17
    ("accept-ranges", ""),  # 18
    ("accept", ""),  # 19
    ("access-control-allow-origin", ""),  # 20
    ("age", ""),  # 21
    ("allow", ""),  # 22
    ("authorization", ""),  # 23
    ("cache-control", ""),  # 24
    ("content-disposition", ""),  # 25
    ("content-encoding", ""),  # 26
    ("content-language", ""),  # 27
    ("content-length", ""),  # 28
    ("content-location", ""),  # 29
    ("content-range", ""),  # 30
    ("content-type", ""),  # 31
    ("cookie", ""),  # 32
    ("date", ""),  # 33
    ("etag", ""),  # 34
    ("expect", ""),  # 35
    ("expires", ""),  # 36
    ("from", ""),  # 37
    ("host", ""),  # 38
    ("if-match", ""),  # 39
    ("if-modified-since", ""),  # 40
    ("if-none-match", ""),  # 41
    ("if-range", ""),  # 42
    ("if-unmodified-since", ""),  # 43
    ("last-modified", ""),  # 44
    ("link", ""),  # 45
    ("location", ""),  # 46
    ("max-forwards", ""),  # 47
    ("proxy-authenticate", ""),  # 48
    ("proxy-authorization", ""),  # 49
    ("range", ""),  # 50
    ("referer", ""),  # 51
    ("refresh", ""),  # 52
    ("retry-after", ""),  # 53
    ("server", ""),  # 54
    ("set-cookie", ""),  # 55
    ("strict-transport-security", ""),  # 56
    ("transfer-encoding", ""),  # 57
    ("user-agent", ""),  # 58
    ("vary", ""),  # 59
    ("via", ""),  # 60
    ("www-authenticate", ""),  # 61
)

MAX_INTEGER = 2**32 - 1  # larger integers (lengths, indices, sizes) are refused, not computed
ENTRY_OVERHEAD = 32  # RFC 7541 section 4.1, also RFC 9113's header list size
_DYNAMIC = len(STATIC_TABLE) + 1  # list position of dynamic index 62
_PAST_THE_END = "string literal past the end of the block"
_STATIC_COSTS = [0] + [len(name) + len(value) + ENTRY_OVERHEAD for name, value in STATIC_TABLE]


class HpackError(Exception):
    """A header block that cannot be decoded: the connection answers COMPRESSION_ERROR."""


class HeaderListTooLarge(HpackError):
    """The decoded header list is over the limit; raised after the whole block was decoded."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"header list of {size} octets, over the limit of {limit}")
        self.size = size
        self.limit = limit


def decode_integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """The integer (RFC 7541 section 5.1) whose prefix is in `data[pos]`, and the position after it."""
    mask = (1 << prefix_bits) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    end = len(data)
    shift = 0
    while True:
        if pos >= end:
            raise HpackError("integer truncated at the end of the block")
        octet = data[pos]
        pos += 1
        value += (octet & 0x7F) << shift
        if octet < 0x80:
            break
        shift += 7
        if shift > 28:  # five continuation octets already hold more than 32 bits
            raise HpackError("integer encoded in too many octets")
    if value > MAX_INTEGER:
        raise HpackError(f"integer {value} over {MAX_INTEGER}")
    return value, pos


def encode_integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """`value` as an HPACK integer with a `prefix_bits` prefix, the first octet's high bits from `first`."""
    mask = (1 << prefix_bits) - 1
    if value < mask:
        return bytes((first | value,))
    out = bytearray((first | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes, pos: int) -> tuple[str, int]:
    """The string literal (RFC 7541 section 5.2) at `pos`, and the position after it."""
    octet = data[pos]
    length = octet & 0x7F
    if length == 0x7F:
        length, pos = decode_integer(data, pos, 7)
    else:
        pos += 1
    stop = pos + length
    if stop > len(data):
        raise HpackError(_PAST_THE_END)
    if octet & 0x80:
        try:
            return huffman_decode(data[pos:stop]), stop
        except HuffmanDecodeError as exc:
            raise HpackError(str(exc)) from None
    return data[pos:stop].decode("latin-1"), stop


class Decoder:
    """The decoding side of one connection's HPACK context (one per connection, blocks in order)."""

    __slots__ = ("_capacity", "_costs", "_entries", "_size", "max_table_size")

    def __init__(self, max_table_size: int = 4096) -> None:
        # The SETTINGS_HEADER_TABLE_SIZE we advertise: the peer's size updates may not exceed it.
        self.max_table_size = max_table_size
        self._capacity = max_table_size
        self._size = 0
        self._entries: list[tuple[str, str]] = [("", ""), *STATIC_TABLE]
        # Each entry's len(name) + len(value) + 32, in step with _entries: the header list size and eviction.
        self._costs: list[int] = _STATIC_COSTS.copy()

    @property
    def table(self) -> list[tuple[str, str]]:
        """The dynamic table, newest entry (index 62) first."""
        return self._entries[_DYNAMIC:]

    @property
    def table_size(self) -> int:
        """The dynamic table's size: sum of len(name) + len(value) + 32 of its entries."""
        return self._size

    @property
    def table_capacity(self) -> int:
        """The dynamic table's maximum size, as the peer's last size update set it."""
        return self._capacity

    def decode(
        self, block: bytes | bytearray | memoryview, max_header_list_size: int | None = None
    ) -> list[tuple[str, str]]:
        """Decode one complete header block (HEADERS plus its CONTINUATIONs) into (name, value) pairs.

        Raises HpackError for a block that cannot be decoded and HeaderListTooLarge, once the
        block was decoded in full (the dynamic table stays in step), when the list's size
        (RFC 9113: sum of len(name) + len(value) + 32) is over `max_header_list_size`.
        """
        data = block if type(block) is bytes else bytes(block)
        entries = self._entries
        costs = self._costs
        total = 0
        limit = _NO_LIMIT if max_header_list_size is None else max_header_list_size
        headers: list[tuple[str, str]] = []
        append = headers.append
        end = len(data)
        pos = 0
        try:
            while pos < end and data[pos] & 0xE0 == 0x20:  # size updates come only before the fields
                size, pos = decode_integer(data, pos, 5)
                if size > self.max_table_size:
                    raise HpackError(f"dynamic table size update to {size}, over {self.max_table_size}")
                self._resize(size)
            while pos < end:
                octet = data[pos]
                if 0x80 < octet < 0xFF:  # a one-octet indexed field: nearly every field after the first call
                    try:
                        append(entries[octet - 0x80])
                    except IndexError:
                        raise HpackError(f"index {octet - 0x80} past the tables ({len(entries) - 1})") from None
                    total += costs[octet - 0x80]
                    pos += 1
                    if total > limit:  # decoded on for the dynamic table, no longer kept
                        append = _drop
                    continue
                if octet & 0x80:
                    if octet == 0x80:
                        raise HpackError("indexed field line with index 0")
                    index, pos = decode_integer(data, pos, 7)
                    try:
                        append(entries[index])
                    except IndexError:
                        raise HpackError(f"index {index} past the tables ({len(entries) - 1})") from None
                    total += costs[index]
                    if total > limit:
                        append = _drop
                    continue
                if octet & 0x40:  # literal with incremental indexing
                    indexing = True
                    index = octet & 0x3F
                    if index == 0x3F:
                        index, pos = decode_integer(data, pos, 6)
                    else:
                        pos += 1
                elif octet & 0x20:
                    raise HpackError("dynamic table size update after a field line")
                else:  # literal without indexing (0000) or never indexed (0001)
                    indexing = False
                    index = octet & 0x0F
                    if index == 0x0F:
                        index, pos = decode_integer(data, pos, 4)
                    else:
                        pos += 1
                if index:
                    try:
                        name = entries[index][0]
                    except IndexError:
                        raise HpackError(f"name index {index} past the tables ({len(entries) - 1})") from None
                else:
                    octet = data[pos]
                    if octet < 0x7F:  # raw and shorter than 127 octets, inlined: halves a literal's cost
                        stop = pos + 1 + octet
                        if stop > end:
                            raise HpackError(_PAST_THE_END)
                        name = data[pos + 1 : stop].decode("latin-1")
                        pos = stop
                    else:
                        name, pos = _string(data, pos)
                octet = data[pos]
                if octet < 0x7F:
                    stop = pos + 1 + octet
                    if stop > end:
                        raise HpackError(_PAST_THE_END)
                    value = data[pos + 1 : stop].decode("latin-1")
                    pos = stop
                else:
                    value, pos = _string(data, pos)
                field = (name, value)
                append(field)
                cost = len(name) + len(value) + ENTRY_OVERHEAD
                total += cost
                if total > limit:
                    append = _drop
                if indexing:
                    self._insert(field, cost)
        except IndexError:
            raise HpackError("header block truncated inside a field line") from None
        if max_header_list_size is not None and total > max_header_list_size:
            raise HeaderListTooLarge(total, max_header_list_size)
        return headers

    def _resize(self, capacity: int) -> None:
        self._capacity = capacity
        self._evict(capacity)

    def _evict(self, limit: int) -> None:
        while self._size > limit:
            self._entries.pop()
            self._size -= self._costs.pop()

    def _insert(self, field: tuple[str, str], cost: int) -> None:
        if cost > self._capacity:  # RFC 7541 section 4.4: it empties the table and is not added
            del self._entries[_DYNAMIC:]
            del self._costs[_DYNAMIC:]
            self._size = 0
            return
        self._evict(self._capacity - cost)
        self._entries.insert(_DYNAMIC, field)
        self._costs.insert(_DYNAMIC, cost)
        self._size += cost


_NO_LIMIT = 1 << 62


def _drop(field: tuple[str, str]) -> None:
    """Where a header list's fields go once it is over its limit (it is rejected as a whole)."""


def _static_lines() -> tuple[dict[tuple[str, str], bytes], dict[str, bytes]]:
    """Encoded lines by full static match (indexed field) and by name (literal prefix with name index)."""
    fields: dict[tuple[str, str], bytes] = {}
    names: dict[str, bytes] = {}
    for index, (name, value) in enumerate(STATIC_TABLE, 1):
        fields.setdefault((name, value), encode_integer(index, 7, 0x80))
        names.setdefault(name, encode_integer(index, 4))
    return fields, names


_STATIC_FIELDS, _STATIC_NAMES = _static_lines()

# Servers answer with the same fields on every call: encoded lines by field, the static ones always.
_lines: dict[tuple[str, str], bytes] = dict(_STATIC_FIELDS)
_LINES_ENTRIES = 1024 + len(_STATIC_FIELDS)
_LINES_MAX_OCTETS = 512  # longer values are rarely repeated and would make the cache large


def _raw_string(text: str) -> bytes:
    raw = text.encode("latin-1")
    if len(raw) < 0x7F:
        return bytes((len(raw),)) + raw
    return encode_integer(len(raw), 7) + raw


def _literal_line(name: str, value: str) -> bytes:
    """A literal field line without indexing: the static name's index if there is one, else the name."""
    prefix = _STATIC_NAMES.get(name)
    if prefix is None:
        return b"\x00" + _raw_string(name) + _raw_string(value)
    return prefix + _raw_string(value)


def encode_uncached(headers: Sequence[tuple[str, str]]) -> bytes:
    """`encode` for fields that seldom repeat (per-call metadata such as a request id): kept out
    of the line cache, which they would fill and empty of the lines that do repeat."""
    return b"".join([_literal_line(name, value) for name, value in headers])


def encode(headers: Sequence[tuple[str, str]], table_size_update: int | None = None) -> bytes:
    """Encode a header list without touching the dynamic table; names and values must be latin-1.

    `table_size_update` starts the block with a dynamic table size update (RFC 7541 section 4.2),
    for the first block after the peer lowered its SETTINGS_HEADER_TABLE_SIZE.
    """
    out = bytearray() if table_size_update is None else bytearray(encode_integer(table_size_update, 5, 0x20))
    lines = _lines
    for field in headers:
        line = lines.get(field)
        if line is None:
            line = _literal_line(*field)
            if len(line) <= _LINES_MAX_OCTETS:
                if len(lines) >= _LINES_ENTRIES:
                    lines.clear()
                    lines.update(_STATIC_FIELDS)
                lines[field] = line
        out += line
    return bytes(out)
