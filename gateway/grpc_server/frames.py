"""HTTP/2 frames (RFC 9113 section 4 and 6): their types, flags, error codes and settings, and
the bytes of the frames the server writes."""

from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADER = struct.Struct(">HBBBL")  # 24-bit length as 16 + 8 bits, type, flags, stream id (+ reserved bit)
HEADER_SIZE = HEADER.size
STREAM_MASK = 0x7FFF_FFFF
MAX_WINDOW = 0x7FFF_FFFF
DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
LARGEST_MAX_FRAME = (1 << 24) - 1

# Frame types.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# Error codes.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB
# Settings.
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

_U32 = struct.Struct(">L")
_U32X2 = struct.Struct(">LL")
_SETTING = struct.Struct(">HL")


class ConnectionFault(Exception):
    """A connection error (RFC 9113 5.4.1): the connection answers GOAWAY with `code` and closes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream_id: int, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """One frame's bytes."""
    length = len(payload)
    return HEADER.pack(length >> 8, length & 0xFF, kind, flags, stream_id) + payload


def frame_header(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    """The 9 bytes before a payload of `length` written separately."""
    return HEADER.pack(length >> 8, length & 0xFF, kind, flags, stream_id)


def header_frames(stream_id: int, flags: int, block: bytes, max_frame: int) -> bytes:
    """A header block as HEADERS (with `flags`, END_HEADERS added) and, past the peer's
    `max_frame`, CONTINUATION frames (RFC 9113 6.10)."""
    if len(block) <= max_frame:
        return frame(HEADERS, flags | END_HEADERS, stream_id, block)
    pieces = [frame(HEADERS, flags & ~END_HEADERS, stream_id, block[:max_frame])]
    for start in range(max_frame, len(block), max_frame):
        last = start + max_frame >= len(block)
        pieces.append(frame(CONTINUATION, END_HEADERS if last else 0, stream_id, block[start:start + max_frame]))
    return b"".join(pieces)


def settings_frame(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(key, value) for key, value in values.items()))


def parse_settings(payload: bytes | bytearray | memoryview) -> list[tuple[int, int]]:
    if len(payload) % 6:
        raise ConnectionFault(FRAME_SIZE_ERROR, "a SETTINGS frame's length is not a multiple of 6")
    return [_SETTING.unpack_from(payload, offset) for offset in range(0, len(payload), 6)]


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _U32X2.pack(last_stream_id, code) + debug)


def read_u32(payload: bytes | bytearray | memoryview, offset: int = 0) -> int:
    value: int = _U32.unpack_from(payload, offset)[0]
    return value
