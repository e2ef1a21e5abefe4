"""gRPC's words on HTTP/2 (grpc's PROTOCOL-HTTP2.md): the status a call ends with, the
`grpc-timeout` header and the percent-encoded `grpc-message`."""

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


def code_number(code: grpc.StatusCode) -> int:
    number: int = code.value[0]
    return number
