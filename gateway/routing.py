"""Choosing which live variant of a stage serves a request: the one the caller forced
(`x-gateway-variant`), else the one its sticky key maps to (`x-gateway-route-key`), else one
drawn with probability weight/total. Pure: no I/O, no clock; the only state is per stage and
built once, when the registry binds the stage."""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gateway.errors import BadRequest

if TYPE_CHECKING:
    from gateway.dataplane import RequestContext
    from gateway.registry import Application, Stage, Variant

ROUTE_KEY_HEADER = "x-gateway-route-key"
VARIANT_HEADER = "x-gateway-variant"
MAX_ROUTE_KEY_BYTES = 1024  # a key is hashed once per live variant; longer ones are refused
_UNIT = 2.0**-53  # a 53-bit integer times this is a float in [0, 1) without rounding


class Router:
    """One stage's choice, precomputed: its live variants of positive weight with their
    cumulative weights (the weighted draw), a hash prefix per variant (the sticky choice), and
    every live variant by name (the override, which may force a variant of weight 0)."""

    __slots__ = ("_cumulative", "_only", "_prefixes", "_total", "_weighted", "by_name", "shadow_names")

    def __init__(self, live: Iterable[Variant], shadows: Iterable[Variant] = ()) -> None:
        live = tuple(live)
        self.by_name = {variant.name: variant for variant in live}
        self.shadow_names = frozenset(variant.name for variant in shadows)
        self._weighted = tuple(variant for variant in live if variant.weight > 0)
        if not self._weighted:
            raise ValueError("a stage needs a live variant of positive weight")  # the manifest checks it
        self._only = live[0] if len(live) == 1 else None
        self._cumulative: list[int] = []
        total = 0
        for variant in self._weighted:
            total += variant.weight
            self._cumulative.append(total)
        self._total = total
        # The name is hashed first, once: a request hashes only its key on a copy.
        self._prefixes = tuple((_hash_prefix(variant.name), variant.weight, variant) for variant in self._weighted)

    def choose(self, context: RequestContext, draw: Callable[[], float] = random.random) -> Variant:
        """The variant that serves `context`'s request; `draw` gives a float in [0, 1)."""
        if self._only is not None:  # one live variant: as cheap as no routing at all
            return self._only
        for name in context.variant_override:
            forced = self.by_name.get(name)
            if forced is not None:
                return forced
        if context.route_key is not None:
            return self.for_key(context.route_key)
        return self.weighted(draw())

    def weighted(self, u: float) -> Variant:
        """The variant whose share of [0, 1) holds `u`: probability weight/total."""
        if len(self._weighted) == 1:
            return self._weighted[0]
        index = bisect.bisect_right(self._cumulative, u * self._total)
        return self._weighted[min(index, len(self._weighted) - 1)]  # should float rounding reach total

    def for_key(self, key: str) -> Variant:
        """The variant `key` sticks to: weighted rendezvous hashing (the highest -weight/ln(u),
        u from a keyed hash of (variant name, key)), so that a weight's change moves only about
        that weight's share of keys, and only to or from that variant."""
        if len(self._weighted) == 1:
            return self._weighted[0]
        data = key_bytes(key)
        best, best_score = self._weighted[0], -1.0
        for prefix, weight, variant in self._prefixes:
            digest = prefix.copy()
            digest.update(data)
            # u in (0, 1): 53 bits of the hash, moved off 0 by half a step (ln(u) < 0, finite).
            u = ((int.from_bytes(digest.digest(), "big") >> 11) + 0.5) * _UNIT
            score = -weight / math.log(u)
            if score > best_score:
                best, best_score = variant, score
        return best


def _hash_prefix(name: str) -> hashlib.blake2b:
    """BLAKE2b (8 bytes) fed the variant's name and a separator: stable across processes,
    restarts and machines, unlike the salted `hash()`."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(name.encode("utf-8", "surrogatepass") + b"\x00")
    return digest


def choose_variant(stage: Stage, context: RequestContext) -> Variant:
    """The live variant of `stage` that serves this request (see `Router.choose`)."""
    return stage.router.choose(context)


def key_bytes(key: str) -> bytes:
    """A route key as the header's bytes: headers are decoded as latin-1 (gateway.body), so
    encoding back gives the bytes received (UTF-8 or not), each counted and hashed once; a key
    made elsewhere of other characters is taken as UTF-8."""
    try:
        return key.encode("latin-1")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogatepass")


def route_key(value: str) -> str:
    """`x-gateway-route-key`'s value, checked: non-empty and at most MAX_ROUTE_KEY_BYTES bytes
    as received."""
    size = len(key_bytes(value))
    if size == 0:
        raise BadRequest(f"{ROUTE_KEY_HEADER} must not be empty")
    if size > MAX_ROUTE_KEY_BYTES:
        raise BadRequest(f"{ROUTE_KEY_HEADER} is {size} bytes long; the limit is {MAX_ROUTE_KEY_BYTES}")
    return value


def variant_override(app: Application, value: str) -> tuple[str, ...]:
    """`x-gateway-variant`'s value (`name:version`, or `name@label` as the manifest declares the
    variant; comma-separated, one per stage at most) as the stages' routers name their variants
    (checked once per request: each stage's router only looks them up);
    BadRequest for a name that is no live variant of the application, a shadow's, or two names
    for one stage."""
    chosen: dict[int, str] = {}
    for part in value.split(","):
        name = part.strip()
        if not name:
            raise BadRequest(f"{VARIANT_HEADER} holds an empty name: {value!r}")
        stages = [stage for stage in app.stages if _live_name(stage, name) is not None]
        if not stages:
            raise BadRequest(_not_live(app, name))
        for stage in stages:
            canonical = _live_name(stage, name)
            assert canonical is not None
            if chosen.setdefault(stage.number, canonical) != canonical:
                raise BadRequest(f"{VARIANT_HEADER} names two variants of stage {stage.number} of application "
                                 f"{app.name}: {chosen[stage.number]} and {canonical}")
    return tuple(chosen.values())


def _live_name(stage: Stage, name: str) -> str | None:
    """The name `stage`'s router knows the live variant `name` by: its own, or the spelling its
    manifest declared it with (`toy` for a floating `toy:3`)."""
    if name in stage.router.by_name:
        return name
    for variant in stage.live:
        if variant.manifest is not None and str(variant.manifest.model) == name:
            return variant.name
    return None


def _not_live(app: Application, name: str) -> str:
    """Why `name` cannot be forced: a shadow's name, or no variant's (each stage's live ones)."""
    for stage in app.stages:
        if name in stage.router.shadow_names or any(
                variant.manifest is not None and str(variant.manifest.model) == name for variant in stage.shadows):
            return (f"{VARIANT_HEADER}: {name} is a shadow of stage {stage.number} of application {app.name}; "
                    f"a shadow never serves (live: {', '.join(stage.router.by_name)})")
    live = "; ".join(f"stage {stage.number}: {', '.join(stage.router.by_name)}" for stage in app.stages)
    return f"{VARIANT_HEADER}: {name} is no live variant of application {app.name} ({live})"
