"""YAML documents whose mappings remember their lines, and typed field access whose errors
say file:line and field. The only YAML parsing in the project (model folders and the
gateway's manifests both read through it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml

from modelfolder.errors import ConfigError

T = TypeVar("T")


class LineMapping(dict[str, Any]):
    """A YAML mapping that remembers the line of itself and of each key."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineMapping:
    loader.flatten_mapping(node)
    result = LineMapping()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_documents(path: Path) -> Iterator[LineMapping]:
    """The YAML documents in a file, each a mapping with line numbers."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"not UTF-8 text: byte 0x{data[error.start]:02x} at offset {error.start} "
                          "(manifests are UTF-8 YAML)", f"{path}:{line}") from None
    yield from read_text_documents(text, path)


def read_text_documents(text: str, path: Path) -> Iterator[LineMapping]:
    """The YAML documents in `text`, read as if from the file `path` (the name its errors
    give: a manifest sent to the admin API is named as its client names it)."""
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"invalid YAML: {getattr(error, 'problem', error)}", where) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply to read", f"{path}:1") from None
    if all(document is None for document in documents):  # an empty or truncated file is a mistake
        raise ConfigError("the file is empty: a manifest needs at least a `kind`", f"{path}:1")
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, LineMapping):
            raise ConfigError("a manifest must be a mapping with a `kind`", f"{path}:1")
        yield document


class Fields:
    """Typed access to one mapping's fields with errors that say file:line and field."""

    def __init__(self, mapping: LineMapping, path: Path, prefix: str = "") -> None:
        self.mapping = mapping
        self.path = path
        self.prefix = prefix

    def where(self, key: str | None = None) -> str:
        line = self.mapping.key_lines.get(key, self.mapping.line) if key else self.mapping.line
        return f"{self.path}:{line}"

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.prefix}{key}: {message}", self.where(key))

    def required(self, key: str, kind: type[T]) -> T:
        if key not in self.mapping or self.mapping[key] is None:
            raise ConfigError(f"{self.prefix}{key}: required field is missing", self.where())
        return self._typed(key, kind)

    def optional(self, key: str, kind: type[T], default: T) -> T:
        if key not in self.mapping or self.mapping[key] is None:
            return default
        return self._typed(key, kind)

    def nested(self, key: str) -> Fields:
        value = self.required(key, dict)
        assert isinstance(value, LineMapping)
        return Fields(value, self.path, f"{self.prefix}{key}.")

    def _typed(self, key: str, kind: type[T]) -> T:
        value = self.mapping[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.error(key, f"expected {_kind_name(kind)}, got {_describe(value)}")
        return value

    def reject_unknown(self, known: set[str] | frozenset[str]) -> None:
        for key in self.mapping:
            if key not in known:
                accepted = ", ".join(sorted(known))
                raise self.error(str(key), f"unknown field (accepted: {accepted})")


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            dict: "a mapping", list: "a list"}.get(kind, kind.__name__)


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)
