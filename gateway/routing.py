"""Choosing which variant of a stage serves a request."""

from __future__ import annotations

import random

from gateway.registry import Variant


def choose_variant(variants: tuple[Variant, ...]) -> Variant:
    """A variant drawn by weight (the only one when there is one)."""
    if len(variants) == 1:
        return variants[0]
    return random.choices(variants, weights=[v.weight for v in variants])[0]  # noqa: S311
