"""Backends: where models run. One small interface, one implementation per protocol."""

from gateway.backends.base import (
    Backend,
    BackendCall,
    EffectiveSpec,
    NDArray,
    NotDescribed,
    Prediction,
    Selector,
    UnavailableBackend,
)

__all__ = ["Backend", "BackendCall", "EffectiveSpec", "NDArray", "NotDescribed", "Prediction", "Selector",
           "UnavailableBackend"]
