"""Errors raised by the codecs; callers translate them at their boundary."""

from __future__ import annotations


class CodecError(ValueError):
    """A value does not fit its contract; `field` is the path to the offending element."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class UnknownDTypeError(CodecError):
    """A contract names a dtype that is not in the table."""
