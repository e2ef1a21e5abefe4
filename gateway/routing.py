"""Choosing which variant of a stage serves a request."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from gateway.registry import Stage, Variant

if TYPE_CHECKING:
    from gateway.dataplane import RequestContext


def choose_variant(stage: Stage, context: RequestContext) -> Variant:
    """The live variant that serves this request: drawn by weight (the only one when there is one)."""
    variants = stage.live
    if len(variants) == 1:
        return variants[0]
    return random.choices(variants, weights=[v.weight for v in variants])[0]  # noqa: S311
