"""The one error of reading configuration: a manifest or setting that is invalid."""

from __future__ import annotations


class ConfigError(Exception):
    """A manifest or setting is invalid; `location` is `file:line` when known."""

    def __init__(self, message: str, location: str | None = None) -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.message = message
        self.location = location
