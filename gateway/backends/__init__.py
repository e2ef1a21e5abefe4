"""Backends: where models run. One small interface, one implementation per protocol."""

from gateway.backends.base import (
    Backend,
    EffectiveSpec,
    NDArray,
    Prediction,
    Selector,
    UnavailableBackend,
)

__all__ = ["Backend", "EffectiveSpec", "NDArray", "Prediction", "Selector", "UnavailableBackend"]
