"""gRPC's words on HTTP/2 (grpc's PROTOCOL-HTTP2.md): the status a call ends with, the
`grpc-timeout` header and the percent-encoded `grpc-message` (both ways: the server writes it,
the in-loop client, gateway.grpc_client, reads it)."""

from __future__ import annotations

import grpc

_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# grpc-message: printable ASCII but '%' as is, every other octet of its UTF-8 as %XX.
_PLAIN = frozenset(range(0x20, 0x7F)) - {ord("%")}


class RpcStatus(Exception):
    """Raised by a handler (or the server) to end a call with `code` and `message`."""

    def __init__(self, code: grpc.StatusCode, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_timeout(value: str) -> float | None:
    """Seconds of a `grpc-timeout` value (1 to 8 digits and a unit), None when it is not one."""
    digits, unit = value[:-1], value[-1:]
    if not 0 < len(digits) <= 8 or not digits.isascii() or not digits.isdigit() or unit not in _UNITS:
        return None
    return int(digits) * _UNITS[unit]


def encode_message(text: str) -> str:
    """`text` as a `grpc-message` value."""
    if text.isascii() and text.isprintable() and "%" not in text:
        return text
    return "".join(chr(octet) if octet in _PLAIN else f"%{octet:02X}" for octet in text.encode("utf-8"))


def decode_message(value: str) -> str:
    """A `grpc-message` value as text: %XX sequences are UTF-8 octets; a bad escape stays as is."""
    if "%" not in value:
        return value
    out = bytearray()
    position, size = 0, len(value)
    while position < size:
        char = value[position]
        if char == "%" and position + 2 < size + 1 and _is_hex(value[position + 1:position + 3]):
            out.append(int(value[position + 1:position + 3], 16))
            position += 3
            continue
        out += char.encode("utf-8")
        position += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair: str) -> bool:
    return len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair)


def code_number(code: grpc.StatusCode) -> int:
    number: int = code.value[0]
    return number
