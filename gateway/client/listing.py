"""What the listing routes answer, as small frozen dataclasses: `GET /gateway/applications`
(`Application`) and `GET /gateway/models` (`ModelVersion`). Each keeps the JSON it was read from
(`json`) for fields added later."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Tensor:
    """One input or output: `shape` () for a scalar, None for any, -1 for any size."""

    name: str
    dtype: str
    shape: tuple[int, ...] | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tensor:
        shape = data["shape"]
        return cls(str(data["name"]), str(data["dtype"]), None if shape is None else tuple(int(d) for d in shape))


def _tensors(items: list[Mapping[str, Any]] | None) -> tuple[Tensor, ...] | None:
    return None if items is None else tuple(Tensor.from_json(item) for item in items)


@dataclass(frozen=True, slots=True)
class Variant:
    """A model of a stage: live with its weight and share, or a shadow with its sample."""

    model: str
    shadow: bool
    weight: int | None
    share: float | None
    sample: float | None


@dataclass(frozen=True, slots=True)
class Stage:
    number: int
    variants: tuple[Variant, ...]


@dataclass(frozen=True, slots=True)
class Application:
    """An application's plan: `ready` is False while its contracts do not fit together
    (`problems` says why)."""

    name: str
    inputs: tuple[Tensor, ...] | None
    outputs: tuple[Tensor, ...] | None
    stages: tuple[Stage, ...]
    problems: tuple[str, ...]
    json: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def ready(self) -> bool:
        return not self.problems

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Application:
        stages = tuple(Stage(int(stage["stage"]), tuple(
            Variant(str(v["model"]), bool(v["shadow"]), v.get("weight"), v.get("share"), v.get("sample"))
            for v in stage["variants"])) for stage in data["stages"])
        return cls(str(data["name"]), _tensors(data["inputs"]), _tensors(data["outputs"]), stages,
                   tuple(str(p) for p in data.get("problems", ())), data)


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A model version: `kind` `local`, `tensorflow-serving` or `v2`; `state` `ready`, `not_ready` or
    `unavailable` (`error` says why); `contract` `declared`, `discovered` or `unknown` (inputs and
    outputs None)."""

    name: str
    version: int
    labels: Mapping[str, int]
    kind: str
    state: str
    contract: str
    signature_name: str | None
    inputs: tuple[Tensor, ...] | None
    outputs: tuple[Tensor, ...] | None
    applications: tuple[str, ...]
    error: str | None
    json: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelVersion:
        return cls(str(data["name"]), int(data["version"]), dict(data.get("labels") or {}), str(data["kind"]),
                   str(data["state"]), str(data["contract"]), data.get("signature_name"),
                   _tensors(data["inputs"]), _tensors(data["outputs"]),
                   tuple(str(a) for a in data.get("applications", ())), data.get("error"), data)
